"""The adviser's output: an Answer with its citations, escalations and warnings, independent of chat platforms."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Contact:
    """How to reach a role. Every field may be empty: an unconfigured role is still named, never invented."""

    role: str
    name: str = ""
    email: str = ""
    phone: str = ""
    slack: str = ""  # a Slack user id (U...) or channel id (C...)
    teams: str = ""  # a Teams user or conversation id
    configured: bool = False

    def describe(self) -> str:
        if not self.configured:
            return "no contact configured"
        parts = [p for p in (self.name, self.email, self.phone) if p]
        return ", ".join(parts) if parts else "no contact configured"


@dataclass(frozen=True)
class Citation:
    document: str  # document title
    doc_id: str
    clause: str  # the policy's own number ("5.3") or label ("Examples of social media: Twitter")
    title: str  # section title ("5 USERS' RESPONSIBILITIES")
    text: str  # verbatim clause text
    score: float
    version_date: str = ""
    quote: str = ""  # the sentence(s) of this clause that best answer the question, verbatim


@dataclass(frozen=True)
class Escalation:
    role: str  # "chief executive"
    reason: str  # the policy sentence that requires it, verbatim
    clause: str
    action: str  # permission | advice | report | complaint | consult
    contact: Contact
    required: bool = True  # False for the fallback offered when the bot abstains
    doc_id: str = ""

    def to_json(self) -> dict:
        return {
            "role": self.role,
            "reason": self.reason,
            "clause": self.clause,
            "action": self.action,
            "required": self.required,
            "contact": {k: v for k, v in asdict(self.contact).items() if k != "role"}
            | {"summary": self.contact.describe()},
        }


@dataclass(frozen=True)
class Answer:
    question: str
    answered: bool
    answer: str
    citations: tuple[Citation, ...] = ()
    escalations: tuple[Escalation, ...] = ()
    warnings: tuple[str, ...] = ()
    kind: str = "policy"  # policy | abstain | help | empty | clause
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "your question was shortened"

    @property
    def top_clause(self) -> str | None:
        return self.citations[0].clause if self.citations else None

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answered": self.answered,
            "answer": self.answer,
            "kind": self.kind,
            "citations": [
                {
                    "document": c.document,
                    "doc_id": c.doc_id,
                    "clause": c.clause,
                    "title": c.title,
                    "text": c.text,
                    "quote": c.quote,
                    "score": round(c.score, 4),
                    "version_date": c.version_date,
                }
                for c in self.citations
            ],
            "escalations": [e.to_json() for e in self.escalations],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }
