"""Reading the council's TOML data files in policy_text/ (contacts, synonyms, curated wordings, overrides)."""

from __future__ import annotations

import tomllib
from pathlib import Path


class DataFileError(Exception):
    """A data file in policy_text/ that cannot be read; the message names the file (and the line, for bad TOML)."""


def read_toml(path: Path, error: type[DataFileError] = DataFileError) -> dict | None:
    """The file's tables, or None when it does not exist. Bad TOML raises `error` naming the file and line."""
    if not path.exists():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path.name}: {exc}") from exc
