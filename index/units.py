"""What gets indexed for each clause: the clause in context, its sentences, and officers' curated question wordings."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from index.clauses import Clause, Document, normalise_number
from index.datafile import DataFileError, read_toml

# A sentence ends at . ! ? ; followed by space and a capital, quote or bracket; "i.e." / "e.g." do not end one.
_SENTENCE_END = re.compile(r"(?<!\bi\.e)(?<!\be\.g)(?<=[.!?])\s+(?=[A-Z“\"‘'(])")


def split_sentences(text: str) -> list[str]:
    """Split a clause into its sentences, verbatim (joined back with single spaces they give the clause)."""
    return list(_sentences(text))


@functools.lru_cache(maxsize=512)  # the clauses answers cite recur; small, so a 10k build churns it cheaply
def _sentences(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in _SENTENCE_END.split(text) if p.strip())
    return parts or (text,)


_EXCEPTION = re.compile(r",\s+(?=(?:unless|except)\b)")


def split_segments(text: str) -> list[str]:
    """The clause's sentences, with an exception tail (", unless ...") split off as its own segment.

    Segments are what a question is matched against to find the sentence that answers it, and what escalation
    rules attach to: in 5.5 "make clear who they are ... unless there are exceptional circumstances" the
    ICT Manager is needed for the exception, not for the rule itself.
    """
    return list(_segments(text))


@functools.lru_cache(maxsize=512)
def _segments(text: str) -> tuple[str, ...]:
    segments: list[str] = []
    for sentence in _sentences(text):
        pieces = _EXCEPTION.split(sentence, maxsplit=1)
        if len(pieces) == 2:
            segments.extend([pieces[0] + ",", pieces[1]])
        else:
            segments.append(sentence)
    return tuple(segments)


# A sentence that opens by pointing back ("If in doubt, ...", "In such instances, ...") belongs with the
# segment before it: together they are one thing the policy says.
ANAPHORIC = re.compile(
    r"^(?:if\s+in\s+doubt|in\s+such\s+(?:instances|cases|circumstances)|in\s+these\s+(?:instances|cases|"
    r"circumstances)|in\s+that\s+case|if\s+so|where\s+this\s+(?:is|happens))\b",
    re.IGNORECASE,
)


def segment_blocks(segments: list[str]) -> list[list[int]]:
    """Group segment positions into blocks: an anaphoric segment joins the block of the segment before it."""
    blocks: list[list[int]] = []
    for position, segment in enumerate(segments):
        if blocks and ANAPHORIC.match(segment):
            blocks[-1].append(position)
        else:
            blocks.append([position])
    return blocks


@dataclass(frozen=True)
class Unit:
    """One indexed text. `clause` is the index of the clause it cites; `kind` is clause | sentence | curated;
    `segment` is the segment's position in the clause for sentence units, else -1."""

    clause: int
    kind: str
    text: str
    segment: int = -1


@dataclass(frozen=True)
class CuratedQuestion:
    clause: str
    wording: str
    document: str = ""  # doc_id, optional when only one document has that clause number


class CuratedError(DataFileError):
    pass


def load_curated(path: Path) -> list[CuratedQuestion]:
    """Officers' known question wordings for clauses (like QnA Maker's alternative questions).

    File format (TOML):  [[question]]  clause = "5.3"  wordings = ["can I use the crest on my site", ...]
    """
    data = read_toml(path, CuratedError)
    if data is None:
        return []
    result = []
    for entry in data.get("question", []):
        clause = str(entry.get("clause", "")).strip()
        for wording in entry.get("wordings", []):
            if clause and str(wording).strip():
                result.append(CuratedQuestion(clause, str(wording).strip(), str(entry.get("document", ""))))
    return result


def lead_in(clause: Clause, by_number: dict[str, Clause]) -> str:
    parent = by_number.get(clause.parent) if clause.parent else None
    return parent.text if parent is not None else ""


def context_text(clause: Clause, parent_text: str) -> str:
    """The clause as embedded: section title, the parent's lead-in for list items, then the clause."""
    parts = [clause.section_title.title() if clause.section_title.isupper() else clause.section_title]
    if parent_text:
        parts.append(parent_text)
    parts.append(clause.text)
    return ". ".join(p for p in parts if p)


def build_units(documents: list[Document], curated: list[CuratedQuestion]) -> tuple[list[Clause], list[Unit]]:
    """Flatten documents into clauses and the units that represent them in the index."""
    clauses: list[Clause] = [c for d in documents for c in d.clauses]
    units: list[Unit] = []
    for document in documents:
        by_number = {c.number: c for c in document.clauses}
        offset = clauses.index(document.clauses[0]) if document.clauses else 0
        for i, clause in enumerate(document.clauses):
            index = offset + i
            parent_text = lead_in(clause, by_number)
            units.append(Unit(index, "clause", context_text(clause, parent_text)))
            segments = split_segments(clause.text)
            blocks = segment_blocks(segments)
            if len(blocks) > 1:
                for block in blocks:
                    block_text = " ".join(segments[i] for i in block)
                    text = f"{parent_text} {block_text}" if parent_text else block_text
                    units.append(Unit(index, "sentence", text, block[0]))
    lookup: dict[tuple[str, str], int] = {}
    for i, clause in enumerate(clauses):
        lookup.setdefault(("", normalise_number(clause.number)), i)
        lookup[(clause.doc_id, normalise_number(clause.number))] = i
    for question in curated:
        index = lookup.get((question.document, normalise_number(question.clause)))
        if index is not None:
            units.append(Unit(index, "curated", question.wording))
    return clauses, units
