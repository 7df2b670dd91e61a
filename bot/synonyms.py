"""The council-editable synonym table: councillors' words mapped to the words the policies use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from index.datafile import DataFileError, read_toml


class SynonymsError(DataFileError):
    pass


@dataclass(frozen=True)
class Synonyms:
    table: dict[str, tuple[str, ...]]

    def expansions(self, question: str) -> list[str]:
        """The policy words to add for a question: every key found as a whole word or phrase, in order."""
        lowered = " " + re.sub(r"[^\w@'’-]+", " ", question.lower()).replace("’", "'") + " "
        found: list[str] = []
        for key, targets in self.table.items():
            if f" {key} " in lowered:
                for target in targets:
                    if target not in found and f" {target} " not in lowered:
                        found.append(target)
        return found

    def expand(self, question: str) -> str:
        extra = self.expansions(question)
        return f"{question} ({', '.join(extra)})" if extra else question


def load_synonyms(path: Path) -> Synonyms:
    data = read_toml(path, SynonymsError)
    if data is None:
        return Synonyms({})
    table: dict[str, tuple[str, ...]] = {}
    for key, value in (data.get("synonyms") or {}).items():
        targets = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
        table[" ".join(str(key).lower().split())] = tuple(t.lower() for t in targets)
    return Synonyms(table)
