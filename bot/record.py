"""Glue between the adviser and the record store: the pseudonym key, CLI question logging, and the policy
owner's commands (report, purge, forget)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from bot.settings import Settings

CLI_USER = "cli"


class RecordStoreError(ValueError):
    """The record database could not be reached for a policy owner's command: one line for the command line."""


def pseudonym_key(settings: Settings) -> bytes:
    """The key for pseudonymising user ids: POLICYBOT_PSEUDONYM_KEY when set, otherwise a random key created
    once in the data folder (mode 0600). Several instances sharing a database must share the setting."""
    if settings.pseudonym_key:
        return settings.pseudonym_key.reveal().encode()
    path = settings.data_dir / "pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def open_store(settings: Settings):  # noqa: ANN201
    from bot.store import Store

    return Store.open(settings.effective_database_url, pseudonym_key(settings))


@contextmanager
def opened_store(settings: Settings) -> Iterator:
    """The record store for one command, closed afterwards; an unreachable or locked database becomes a
    RecordStoreError naming the setting to check, instead of a traceback."""
    from bot.store import StoreUnavailable

    try:
        store = open_store(settings)
        try:
            yield store
        finally:
            store.close()
    except StoreUnavailable as exc:
        raise RecordStoreError(f"the record database is unavailable ({exc}); check DATABASE_URL and that the "
                               "database is running, then try again") from exc


def record_cli_question(settings: Settings, question: str, payload: dict) -> None:
    """Log a command-line question so `policybot report` shows what the policy did not answer."""
    store = open_store(settings)
    try:
        citations = payload.get("citations") or []
        store.log_question("cli", os.environ.get("USER", CLI_USER), question, bool(payload.get("answered")),
                           citations[0]["clause"] if citations else None, float(payload.get("latency_ms", 0.0)))
    finally:
        store.close()


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"--since must be a date like 2026-01-31, not {value!r}") from exc


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    since = _since(args.since)
    with opened_store(settings) as store:
        report = store.report(since=since)
    if args.json:
        import json

        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False, default=str))
    elif args.csv:
        sys.stdout.write(report.to_csv())
    else:
        print(report.to_text())
    return 0


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    days = args.days if args.days is not None else settings.retention_days
    with opened_store(settings) as store:
        counts = store.purge(days)
    print("purged: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" (retention {days} days)")
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    with opened_store(settings) as store:
        counts = store.forget(args.platform, args.user)
    print(f"forgot {args.platform} user: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="what the policy owner can learn: unanswered questions, feedback ...")
    report.add_argument("--since", help="only questions from this date (YYYY-MM-DD)")
    form = report.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true")
    form.add_argument("--csv", action="store_true")
    report.set_defaults(func=cmd_report)

    purge = sub.add_parser("purge", help="delete question text older than the retention period")
    purge.add_argument("--days", type=int, default=None, help="override POLICYBOT_RETENTION_DAYS")
    purge.set_defaults(func=cmd_purge)

    forget = sub.add_parser("forget", help="delete everything about one user (a subject-erasure request)")
    forget.add_argument("user", help="the user's Slack or Teams id (or login name for the command line)")
    forget.add_argument("--platform", default="slack", choices=["slack", "teams", "cli"])
    forget.set_defaults(func=cmd_forget)


