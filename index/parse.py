"""Turn a policy document's text into a Document of citable clauses, keeping the policy's own numbering.

The parser is line-based and tolerant: it knows the shapes councils number their documents with (dotted
"5.3" / "2.2.4", the Welsh model code's "1.—(1)", "(a)", "(i)", numbered sections with unnumbered paragraphs,
bullet lists with sub-headings, a glossary of "Term: text" entries) and falls back to "section + paragraph
position" for anything unnumbered, so every passage stays citable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from index.clauses import Clause, Document, DocumentMeta, normalise_space

_HEADER_KEYS = {
    "title": "title",
    "owner": "owner",
    "date of version": "version_date",
    "version date": "version_date",
    "version": "version_date",
    "review due": "review_due",
    "review date": "review_due",
    "next review": "review_due",
    "approved by": "approved_by",
}

_TERMINAL = tuple(".;:!?\"”’)—–-")
_DOTTED = re.compile(r"^(?:[-•*]\s*)?(\d+(?:\.\d+)+)\.?\s+(\S.*)$")
_TOP_WITH_SUB = re.compile(r"^(\d+)\s*\.?\s*[—–-]?\s*\((\d+)\)\s*(.*)$")
_NUMBERED_LINE = re.compile(r"^(\d+)\.\s+(\S.*)$")
_SUB_NUMBER = re.compile(r"^\((\d+[A-Z]?)\)\s*(.*)$")
_ITEM = re.compile(r"^\(([a-z]{1,2}|[ivxlc]+)\)\s*(.*)$")
_BULLET = re.compile(r"^[-•*▪·]\s+(\S.*)$")
_CAPS_NUMBERED_HEADING = re.compile(r"^(\d+)\s+([A-Z][A-Z0-9’'`,&/()\- ]*[A-Z)])$")
_PART = re.compile(r"^PART\s+(\d+|[IVX]+)\b\s*[—–:.-]*\s*(.*)$", re.IGNORECASE)
_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_GLOSSARY = re.compile(r"^([A-Z][\w’'&/ -]{0,40}?):\s+(\S.*)$")
_CONTENTS_ENTRY = re.compile(r"(\t\s*\d+\s*$)|(\.{3,})")
_ROMAN = {"i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv", "xvi",
          "xvii", "xviii", "xix", "xx"}


@dataclass
class _Passage:
    number: str
    parts: list[str]
    section_number: str
    section_title: str
    parent: str | None
    numbered: bool
    level: int = 0  # 0 clause, 1 letter item, 2 roman item, 3 deeper
    marker: str = ""  # the raw marker of an item, to tell (i) the letter from (i) the numeral

    @property
    def text(self) -> str:
        return normalise_space(" ".join(self.parts))


@dataclass
class _State:
    section_number: str = ""
    section_title: str = ""
    paragraph_count: int = 0
    passages: list[_Passage] = field(default_factory=list)
    context: _Passage | None = None  # the passage that lettered items hang from
    owner: _Passage | None = None  # the numbered clause that unnumbered paragraphs inside it belong to
    owner_paragraphs: int = 0
    current: _Passage | None = None  # the passage the next continuation line would join
    glossary_term: _Passage | None = None
    subheading: str = ""


def _is_heading_text(text: str) -> bool:
    return len(text) <= 80 and not text.endswith((".", ";", ":", ",", "!", "?", "—", "–", "-"))


def _looks_like_caps_heading(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return (
        len(letters) >= 4
        and all(c.isupper() for c in letters)
        and len(text) <= 80
        and not text.endswith(".")
    )


def _display_title(title: str) -> str:
    """Sentence-case an ALL-CAPS heading for labels ("EXAMPLES OF SOCIAL MEDIA" -> "Examples of social media")."""
    if title.isupper():
        return title[:1] + title[1:].lower()
    return title


def _next_nonblank(lines: list[str], i: int) -> str:
    for line in lines[i + 1 :]:
        if line.strip():
            return line.strip()
    return ""


def parse_document(text: str, doc_id: str, path: str = "") -> Document:
    """Parse one policy document's text into its metadata and clauses."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    meta: dict[str, str] = {}
    raw: list[tuple[str, str]] = []
    state = _State()
    in_header = True
    in_contents = False
    preamble: list[str] = []
    previous_blank = True
    last_heading = False

    def new_section(number: str, title: str) -> None:
        nonlocal last_heading
        last_heading = True
        state.section_number = number
        state.section_title = title
        state.paragraph_count = 0
        state.context = None
        state.owner = None
        state.current = None
        state.glossary_term = None
        state.subheading = ""

    def add(number: str, text_: str, parent: str | None, numbered: bool, level: int = 0, marker: str = "") -> _Passage:
        passage = _Passage(number, [text_], state.section_number, state.section_title, parent, numbered, level, marker)
        state.passages.append(passage)
        state.current = passage
        return passage

    def section_ref() -> str:
        return state.section_number or _display_title(state.section_title) or "Preamble"

    def add_paragraph(text_: str) -> None:
        owner = state.owner
        if owner is not None and owner.parts[-1].rstrip().endswith(("—", "–", "-", ":")) or (
            owner is not None and state.owner_paragraphs
        ):
            # An unnumbered paragraph inside a numbered clause that introduces it (a definition under the Welsh
            # code's "1.—(1) In this code —"): cite it by the clause and its position; (a) items hang from it.
            state.owner_paragraphs += 1
            passage = add(f"{owner.number} para {state.owner_paragraphs}", text_, owner.number, False)
            state.context = passage
            return
        state.paragraph_count += 1
        label = section_ref()
        if state.subheading:
            label = f"{label} ({state.subheading})"
        passage = add(f"{label} para {state.paragraph_count}", text_, None, False)
        state.context = passage

    for i, raw_line in enumerate(lines):
        line = raw_line.strip()
        indent = len(raw_line) - len(raw_line.lstrip(" \t"))
        if not line:
            previous_blank = True
            continue
        was_blank, previous_blank = previous_blank, False
        after_heading, last_heading = last_heading, False

        if line.lower().startswith("# source:"):
            raw.append(("source", line.split(":", 1)[1].strip()))
            continue

        if in_contents:
            if _CONTENTS_ENTRY.search(raw_line) or (raw_line.startswith("\t") and len(line) < 80):
                continue
            in_contents = False

        if re.fullmatch(r"(table of )?contents", line, re.IGNORECASE):
            in_contents = True
            in_header = False
            continue

        if in_header:
            key_match = re.match(r"^([A-Za-z][A-Za-z ]{1,60}?):\s*(.*)$", line)
            if key_match and "\t" in raw_line or (key_match and key_match.group(1).lower().strip() in _HEADER_KEYS):
                key = key_match.group(1).strip()
                value = key_match.group(2).strip()
                raw.append((key, value))
                field_name = _HEADER_KEYS.get(key.lower())
                if field_name is None and key.lower().startswith("approved by"):
                    field_name = "approved_by"
                if field_name and value and field_name not in meta:
                    meta[field_name] = value
                continue
            if re.match(r"^adopted\b", line, re.IGNORECASE):
                meta.setdefault("adopted", line)
                raw.append(("Adopted", line))
                continue
            if raw and raw[-1][0] == "Adopted" and not was_blank:
                meta["adopted"] = normalise_space(meta["adopted"] + " " + line)
                continue
            structural = (
                _DOTTED.match(line)
                or _TOP_WITH_SUB.match(line)
                or _CAPS_NUMBERED_HEADING.match(line)
                or _PART.match(line)
                or _NUMBERED_LINE.match(line)
                or (_BULLET.match(line) and indent == 0 and state.passages == [] and "title" in meta)
            )
            if not structural:
                heading = _MARKDOWN_HEADING.match(line)
                candidate = heading.group(1).strip() if heading else line
                if "title" not in meta and _is_heading_text(candidate):
                    meta["title"] = candidate
                    continue
                if _looks_like_caps_heading(line) and not preamble:
                    raw.append(("Heading", line))
                    continue
                if not (_BULLET.match(line) and indent == 0):
                    preamble.append(line)
                    continue
            in_header = False
            if preamble:
                new_section("", "Preamble")
                for paragraph in preamble:
                    add_paragraph(paragraph)
                preamble = []

        # Section headings.
        markdown = _MARKDOWN_HEADING.match(line)
        if markdown:
            title = markdown.group(1).strip()
            numbered_title = re.match(r"^(\d+(?:\.\d+)*)\.?\s+(.*)$", title)
            if numbered_title and "." not in numbered_title.group(1):
                new_section(numbered_title.group(1), numbered_title.group(2))
            else:
                new_section("", title)
            continue
        caps = _CAPS_NUMBERED_HEADING.match(line)
        if caps and not _DOTTED.match(line):
            new_section(caps.group(1), caps.group(2).strip())
            continue
        part = _PART.match(line)
        if part and len(line) <= 100:
            new_section(f"Part {part.group(1)}", part.group(2).strip(" —–-"))
            continue
        if _looks_like_caps_heading(line) and not _DOTTED.match(line) and not _ITEM.match(line):
            new_section("", line)
            continue

        dotted = _DOTTED.match(line)
        if dotted:
            number, body = dotted.group(1), dotted.group(2)
            parent = number.rsplit(".", 1)[0]
            known = {p.number for p in state.passages}
            passage = add(number, body, parent if parent in known else None, True)
            state.context = passage
            state.owner = None
            state.glossary_term = None
            continue

        top_sub = _TOP_WITH_SUB.match(line)
        if top_sub and indent == 0:
            top, sub, body = top_sub.groups()
            passage = add(f"{top}({sub})", body, None, True)
            passage.marker = top
            state.context = state.owner = passage
            state.owner_paragraphs = 0
            continue

        numbered_line = _NUMBERED_LINE.match(line)
        if numbered_line and indent == 0:
            number, body = numbered_line.groups()
            following = _next_nonblank(lines, i)
            if _is_heading_text(body) and not _ITEM.match(following) and not _SUB_NUMBER.match(following):
                new_section(number, body)
                continue
            passage = add(number, body, None, True)
            passage.marker = number
            state.context = state.owner = passage
            state.owner_paragraphs = 0
            continue

        sub_number = _SUB_NUMBER.match(line)
        if sub_number and indent == 0 and state.context is not None:
            top = _top_number(state)
            if top:
                passage = add(f"{top}({sub_number.group(1)})", sub_number.group(2), None, True)
                passage.marker = top
                state.context = state.owner = passage
                state.owner_paragraphs = 0
                continue

        item = _ITEM.match(line)
        if item and (state.context is not None or state.passages):
            _add_item(state, item.group(1), item.group(2), add)
            continue

        if numbered_line and indent > 0 and state.current is not None and state.current.level >= 1:
            owner = state.current
            while owner is not None and owner.level == 3:
                owner = next((p for p in state.passages if p.number == owner.parent), None)
            if owner is not None:
                add(f"{owner.number}({numbered_line.group(1)})", numbered_line.group(2), owner.number, True, 3)
                continue

        bullet = _BULLET.match(line)
        if bullet:
            body = bullet.group(1)
            if indent == 0 and _is_heading_text(body) and len(body) <= 60:
                new_section("", body)
                continue
            if _is_bullet_subheading(body, _next_nonblank(lines, i)):
                state.subheading = body
                state.paragraph_count = 0
                state.context = None
                state.current = None
                continue
            parent = state.context.number if state.context is not None and state.context.level == 0 and \
                state.context.parts[-1].rstrip().endswith((":", "—", "-", "–")) else None
            if parent is not None:
                count = sum(1 for p in state.passages if p.parent == parent) + 1
                add(f"{parent} item {count}", body, parent, False, 1)
            else:
                add_paragraph(body)
                state.context = None
            continue

        # Plain text: a continuation, a glossary entry, or a new unnumbered paragraph.
        current = state.current
        if current is not None and _continues(current.text, line):
            current.parts.append(line)
            continue
        if not state.section_number and state.section_title:
            glossary = _GLOSSARY.match(line)
            if glossary:
                term = glossary.group(1).strip()
                passage = add(f"{_display_title(state.section_title)}: {term}", line, None, False)
                state.glossary_term = passage
                continue
            if state.glossary_term is not None:
                state.glossary_term.parts.append(line)
                state.current = state.glossary_term
                continue
        if current is not None and not was_blank and not current.numbered and current.level == 0:
            current.parts.append(line)
            continue
        if _is_subheading(line, was_blank or after_heading, _next_nonblank(lines, i)) and state.passages:
            state.section_title = line
            state.context = state.owner = None
            state.current = None
            after_heading = True
            continue
        add_paragraph(line)

    if preamble:
        new_section("", "Preamble")
        for paragraph in preamble:
            add_paragraph(paragraph)

    clauses = _finalise(doc_id, state.passages)
    document_meta = DocumentMeta(
        title=meta.get("title", doc_id),
        owner=meta.get("owner", ""),
        version_date=meta.get("version_date", ""),
        review_due=meta.get("review_due", ""),
        approved_by=meta.get("approved_by", ""),
        adopted=meta.get("adopted", ""),
        raw=tuple(raw),
    )
    return Document(doc_id=doc_id, path=path, meta=document_meta, clauses=clauses)


def _continues(previous: str, line: str) -> bool:
    """A line continues the previous passage when the passage stops mid-sentence and the line starts lowercase
    (5.6 of the seed policy runs on after a page break: "...(in the form of a" / "comment) – an untrue ...")."""
    if not previous or previous.endswith(_TERMINAL) or previous.endswith(","):
        return False
    first = line[0]
    return first.islower() or first in "),;–—"


def _is_bullet_subheading(body: str, following: str) -> bool:
    """A short bullet is a sub-heading when the bullet after it is a longer statement ("- Post focus" then
    "- Posts and shares should naturally focus on ..."); a short item in a list of short items is not."""
    next_bullet = _BULLET.match(following)
    return (
        _is_heading_text(body)
        and len(body.split()) <= 8
        and next_bullet is not None
        and len(next_bullet.group(1)) >= 1.5 * len(body)
    )


def _is_subheading(line: str, was_blank: bool, following: str) -> bool:
    words = line.split()
    if not was_blank or not _is_heading_text(line) or len(line) > 60 or len(words) > 8:
        return False
    capitalised = sum(1 for w in words if w[:1].isupper() or w.lower() in {"of", "and", "the", "for", "to", "in"})
    return capitalised == len(words) and bool(following)


def _top_number(state: _State) -> str:
    for passage in reversed(state.passages):
        if passage.numbered and passage.level == 0 and passage.marker:
            return passage.marker
    return ""


def _add_item(state: _State, marker: str, body: str, add) -> None:  # noqa: ANN001 - add is a local closure
    """Attach an (a)/(i) item under the clause or item it belongs to.

    "(i)" is a letter after "(h)" and a numeral otherwise; likewise "(v)" after "(u)" and "(x)" after "(w)".
    """
    owner = state.context
    if len(marker) == 2 and marker[0] == marker[1] and marker not in _ROMAN:
        # "(aa)".."(ee)": one level below the item just above (10(2)(a)(ix)(aa) in the Welsh code).
        deepest = state.passages[-1] if state.passages else None
        while deepest is not None and deepest.level == 3:
            deepest = next((p for p in state.passages if p.number == deepest.parent), None)
        if deepest is not None:
            add(f"{deepest.number}({marker})", body, deepest.number, True, 3, marker)
            return
    last_letter = next((p for p in reversed(state.passages) if p.level == 1), None)
    is_roman = marker in _ROMAN
    if is_roman and last_letter is not None and owner is not None and last_letter.parent == owner.number:
        previous_marker = last_letter.marker
        if len(previous_marker) == 1 and len(marker) == 1 and ord(marker) == ord(previous_marker) + 1:
            is_roman = False
    if is_roman and last_letter is not None and (owner is None or last_letter.parent == owner.number):
        parent = last_letter.number
        add(f"{parent}({marker})", body, parent, True, 2, marker)
        return
    clause = state.owner
    if (
        clause is not None
        and len(marker) == 1
        and marker != "a"
        and any(p.level == 1 and p.parent == clause.number and p.marker < marker for p in state.passages)
    ):
        # "(c)" after a note such as "[subparagraph (b) is omitted]" still belongs to the clause's list.
        owner = state.context = clause
    owner_number = owner.number if owner is not None else state.passages[-1].number
    add(f"{owner_number}({marker})", body, owner_number, True, 1, marker)


def _finalise(doc_id: str, passages: list[_Passage]) -> tuple[Clause, ...]:
    seen: dict[str, int] = {}
    clauses: list[Clause] = []
    for passage in passages:
        text = passage.text
        if not text:
            continue
        number = passage.number
        if number in seen:
            seen[number] += 1
            number = f"{number} [{seen[number]}]"
        else:
            seen[number] = 1
        clauses.append(
            Clause(
                doc_id=doc_id,
                number=number,
                text=text,
                section_number=passage.section_number,
                section_title=passage.section_title,
                parent=passage.parent,
                numbered=passage.numbered,
            )
        )
    return tuple(clauses)
