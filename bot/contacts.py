"""The council's contacts file: who each role named by a policy is, and how to reach them."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bot.answer import Contact
from index.datafile import DataFileError, read_toml

CONTACT_FIELDS = ("name", "email", "phone", "slack", "teams", "placeholder")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class ContactsError(DataFileError):
    pass


@dataclass(frozen=True)
class Contacts:
    by_role: dict[str, Contact]
    fallback_role: str = "democratic services"

    def lookup(self, role: str) -> Contact:
        """The configured contact for a role (matched case-insensitively), or an unconfigured one naming it."""
        contact = self.by_role.get(role.lower())
        if contact is None:
            return Contact(role=role)
        return contact


def load_contacts(path: Path) -> Contacts:
    data = read_toml(path, ContactsError)
    if data is None:
        return Contacts({})
    by_role = {}
    for role, entry in (data.get("roles") or {}).items():
        if not isinstance(entry, dict):
            continue
        placeholder = bool(entry.get("placeholder", False))
        fields = {k: str(entry.get(k, "")).strip() for k in ("name", "email", "phone", "slack", "teams")}
        configured = not placeholder and any(fields.values())
        by_role[role.lower()] = Contact(role=role, configured=configured, **fields)
    fallback = str((data.get("fallback") or {}).get("role", "democratic services"))
    return Contacts(by_role, fallback)


def validate_contacts(path: Path) -> list[str]:
    """Problems in the contacts file, each "file:line: message", for `policybot check`."""
    if not path.exists():
        return [f"{path.name}: missing (every role will show 'no contact configured')"]
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"{path.name}: {exc}"]
    lines = text.splitlines()

    def line_of(needle: str) -> int:
        for number, line in enumerate(lines, 1):
            if needle in line:
                return number
        return 0

    problems = []
    for key in data:
        if key not in ("roles", "fallback"):
            problems.append(f"{path.name}:{line_of(key)}: unknown section {key!r}")
    for role, entry in (data.get("roles") or {}).items():
        if not isinstance(entry, dict):
            problems.append(f"{path.name}:{line_of(role)}: role {role!r} must be a table")
            continue
        for key, value in entry.items():
            if key not in CONTACT_FIELDS:
                problems.append(f"{path.name}:{line_of(key + ' ')}: unknown key {key!r} for role {role!r}")
            elif key == "email" and value and not _EMAIL.match(str(value)):
                problems.append(f"{path.name}:{line_of(str(value))}: malformed email {value!r} for role {role!r}")
        if entry.get("placeholder"):
            line = line_of(f'roles."{role}"')
            problems.append(f"{path.name}:{line}: role {role!r} still has placeholder details")
    return problems
