"""Domain types for parsed policy documents: a Document holds its metadata and citable Clauses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Clause:
    """One citable passage of a policy, with the policy's own numbering.

    `number` is what a reader cites ("5.3", "1(2)(a)", "8 para 2", "Examples of social media: Twitter");
    `text` is the policy's text with whitespace normalised and nothing else changed.
    `parent` is the number of the clause that introduces this one (2.2 for 2.2.4), or None.
    """

    doc_id: str
    number: str
    text: str
    section_number: str
    section_title: str
    parent: str | None = None
    numbered: bool = True

    @property
    def key(self) -> str:
        return f"{self.doc_id}#{self.number}"

    @property
    def section_label(self) -> str:
        if self.section_number:
            return f"{self.section_number} {self.section_title}".strip()
        return self.section_title


@dataclass(frozen=True)
class DocumentMeta:
    """The header block of a policy. Dates are kept as written (typos included): they are shown, not computed on,
    except `review_due`, which `review_due_date()` interprets leniently for the past-review warning."""

    title: str
    owner: str = ""
    version_date: str = ""
    review_due: str = ""
    approved_by: str = ""
    adopted: str = ""
    raw: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Document:
    doc_id: str
    path: str
    meta: DocumentMeta
    clauses: tuple[Clause, ...] = field(default_factory=tuple)

    def clause(self, number: str) -> Clause | None:
        wanted = normalise_number(number)
        for clause in self.clauses:
            if normalise_number(clause.number) == wanted:
                return clause
        return None


def normalise_number(number: str) -> str:
    """A clause number as typed by a person ("5.3.", " 2.2.4", "para 5.3") compared loosely."""
    return re.sub(r"[\s.]+$", "", number.strip().lower())


def normalise_space(text: str) -> str:
    """Collapse runs of whitespace (tabs, newlines, non-breaking spaces) to single spaces; nothing else changes."""
    return " ".join(text.split())
