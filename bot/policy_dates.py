"""Lenient reading of a policy header's review date, for the "past its review date" warning."""

from __future__ import annotations

import calendar
import functools
import re
from datetime import date

from index.clauses import DocumentMeta

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})


@functools.lru_cache(maxsize=256)  # a handful of headers, read on every answer
def parse_review_date(text: str) -> date | None:
    """The last day a written review date allows ("May 2022" -> 31 May 2022), or None when it cannot be read.

    Typos such as "228th June 2021" give None rather than an error: the raw text is still shown.
    """
    cleaned = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", text.strip().lower())
    match = re.fullmatch(r"(?:(\d{1,2})\s+)?([a-z]+)\.?,?\s+(\d{4})", cleaned)
    try:
        if match:
            day, month_name, year = match.groups()
            month = _MONTHS.get(month_name)
            if month is None:
                return None
            last = calendar.monthrange(int(year), month)[1]
            return date(int(year), month, int(day) if day else last)
        match = re.fullmatch(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})", cleaned)
        if match:
            day, month, year = (int(x) for x in match.groups())
            return date(year, month, day)
        match = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", cleaned)
        if match:
            return date(*(int(x) for x in match.groups()))
        match = re.fullmatch(r"(\d{4})", cleaned)
        if match:
            return date(int(cleaned), 12, 31)
    except ValueError:
        return None
    return None


def review_warning(meta: DocumentMeta, today: date) -> str:
    due = parse_review_date(meta.review_due) if meta.review_due else None
    if due is None or due >= today:
        return ""
    owner = f" with {meta.owner}" if meta.owner else ""
    return (
        f"“{meta.title}” was due for review in {meta.review_due} and may be out of date: "
        f"check{owner} that it is still current."
    )
