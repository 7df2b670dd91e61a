"""`policybot check`: validate every file in policy_text/ and report problems with file and line."""

from __future__ import annotations

from bot.adviser import CONTACTS_FILE, OVERRIDES_FILE, SYNONYMS_FILE
from bot.contacts import load_contacts, validate_contacts
from bot.escalation import OverrideError, apply_overrides, derive_rules
from bot.settings import Settings
from bot.synonyms import SynonymsError, load_synonyms
from index.readers import PolicyError, load_documents
from index.store import CURATED_FILE
from index.units import CuratedError, load_curated


def check_policy_folder(settings: Settings) -> list[str]:
    folder = settings.policy_dir
    problems: list[str] = []
    try:
        documents = load_documents(folder)
    except PolicyError as exc:
        return [str(exc)]
    problems.extend(validate_contacts(folder / CONTACTS_FILE))
    try:
        load_synonyms(folder / SYNONYMS_FILE)
    except SynonymsError as exc:
        problems.append(str(exc))
    try:
        curated = load_curated(folder / CURATED_FILE)
    except CuratedError as exc:
        problems.append(str(exc))
        curated = []
    numbers = {(d.doc_id, c.number) for d in documents for c in d.clauses} | {("", c.number) for d in documents
                                                                              for c in d.clauses}
    for question in curated:
        if (question.document, question.clause) not in numbers:
            problems.append(f"{CURATED_FILE}: wording {question.wording!r} names clause {question.clause!r}, "
                            "which no policy document has")
    try:
        rules = apply_overrides(derive_rules(documents), folder / OVERRIDES_FILE)
    except OverrideError as exc:
        problems.append(str(exc))
        rules = []
    contacts = load_contacts(folder / CONTACTS_FILE)
    for rule in rules:
        for role in rule.roles:
            if role.lower() not in contacts.by_role:
                problems.append(f"{CONTACTS_FILE}: role {role!r} (clause {rule.clause} of {rule.doc_id}) has no "
                                "contact entry")
    for document in documents:
        if not document.meta.owner:
            problems.append(f"{document.doc_id}: no Owner in the header; abstentions cannot name the policy owner")
    return problems
