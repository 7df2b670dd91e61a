"""A synthetic policy corpus of any size, recombined from real policy sentences, for measuring speed at scale."""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from bot.settings import PROJECT_ROOT

# The shared real policy texts (parser test material, not shipped with the product); used when present.
SHARED_POLICIES = PROJECT_ROOT.parent / "shared" / "bench" / "policies"
DATA_FILES = ("contacts.toml", "synonyms.toml", "curated_questions.toml")
CLAUSES_PER_DOCUMENT = 50
CLAUSES_PER_SECTION = 5
_SENTENCE = re.compile(r"(?<=[.;!?])\s+(?=[A-Z“\"‘(])")
_MARKER = re.compile(r"^(?:[-•*]\s+)?(?:(?:\d+\.?—\(\d+\)|\d+(?:\.\d+)*\.?|\(\w{1,4}\))\s+)?")
_TRAILER = re.compile(r"(?:[;,:]\s*(?:or|and)?|\s*[—–-])\s*$")
# Terms a council's policies use interchangeably: swapped at random so recombined sentences are rarely identical
# (a corpus of a few hundred sentences repeated verbatim would flatter any cache keyed on the text).
_VARIANTS = (
    ("Councillors", ("Councillors", "Members", "elected members", "co-opted members", "town councillors")),
    ("Councillor", ("Councillor", "Member", "elected member", "co-opted member", "ward councillor")),
    ("Council", ("Council", "Town Council", "Parish Council", "Community Council", "Authority", "County Council")),
    ("the Clerk", ("the Clerk", "the Proper Officer", "the Monitoring Officer", "the Chief Executive",
                   "the Deputy Clerk")),
    ("social media", ("social media", "online channels", "social networks", "online platforms", "digital media")),
    ("committee", ("committee", "sub-committee", "panel", "working group", "joint committee")),
    ("website", ("website", "web pages", "intranet", "online portal")),
    ("information", ("information", "material", "data", "records", "content")),
    ("authority", ("authority", "council", "body", "organisation")),
    ("must", ("must", "should", "shall", "are expected to")),
)
_QUALIFIERS = ("", "", "", "Where practicable, ", "In general, ", "Subject to the Standing Orders, ",
               "For the avoidance of doubt, ", "Except in an emergency, ", "Unless the law requires otherwise, ",
               "In all cases, ", "So far as is reasonable, ")
_VARIANT_WORDS = re.compile(r"\b(" + "|".join(re.escape(w) for w, _ in _VARIANTS) + r")\b")
_TOPICS = (
    "GENERAL PRINCIPLES", "USE OF COUNCIL RESOURCES", "MEETINGS AND PROCEEDINGS", "DECLARING INTERESTS",
    "GIFTS AND HOSPITALITY", "INFORMATION AND CONFIDENTIALITY", "COMMUNICATIONS WITH THE PUBLIC",
    "WORKING WITH OFFICERS", "EQUALITY AND RESPECT", "ONLINE CONDUCT", "COMPLAINTS AND BREACHES",
    "ELECTIONS AND CAMPAIGNING", "DATA PROTECTION", "SAFEGUARDING", "PROCUREMENT", "FINANCIAL REGULATIONS",
    "RECORDS MANAGEMENT", "HEALTH AND SAFETY", "PLANNING MATTERS", "LICENSING", "SCRUTINY", "DELEGATIONS",
)
_MONTHS = ("January", "March", "May", "July", "September", "November")


@dataclass(frozen=True)
class Corpus:
    """A generated policy folder: how many documents and clauses were written, from how many real sentences."""

    policy_dir: Path
    documents: int
    clauses: int
    sentences: int
    sources: tuple[str, ...]


def real_sentences(paths: list[Path]) -> list[str]:
    """Sentences (40 to 400 characters) from real policy texts, de-duplicated, in first-seen order: numbering
    markers removed, and list items ("(a) is a member of any committee ...;") made into sentences (capital first,
    full stop last). Header lines, headings, contents lines, links and citations are dropped."""
    seen: dict[str, None] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            line = _MARKER.sub("", line.strip())
            if not line or line.startswith("#") or "\t" in line or "http" in line or "<" in line:
                continue
            for sentence in _SENTENCE.split(line):
                sentence = _TRAILER.sub("", " ".join(sentence.split()))
                if not sentence or not sentence[0].isalpha():
                    continue
                sentence = sentence[0].upper() + sentence[1:]
                if not sentence.endswith((".", "!", "?")):
                    sentence += "."
                if 40 <= len(sentence) <= 400:
                    seen.setdefault(sentence, None)
    return list(seen)


def vary(sentence: str, rng: random.Random) -> str:
    """The sentence with its interchangeable terms ("Council", "Councillors", "the Clerk" ...) drawn at random,
    sometimes after a qualifying phrase policies open with ("Where practicable, ...")."""
    options = dict(_VARIANTS)
    text = _VARIANT_WORDS.sub(lambda m: rng.choice(options[m.group(1)]), sentence)
    qualifier = rng.choice(_QUALIFIERS)
    if qualifier and not text[:2].isupper():
        return qualifier + text[0].lower() + text[1:]
    return text[0].upper() + text[1:]


def source_files(seed_dir: Path, shared_dir: Path = SHARED_POLICIES) -> list[Path]:
    """The real texts sentences are drawn from: the council's own policies, plus the shared ones if present."""
    files = sorted(p for p in seed_dir.iterdir() if p.suffix.lower() in (".txt", ".md"))
    if shared_dir.is_dir():
        files += sorted(p for p in shared_dir.glob("*.txt"))
    return files


def document_text(number: int, clauses: int, pool: list[str], rng: random.Random) -> str:
    """One numbered policy document with a header block, ALL-CAPS numbered sections and dotted clauses, each
    clause one to three real sentences (terms varied): the layout of the council's own policy, so the real parser
    reads it."""
    year = 2015 + number % 9
    lines = [
        f"Title:\tSynthetic Policy {number:03d}",
        f"Owner:\tPolicy Officer {number % 17 + 1}",
        f"Date of version:\t{1 + number % 28} {_MONTHS[number % len(_MONTHS)]} {year}",
        f"Review due:\t{_MONTHS[(number + 3) % len(_MONTHS)]} {year + 3}",
        "",
    ]
    section = 0
    for position in range(clauses):
        if position % CLAUSES_PER_SECTION == 0:
            section += 1
            topic = _TOPICS[(number + section) % len(_TOPICS)]
            lines += ["", f"{section} {topic}", ""]
        text = " ".join(vary(s, rng) for s in rng.sample(pool, rng.choice((1, 1, 2, 2, 3))))
        lines.append(f"- {section}.{position % CLAUSES_PER_SECTION + 1} {text}")
    return "\n".join(lines) + "\n"


def write_corpus(target: Path, clauses: int, seed_dir: Path, seed_clauses: int,
                 shared_dir: Path = SHARED_POLICIES, seed: int = 7) -> Corpus:
    """Write a policy folder of `clauses` clauses in all: the council's real policies and data files (so the gold
    questions still have their answers, now among thousands of distractors) plus synthetic documents of 50
    clauses each making up the rest. `seed_clauses` is how many clauses the real policies parse into. The same
    arguments always write the same corpus."""
    target.mkdir(parents=True, exist_ok=True)
    sources = source_files(seed_dir, shared_dir)
    for path in seed_dir.iterdir():
        if path.is_file() and (path.suffix.lower() in (".txt", ".md", ".docx", ".pdf") or path.name in DATA_FILES):
            shutil.copy2(path, target / path.name)
    pool = real_sentences(sources)
    if len(pool) < 3:
        raise ValueError(f"too few real sentences ({len(pool)}) in {seed_dir} to build a corpus from")
    rng = random.Random(seed)
    remaining = max(0, clauses - seed_clauses)
    documents = 0
    while remaining > 0:
        documents += 1
        size = min(CLAUSES_PER_DOCUMENT, remaining)
        text = document_text(documents, size, pool, rng)
        (target / f"synthetic-policy-{documents:03d}.txt").write_text(text, encoding="utf-8")
        remaining -= size
    return Corpus(target, documents, max(clauses, seed_clauses), len(pool), tuple(p.name for p in sources))
