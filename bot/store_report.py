"""The policy owner's report built from the record store: unanswered questions grouped by similarity, unhelpful
answers, escalations by role and the most-cited clauses, with text, JSON and CSV renderings."""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, func, select, true
from sqlalchemy.engine import Connection

# A grouping function gets every unanswered question text (duplicates included)
# and returns one label per text; texts with equal labels form one group.
GroupFn = Callable[[Sequence[str]], Sequence[Hashable]]

JACCARD_THRESHOLD = 0.6
_PUNCT = re.compile(r"[^\w\s]+")


@dataclass(frozen=True)
class UnansweredGroup:
    """Similar unanswered questions: the most frequent wording, how many times any of them was asked, and every
    distinct wording."""

    text: str
    count: int
    variants: tuple[str, ...]


@dataclass(frozen=True)
class UnhelpfulItem:
    """One 'not helpful' click with the question it was about (empty if that log row was purged), its top clause and
    the comment."""

    question_id: str
    question: str
    top_clause: str | None
    comment: str
    at: datetime


@dataclass(frozen=True)
class EscalationStats:
    """Escalation tickets raised for one role: how many are open and resolved, and the median hours from raising to
    resolving."""

    role: str
    open: int
    resolved: int
    median_resolution_hours: float | None


@dataclass(frozen=True)
class ClauseCount:
    """How many logged answers had this clause as their top citation."""

    clause: str
    count: int


@dataclass(frozen=True)
class Report:
    """Everything the policy owner reviews for a period starting at `since` (None for all time), renderable as text,
    JSON or CSV."""

    since: datetime | None
    generated_at: datetime
    questions_total: int
    questions_answered: int
    unanswered: tuple[UnansweredGroup, ...]
    unhelpful: tuple[UnhelpfulItem, ...]
    escalations: tuple[EscalationStats, ...]
    top_clauses: tuple[ClauseCount, ...]

    def to_json(self) -> dict:
        return {
            "since": self.since.isoformat() if self.since else None,
            "generated_at": self.generated_at.isoformat(),
            "questions_total": self.questions_total,
            "questions_answered": self.questions_answered,
            "unanswered": [
                {"text": g.text, "count": g.count, "variants": list(g.variants)} for g in self.unanswered
            ],
            "unhelpful": [
                {
                    "question_id": u.question_id,
                    "question": u.question,
                    "top_clause": u.top_clause,
                    "comment": u.comment,
                    "at": u.at.isoformat(),
                }
                for u in self.unhelpful
            ],
            "escalations": [
                {
                    "role": e.role,
                    "open": e.open,
                    "resolved": e.resolved,
                    "median_resolution_hours": e.median_resolution_hours,
                }
                for e in self.escalations
            ],
            "top_clauses": [{"clause": c.clause, "count": c.count} for c in self.top_clauses],
        }

    def to_text(self) -> str:
        period = f"since {self.since:%Y-%m-%d %H:%M} UTC" if self.since else "all time"
        lines = [
            f"Policy adviser report ({period}), generated {self.generated_at:%Y-%m-%d %H:%M} UTC",
            f"Questions: {self.questions_total}, answered: {self.questions_answered}",
            "",
            "Unanswered questions:",
        ]
        lines += [f"  {g.count} x {g.text}" for g in self.unanswered] or ["  none"]
        lines += ["", "Answers marked not helpful:"]
        for u in self.unhelpful:
            clause = f" [clause {u.top_clause}]" if u.top_clause else ""
            comment = f" - comment: {u.comment}" if u.comment else ""
            lines.append(f"  {u.question or '(question no longer held)'}{clause}{comment}")
        if not self.unhelpful:
            lines.append("  none")
        lines += ["", "Escalations by role:"]
        for e in self.escalations:
            median = f"{e.median_resolution_hours:.1f} h" if e.median_resolution_hours is not None else "n/a"
            lines.append(f"  {e.role}: {e.open} open, {e.resolved} resolved, median resolution {median}")
        if not self.escalations:
            lines.append("  none")
        lines += ["", "Most-cited clauses:"]
        lines += [f"  {c.clause}: {c.count}" for c in self.top_clauses] or ["  none"]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        columns = ["section", "text", "count", "clause", "comment", "role", "open", "resolved", "median_hours"]
        rows: list[dict[str, object]] = []
        rows += [{"section": "unanswered", "text": g.text, "count": g.count} for g in self.unanswered]
        rows += [{"section": "unhelpful", "text": u.question, "clause": u.top_clause or "", "comment": u.comment}
                 for u in self.unhelpful]
        rows += [{"section": "escalations", "role": e.role, "open": e.open, "resolved": e.resolved,
                  "median_hours": "" if e.median_resolution_hours is None else f"{e.median_resolution_hours:.2f}"}
                 for e in self.escalations]
        rows += [{"section": "top_clauses", "clause": c.clause, "count": c.count} for c in self.top_clauses]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        return out.getvalue()


def _cell(value: object) -> object:
    """Neutralise spreadsheet formulas: question text is user input and the CSV will be opened in Excel."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def normalise(text: str) -> str:
    """Lower-case, drop punctuation and collapse whitespace, so trivially different wordings compare equal."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two token sets; two empty sets count as identical."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def group_similar(texts: Sequence[str], threshold: float = JACCARD_THRESHOLD) -> list[int]:
    """Label each text with a group number: equal after normalising, or token-set Jaccard >= threshold against a
    group's first member; greedy and deterministic (most frequent wordings seed groups first)."""
    norms = [normalise(t) for t in texts]
    counts = Counter(norms)
    # Seed groups from the most common wording so the representative is stable
    # whatever order the rows came back from the database in.
    order = sorted(counts, key=lambda n: (-counts[n], n))
    seeds: list[frozenset[str]] = []
    label_of: dict[str, int] = {}
    for norm in order:
        tokens = frozenset(norm.split())
        for i, seed in enumerate(seeds):
            if jaccard(tokens, seed) >= threshold:
                label_of[norm] = i
                break
        else:
            label_of[norm] = len(seeds)
            seeds.append(tokens)
    return [label_of[n] for n in norms]


def build_unanswered(texts: Sequence[str], group: GroupFn | None = None) -> tuple[UnansweredGroup, ...]:
    """Group unanswered question texts with `group` (default group_similar) and order groups by size, then wording."""
    labels = list((group or group_similar)(texts))
    if len(labels) != len(texts):
        raise ValueError("grouping function must return one label per text")
    members: dict[Hashable, list[str]] = {}
    for text, label in zip(texts, labels, strict=True):
        members.setdefault(label, []).append(text)
    groups = []
    for items in members.values():
        wordings = Counter(items)
        text = min(wordings, key=lambda w: (-wordings[w], w))
        groups.append(UnansweredGroup(text=text, count=len(items), variants=tuple(sorted(wordings))))
    return tuple(sorted(groups, key=lambda g: (-g.count, g.text)))


def build_escalations(rows: Sequence[tuple[str, str, datetime, datetime | None]]) -> tuple[EscalationStats, ...]:
    """Summarise (role, status, created_at, resolved_at) ticket rows per role, in role order."""
    by_role: dict[str, list[tuple[str, datetime, datetime | None]]] = {}
    for role, status, created, resolved in rows:
        by_role.setdefault(role, []).append((status, created, resolved))
    stats = []
    for role in sorted(by_role):
        tickets = by_role[role]
        hours = [(r - c).total_seconds() / 3600 for s, c, r in tickets if s == "resolved" and r is not None]
        stats.append(
            EscalationStats(
                role=role,
                open=sum(1 for s, _, _ in tickets if s == "open"),
                resolved=sum(1 for s, _, _ in tickets if s == "resolved"),
                median_resolution_hours=statistics.median(hours) if hours else None,
            )
        )
    return tuple(stats)


def collect_report(
    conn: Connection, questions: Table, feedback: Table, tickets: Table, *, since: datetime | None,
    now: datetime, group: GroupFn | None = None, top_clauses: int = 20,
) -> Report:
    """Query the store's tables (passed in, so this module does not import the store) and build a Report."""
    def after(col: Any) -> ColumnElement[bool]:
        return col >= since if since is not None else true()

    q, f, t = questions.c, feedback.c, tickets.c
    total, answered = conn.execute(
        select(func.count(), func.count().filter(q.answered.is_(True))).where(after(q.created_at))
    ).one()
    unanswered = conn.execute(
        select(q.question).where(q.answered.is_(False) & after(q.created_at)).order_by(q.created_at, q.id)
    ).scalars().all()
    unhelpful = conn.execute(
        select(f.question_id, q.question, q.top_clause, f.comment, f.updated_at)
        .select_from(feedback.outerjoin(questions, q.id == f.question_id))
        .where(f.helpful.is_(False) & after(f.updated_at))
        .order_by(f.updated_at, f.question_id)
    ).all()
    ticket_rows = conn.execute(
        select(t.role, t.status, t.created_at, t.resolved_at).where(after(t.created_at))
    ).all()
    n = func.count().label("n")
    clause_rows = conn.execute(
        select(q.top_clause, n).where(q.top_clause.is_not(None) & after(q.created_at))
        .group_by(q.top_clause).order_by(n.desc(), q.top_clause).limit(top_clauses)
    ).all()
    return Report(
        since=since, generated_at=now, questions_total=total, questions_answered=answered,
        unanswered=build_unanswered(list(unanswered), group),
        unhelpful=tuple(UnhelpfulItem(qid, text or "", clause, comment, at)
                        for qid, text, clause, comment, at in unhelpful),
        escalations=build_escalations([tuple(r) for r in ticket_rows]),
        top_clauses=tuple(ClauseCount(c, k) for c, k in clause_rows),
    )
