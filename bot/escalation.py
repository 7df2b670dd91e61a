"""Escalation rules read from the policy text: which sentence sends the reader to which person, and for what."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from index.clauses import Clause, Document
from index.datafile import DataFileError, read_toml
from index.units import segment_blocks, split_segments

# Head nouns that make a noun phrase a person or body one can contact; "their prior written consent" (8.2:
# customers, partners, suppliers) has none, so it is not an escalation.
_ROLE_HEADS = (
    "executive", "manager", "officer", "leader", "services", "police", "clerk", "council", "committee",
    "ombudsman", "chair", "chairperson", "chairman", "mayor", "team", "director", "head", "secretary",
    "administrator", "administrators",
)
_ROLE_WORD = r"[A-Za-z’'&/-]+"
_ROLE_PHRASE = rf"(?P<roles>(?:{_ROLE_WORD}\s*,?\s*(?:and/or|and|or)?\s*){{1,12}})"
_DETERMINER = r"(?:(?:the|their|your|his|her|a|an)\s+)?(?:(?:council|authority|authority)['’]s\s+)?"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("permission", re.compile(rf"\b(?:written\s+)?(?:permission|approval|authorisation|authorization|consent)\s+"
                              rf"(?:of|from)\s+{_DETERMINER}{_ROLE_PHRASE}", re.IGNORECASE)),
    ("complaint", re.compile(rf"\bcomplaints?\b[^.]*?\b(?:made|submitted|referred)\s+to\s+{_DETERMINER}{_ROLE_PHRASE}",
                             re.IGNORECASE)),
    ("report", re.compile(rf"\b(?:report(?:ed)?|refer(?:red)?|pass(?:ed)?\s+on|forward(?:ed)?|notif(?:y|ied)|"
                          rf"escalated?)\s+(?:it\s+|them\s+|this\s+|any\s+\w+\s+)?to\s+{_DETERMINER}{_ROLE_PHRASE}",
                          re.IGNORECASE)),
    ("advice", re.compile(rf"\b(?:contact(?!\s+(?:details|information|form))|ask|speak\s+to|"
                          rf"seek\s+(?:the\s+)?advice\s+(?:of|from)|consult(?:\s+with)?)\s+"
                          rf"{_DETERMINER}{_ROLE_PHRASE}", re.IGNORECASE)),
    ("consult", re.compile(rf"{_DETERMINER}(?P<roles>(?:[A-Z]{{2,}}|[A-Z][a-z]+)(?:\s+[A-Z][A-Za-z]+){{0,3}})\s+"
                           rf"(?:must|should|shall)\s+be\s+(?:consulted|informed|notified|contacted|told)")),
    ("approval", re.compile(rf"\bvote\s+of\s+{_DETERMINER}{_ROLE_PHRASE}", re.IGNORECASE)),
)
_STOP = re.compile(r"\b(?:for|under|with|before|after|if|in|on|as|by|who|which|that|unless|when|where|"
                   r"within|without|about|regarding|immediately|must|should|will|may|can)\b.*$", re.IGNORECASE)

@dataclass(frozen=True)
class EscalationRule:
    """One sentence of the policy that sends the reader to a person.

    `segments` are the positions (in `split_segments(clause.text)`) of the text this rule governs: the sentence
    itself, plus the antecedent of an anaphoric sentence ("If in doubt, ..." governs the sentence before it;
    "In such instances, ..." governs the exception before it).
    """

    doc_id: str
    clause: str
    roles: tuple[str, ...]
    action: str
    sentence: str
    segments: tuple[int, ...]
    source: str = "derived"  # derived | override


def _clean_role(phrase: str) -> str:
    """The role named at the start of a phrase: "to your authority's monitoring officer any conduct" ->
    "monitoring officer" (the longest run of up to five words that ends in a role noun)."""
    phrase = phrase.strip(" ,.;:")
    phrase = re.sub(r"^(?:to|with|from)\s+", "", phrase, flags=re.IGNORECASE)
    phrase = re.sub(r"^(?:the|their|your|his|her|a|an)\s+", "", phrase, flags=re.IGNORECASE)
    phrase = re.sub(r"^(?:council|authority)['’]s\s+", "", phrase, flags=re.IGNORECASE)
    words = phrase.split()
    best = 0
    for length in range(1, min(5, len(words)) + 1):
        if _STOP.fullmatch(words[length - 1]) and length > 1:
            break
        if words[length - 1].lower().strip(",.;:") in _ROLE_HEADS:
            best = length
    return " ".join(words[:best]).strip(" ,.;:")


def _split_roles(phrase: str) -> list[str]:
    parts = re.split(r"\s*,\s*|\s+and/or\s+|\s+and\s+|\s+or\s+", phrase)
    roles = []
    for part in parts:
        role = _clean_role(part)
        if role:
            roles.append(role)
    return roles


def rules_for_clause(clause: Clause) -> list[EscalationRule]:
    segments = split_segments(clause.text)
    block_of = {position: block for block in segment_blocks(segments) for position in block}
    rules: list[EscalationRule] = []
    for position, segment in enumerate(segments):
        found: list[tuple[str, list[str]]] = []
        for action, pattern in _PATTERNS:
            for match in pattern.finditer(segment):
                roles = _split_roles(match.group("roles"))
                if roles:
                    found.append((action, roles))
        if not found:
            continue
        action = found[0][0]
        roles: list[str] = []
        for _, names in found:
            roles.extend(r for r in names if r.lower() not in {x.lower() for x in roles})
        governed_segments = tuple(block_of[position])
        rules.append(EscalationRule(clause.doc_id, clause.number, tuple(roles), action, segment, governed_segments))
    return rules


def derive_rules(documents: list[Document]) -> list[EscalationRule]:
    """Every escalation rule the documents state, in document order."""
    return [rule for document in documents for clause in document.clauses for rule in rules_for_clause(clause)]


class OverrideError(DataFileError):
    pass


def apply_overrides(rules: list[EscalationRule], path: Path) -> list[EscalationRule]:
    """Let an officer add, correct or silence derived rules (policy_text/escalation_overrides.toml).

    [[rule]] clause = "5.4"  roles = ["chief executive"]  action = "advice"  sentence = "..."   # add or correct
    [[silence]] clause = "9.1"  role = "Electoral Commission"                                   # silence
    """
    data = read_toml(path, OverrideError)
    if data is None:
        return rules
    result = list(rules)
    for silence in data.get("silence", []):
        clause = str(silence.get("clause", ""))
        role = str(silence.get("role", "")).lower()
        kept = []
        for rule in result:
            if rule.clause == clause and (not role or role in (r.lower() for r in rule.roles)):
                remaining = tuple(r for r in rule.roles if role and r.lower() != role)
                if remaining:
                    kept.append(replace(rule, roles=remaining))
                continue
            kept.append(rule)
        result = kept
    for entry in data.get("rule", []):
        clause = str(entry.get("clause", ""))
        roles = tuple(str(r) for r in entry.get("roles", []))
        if not clause or not roles:
            raise OverrideError(f"{path.name}: every [[rule]] needs a clause and roles")
        sentence = str(entry.get("sentence", ""))
        existing = [r for r in result if r.clause == clause and (not sentence or r.sentence == sentence)]
        if existing:
            result = [replace(r, roles=roles, action=str(entry.get("action", r.action)), source="override")
                      if r in existing else r for r in result]
        else:
            result.append(EscalationRule(str(entry.get("document", "")), clause, roles,
                                         str(entry.get("action", "advice")), sentence,
                                         tuple(entry.get("segments", [])), "override"))
    return result
