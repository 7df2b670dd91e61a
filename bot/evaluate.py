"""`policybot eval`: run gold questions through the real adviser and measure retrieval, abstention and escalation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bot.answer import Answer


@dataclass(frozen=True)
class GoldItem:
    question: str
    clauses: tuple[str, ...]  # empty: out of scope, the adviser should abstain
    escalations: tuple[str, ...] = ()
    kind: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.clauses)


def load_gold(path: Path) -> list[GoldItem]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            items.append(
                GoldItem(
                    question=data["question"],
                    clauses=tuple(data.get("clauses", [])),
                    escalations=tuple(data.get("escalations", [])),
                    kind=data.get("kind", ""),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path.name}:{number}: not a gold item ({exc})") from exc
    return items


def same_answer(cited: str, expected: str) -> bool:
    """A clause and its parent or child are the same answer (2.2 and 2.2.4; 1(1) and 1(1)(a))."""
    cited, expected = cited.strip().lower(), expected.strip().lower()
    if cited == expected:
        return True
    for a, b in ((cited, expected), (expected, cited)):
        if b.startswith(a) and b[len(a)] in ".( ":
            return True
    return False


@dataclass
class Report:
    total: int = 0
    answerable: int = 0
    out_of_scope: int = 0
    hit1: int = 0
    hit3: int = 0
    reciprocal_rank: float = 0.0
    false_abstentions: int = 0
    oos_abstained: int = 0
    escalation_tp: int = 0
    escalation_fp: int = 0
    escalation_fn: int = 0
    misses: list[dict] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        def ratio(a: float, b: float) -> float:
            return round(a / b, 4) if b else 1.0

        return {
            "questions": self.total,
            "answerable": self.answerable,
            "out_of_scope": self.out_of_scope,
            "hit@1": ratio(self.hit1, self.answerable),
            "recall@3": ratio(self.hit3, self.answerable),
            "mrr@10": ratio(self.reciprocal_rank, self.answerable),
            "false_abstention": ratio(self.false_abstentions, self.answerable),
            "oos_abstention": ratio(self.oos_abstained, self.out_of_scope),
            "escalation_precision": ratio(self.escalation_tp, self.escalation_tp + self.escalation_fp),
            "escalation_recall": ratio(self.escalation_tp, self.escalation_tp + self.escalation_fn),
        }

    def to_text(self) -> str:
        lines = [f"{name:22} {value}" for name, value in self.metrics().items()]
        if self.misses:
            lines.append("")
            lines.append(f"misses ({len(self.misses)}):")
            for miss in self.misses:
                lines.append(
                    f"- {miss['question']!r}: expected {miss['expected'] or 'abstain'} "
                    f"{miss['expected_escalations'] or ''}, got {miss['got'] or 'abstain'} "
                    f"{miss['got_escalations'] or ''} [{miss['problem']}]"
                )
        return "\n".join(lines)


def _rank(cited: list[str], expected: Iterable[str]) -> int | None:
    expected = list(expected)
    for position, clause in enumerate(cited[:10], 1):
        if any(same_answer(clause, e) for e in expected):
            return position
    return None


def evaluate(
    items: list[GoldItem], ask: Callable[[str], Answer], ranked: Callable[[str], list[str]] | None = None
) -> Report:
    """Score `ask` on gold items. `ranked(question)` may supply a longer ranking for MRR@10 than the citations."""
    report = Report()
    for item in items:
        answer = ask(item.question)
        cited = [c.clause for c in answer.citations] if answer.answered else []
        ranking = ranked(item.question) if ranked is not None and answer.answered else cited
        got_roles = {e.role.lower() for e in answer.escalations if e.required}
        expected_roles = {r.lower() for r in item.escalations}
        report.total += 1
        problems = []
        if item.answerable:
            report.answerable += 1
            if not answer.answered:
                report.false_abstentions += 1
                problems.append("false abstention")
            position = _rank(ranking, item.clauses)
            if position == 1:
                report.hit1 += 1
            elif answer.answered:
                problems.append("wrong first citation")
            if position is not None and position <= 3:
                report.hit3 += 1
            if position is not None:
                report.reciprocal_rank += 1 / position
        else:
            report.out_of_scope += 1
            if answer.answered:
                problems.append("answered out-of-scope question")
            else:
                report.oos_abstained += 1
        report.escalation_tp += len(got_roles & expected_roles)
        report.escalation_fp += len(got_roles - expected_roles)
        report.escalation_fn += len(expected_roles - got_roles)
        if got_roles != expected_roles:
            problems.append("escalation")
        if problems:
            report.misses.append(
                {
                    "question": item.question,
                    "expected": list(item.clauses),
                    "got": cited,
                    "expected_escalations": sorted(expected_roles),
                    "got_escalations": sorted(got_roles),
                    "problem": ", ".join(problems),
                    "kind": item.kind,
                }
            )
    return report
