"""Structured logging for the server: one JSON object per line, with secrets, tokens and request bodies redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from bot.settings import Settings

REDACTED = "[redacted]"
MAX_FIELD_CHARS = 2000  # a value longer than this is cut: a log line is never a place for a whole payload
MAX_TRACEBACK_CHARS = 8000
MIN_SECRET_CHARS = 6  # shorter configured "secrets" (test placeholders, typos) would redact ordinary words

# Third-party loggers that write request and response bodies (and headers) at DEBUG. Their DEBUG records are
# dropped whatever the configured level, so turning on DEBUG to chase a problem never writes a chat payload.
BODY_LOGGERS = ("slack_sdk", "slack_bolt", "botbuilder", "botframework", "msrest", "msal", "urllib3",
                "requests", "aiohttp.client", "httpx", "httpcore", "sqlalchemy.engine")

# Attributes every LogRecord has; anything else on a record came from `extra=` and becomes a JSON field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack tokens: bot (xoxb-), user (xoxp-), app-level (xapp-), refresh/config (xoxe-, xoxr-), legacy.
    (re.compile(r"\bxox[a-z]?-[A-Za-z0-9-]+"), "xox?-" + REDACTED),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), "xapp-" + REDACTED),
    # Authorization headers in any spelling a library prints them in, and bare bearer tokens.
    (re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # JSON Web Tokens (Bot Framework and Entra tokens) wherever they appear.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Passwords in URLs: postgresql://user:password@host/db.
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    # A request or response body printed after a label ("body: {...}", "json_body=..."): the rest is dropped.
    (re.compile(r"(?i)(\b(?:body|json_body|body_params|request_body|raw_body)\b[\"']?\s*[:=]\s*).+"),
     r"\1" + REDACTED),
)


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold (tokens, passwords, keys, the database password), for redaction."""
    values = [settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token,
              settings.teams_app_password, settings.pseudonym_key]
    result = [v.reveal() for v in values if v]
    match = re.match(r"^[a-z][a-z0-9+.-]*://[^:/@]*:([^@/]+)@", settings.database_url)
    if match:
        result.append(match.group(1))
    return result


class Redactor:
    """Removes configured secret values and anything shaped like a token, Authorization header or request body
    from a string, and caps its length."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._secrets = re.compile("|".join(re.escape(s) for s in values)) if values else None

    def text(self, value: str, limit: int = MAX_FIELD_CHARS) -> str:
        if self._secrets is not None:
            value = self._secrets.sub(REDACTED, value)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        if len(value) > limit:
            value = value[:limit] + f"... [{len(value) - limit} characters cut]"
        return value

    def value(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {str(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self.text(str(value))


class RedactingFilter(logging.Filter):
    """Applied to the handler, so it sees every record from every logger: drops third-party DEBUG records that
    carry bodies, then rewrites the message, the `extra` fields and any traceback through the Redactor. After it,
    `record.msg` is the final text and `record.args` is empty."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.redactor = Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO and record.name.startswith(BODY_LOGGERS):
            return False
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} (unformattable arguments)"
        record.msg = self.redactor.text(message)
        record.args = ()
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, self.redactor.value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text, MAX_TRACEBACK_CHARS)
        record.exc_info = None  # the (redacted) text is what gets written
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info, MAX_TRACEBACK_CHARS)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, then `event` and any `extra` fields.

    Every string is JSON-escaped with ensure_ascii, so a CR, LF, U+2028 or any other line break in a user's text is
    written as an escape sequence and can never start a forged log line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=True, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The human-readable alternative (`--log-format text`): one line per record with line breaks escaped; a
    traceback follows on lines indented with "  | ", so nothing in it can pass for a record of its own."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            line += " " + json.dumps(extras, ensure_ascii=False, default=str, separators=(",", ":"))
        line = line.translate(_LINE_BREAKS)
        for block in (record.exc_text, record.stack_info):
            if block:
                line += "".join("\n  | " + part for part in block.splitlines())
        return line


_LINE_BREAKS = {ord(ch): repr(ch)[1:-1] for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def build_handler(secrets: Iterable[str] = (), json_lines: bool = True, stream: IO[str] | None = None
                  ) -> logging.Handler:
    """A stream handler (stderr by default) that redacts and then writes JSON lines (or escaped text lines)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    return handler


def configure_logging(level: str | int = "INFO", json_lines: bool = True, secrets: Iterable[str] = (),
                      stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record through one redacting handler on the root logger, replacing any handlers there
    (the command line's plain stderr handler). Used by `policybot serve`."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    handler = build_handler(secrets, json_lines, stream)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    return handler
