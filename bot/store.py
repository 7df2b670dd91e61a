"""The record store: question log, feedback, escalation tickets, chat-event dedupe and rate limits in SQLite or
PostgreSQL, keyed by pseudonyms so raw chat user ids are never stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from bot.store_report import GroupFn, Report, collect_report
from bot.store_schema import (  # noqa: F401 - tables re-exported for callers and tests
    SCHEMA_VERSION,
    conversation_turns,
    event_claims,
    feedback,
    metadata,
    questions,
    rate_events,
    schema_version,
    tickets,
)

log = logging.getLogger(__name__)

EVENT_CLAIM_DAYS = 2  # chat platforms retry within minutes; two days is ample
RATE_EVENT_DAYS = 1  # allow_question windows longer than this are not supported


class StoreUnavailable(Exception):
    """The database could not be reached or was locked; wraps the SQLAlchemy error as __cause__."""


@dataclass(frozen=True)
class Ticket:
    """An escalation ticket. `asker` is the asker's pseudonym; `notify` is the opaque channel reference the caller gave
    (e.g. "slack:D123", a DM channel, not a user id) for telling the asker when it is resolved."""

    id: str
    role: str
    question: str
    clauses: tuple[str, ...]
    link: str
    destination: str
    status: str  # open | resolved
    asker: str
    asker_platform: str
    notify: str
    created_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None  # resolver's pseudonym

    @property
    def asker_user_ref(self) -> str:
        """Alias of `notify`: the only way back to the asker the store holds."""
        return self.notify


@dataclass(frozen=True)
class PendingWrite:
    """A question-log or feedback write that failed and waits in Store.pending for flush_pending()."""

    kind: str  # question | feedback
    row: dict[str, Any] = field(hash=False)


class Store:
    """Record store over one SQLAlchemy URL; Store.open() also creates the schema. Question-log and feedback writes
    never raise when the database is unavailable: they queue in `pending` and are retried at the next write; every
    other method raises StoreUnavailable."""

    def __init__(
        self, url: str, pseudonym_key: bytes, *, busy_timeout_s: float = 5.0,
        pending_max: int = 1000, clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(pseudonym_key, bytes) or not pseudonym_key:
            raise ValueError("pseudonym_key must be non-empty bytes (32 random bytes recommended)")
        self._key = pseudonym_key
        self._clock = clock or (lambda: datetime.now(UTC))
        self.pending: deque[PendingWrite] = deque(maxlen=pending_max)
        self._flush_lock = threading.Lock()
        self.engine: Engine = _make_engine(url, busy_timeout_s)

    @classmethod
    def open(cls, url: str, pseudonym_key: bytes, **kwargs: Any) -> Store:
        """Construct a Store and create any missing tables, recording the schema version."""
        store = cls(url, pseudonym_key, **kwargs)
        store.create_schema()
        return store

    def create_schema(self) -> None:
        """Create missing tables; safe when several processes start at once against one database."""
        for attempt in (1, 2):
            try:
                with self._tx() as conn:
                    metadata.create_all(conn)
                break
            except (StoreUnavailable, SQLAlchemyError):
                # Another process may have created the same table between our check and create.
                if attempt == 2:
                    raise
        with self._tx() as conn:
            found = conn.execute(select(func.max(schema_version.c.version))).scalar()
        if found is None or found < SCHEMA_VERSION:  # create_all above added the newer tables
            try:
                with self._tx() as conn:
                    conn.execute(insert(schema_version).values(version=SCHEMA_VERSION, applied_at=self._now()))
            except IntegrityError:
                pass  # another process recorded it first
        elif found > SCHEMA_VERSION:
            log.warning("database schema version %s is newer than this code (%s)", found, SCHEMA_VERSION)

    def close(self) -> None:
        """Try once more to write pending records, then release all connections."""
        self.flush_pending()
        if self.pending:
            log.warning("closing store with %d unrecorded question/feedback writes", len(self.pending))
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pseudonymise(self, platform: str, user_id: str) -> str:
        """Keyed HMAC-SHA256 of "platform:user_id", hex, first 32 chars: stable per key, not reversible without it."""
        return hmac.new(self._key, f"{platform}:{user_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def log_question(
        self, platform: str, user_id: str, question: str, answered: bool, top_clause: str | None,
        latency_ms: float, question_id: str | None = None,
    ) -> str:
        """Record a question and its outcome; returns its id (uuid4 hex unless given). Queues instead of raising if the
        database is unavailable."""
        qid = question_id or uuid.uuid4().hex
        row = {
            "id": qid, "asker": self.pseudonymise(platform, user_id), "platform": platform, "question": question,
            "answered": answered, "top_clause": top_clause, "latency_ms": float(latency_ms), "created_at": self._now(),
        }
        self._write_or_queue(PendingWrite("question", row))
        return qid

    def record_feedback(self, question_id: str, platform: str, user_id: str, helpful: bool, comment: str = "") -> None:
        """Record a user's helpful/unhelpful click; a second click by the same user on the same question replaces the
        first."""
        now = self._now()
        row = {"question_id": question_id, "asker": self.pseudonymise(platform, user_id), "helpful": helpful,
               "comment": comment, "created_at": now, "updated_at": now}
        self._write_or_queue(PendingWrite("feedback", row))

    def flush_pending(self) -> int:
        """Retry queued writes in order; returns how many were written. Stops quietly at the first that still fails."""
        if not self.pending or not self._flush_lock.acquire(blocking=False):
            return 0  # nothing to do, or another thread is already flushing
        written = 0
        try:
            while self.pending:
                item = self.pending[0]
                try:
                    self._write(item)
                    written += 1
                except StoreUnavailable:
                    break
                except SQLAlchemyError as exc:
                    # A write that can never succeed must not block the queue forever.
                    log.error("dropping unrecordable %s write: %s", item.kind, type(exc).__name__)
                # A full deque drops from the left on append, so only pop what we wrote.
                if self.pending and self.pending[0] is item:
                    self.pending.popleft()
        finally:
            self._flush_lock.release()
        if written:
            log.info("recorded %d previously queued writes; %d still pending", written, len(self.pending))
        return written

    def _write_or_queue(self, item: PendingWrite) -> None:
        self.flush_pending()
        if not self.pending:
            try:
                self._write(item)
                return
            except StoreUnavailable as exc:
                # The driver's one-line reason only: SQLAlchemy's full message would quote the question text.
                log.warning("could not record %s (%s); queued for retry", item.kind, exc)
            except SQLAlchemyError as exc:
                # Retrying cannot fix a rejected row, and answering must go on regardless.
                log.error("could not record %s: %s", item.kind, type(exc).__name__)
                return
        else:
            # Queue behind earlier failures to keep order and avoid a second lock wait; still say so, since an
            # unrecorded question must never pass unnoticed.
            log.warning("could not record %s (%d earlier writes still pending); queued for retry", item.kind,
                        len(self.pending))
        if len(self.pending) == self.pending.maxlen:
            log.warning("pending queue full (%d); dropping the oldest unrecorded write", self.pending.maxlen)
        self.pending.append(item)

    def _write(self, item: PendingWrite) -> None:
        # Plain transactions, no SAVEPOINTs: pysqlite's savepoint handling is unreliable.
        row = item.row
        if item.kind == "question":
            try:
                with self._tx() as conn:
                    conn.execute(insert(questions).values(**row))
            except IntegrityError:
                log.info("question %s already recorded", row["id"])  # e.g. committed before a lost reply
            return
        changes = {k: row[k] for k in ("helpful", "comment", "updated_at")}
        match = (feedback.c.question_id == row["question_id"]) & (feedback.c.asker == row["asker"])
        try:
            with self._tx() as conn:
                if conn.execute(update(feedback).where(match).values(**changes)).rowcount == 0:
                    conn.execute(insert(feedback).values(**row))
        except IntegrityError:  # a concurrent first click won the insert; ours is the later one
            with self._tx() as conn:
                conn.execute(update(feedback).where(match).values(**changes))

    def remember_turn(self, platform: str, conversation: str, user_id: str, question: str, keep: int = 5) -> None:
        """Remember a question asked in a conversation (a Slack thread or DM, a Teams conversation), so that any
        instance can read a later follow-up in its light; only the last `keep` per conversation are kept. Raises
        StoreUnavailable: the caller decides whether an answer without context is acceptable (it is)."""
        match, key = self._conversation(platform, conversation)
        with self._tx() as conn:
            conn.execute(insert(conversation_turns).values(
                platform=platform, conversation=key, asker=self.pseudonymise(platform, user_id),
                question=question, created_at=self._now()))
            newest = conn.execute(select(conversation_turns.c.id).where(match).order_by(
                conversation_turns.c.id.desc()).limit(keep)).scalars().all()
            if len(newest) == keep:
                conn.execute(delete(conversation_turns).where(match & (conversation_turns.c.id < newest[-1])))

    def conversation_history(self, platform: str, conversation: str, limit: int = 5,
                             max_age: timedelta = timedelta(days=7)) -> list[str]:
        """The last `limit` questions of a conversation, oldest first, none older than `max_age` (a question
        asked in a Teams chat next week is not a follow-up to today's). Empty if the conversation is unknown."""
        match, _ = self._conversation(platform, conversation)
        match &= conversation_turns.c.created_at >= self._now() - max_age
        with self._tx() as conn:
            rows = conn.execute(select(conversation_turns.c.question).where(match).order_by(
                conversation_turns.c.id.desc()).limit(limit)).scalars().all()
        return list(reversed(rows))

    def _conversation(self, platform: str, conversation: str) -> tuple[Any, str]:
        """The WHERE clause selecting one conversation's turns, and its stored key (a keyed hash of its id)."""
        key = self.pseudonymise(f"{platform}-conversation", conversation)
        return (conversation_turns.c.platform == platform) & (conversation_turns.c.conversation == key), key

    def create_ticket(
        self, platform: str, user_id: str, role: str, question: str, clauses: list[str],
        link: str = "", destination: str = "", notify: str = "",
    ) -> Ticket:
        """Open an escalation ticket. `notify` is where to tell the asker of resolution (a channel/conversation
        reference such as "slack:D123"), never a user id."""
        self.flush_pending()
        row = {
            "id": uuid.uuid4().hex, "role": role, "question": question, "clauses": json.dumps(list(clauses)),
            "link": link, "destination": destination, "notify": notify, "status": "open",
            "asker": self.pseudonymise(platform, user_id), "asker_platform": platform, "created_at": self._now(),
        }
        with self._tx() as conn:
            conn.execute(insert(tickets).values(**row))
        return _ticket({**row, "resolved_at": None, "resolved_by": None})

    def resolve_ticket(self, ticket_id: str, resolver_platform: str, resolver_user_id: str) -> Ticket | None:
        """Mark a ticket resolved; resolving again changes nothing and returns it; unknown id gives None."""
        return self.resolve_ticket_once(ticket_id, resolver_platform, resolver_user_id)[0]

    def resolve_ticket_once(self, ticket_id: str, resolver_platform: str, resolver_user_id: str
                            ) -> tuple[Ticket | None, bool]:
        """Like resolve_ticket, also saying whether this call made the change, so only one of two racing resolvers
        notifies the asker."""
        self.flush_pending()
        with self._tx() as conn:
            changed = conn.execute(
                update(tickets).where((tickets.c.id == ticket_id) & (tickets.c.status == "open")).values(
                    status="resolved", resolved_at=self._now(),
                    resolved_by=self.pseudonymise(resolver_platform, resolver_user_id),
                )
            ).rowcount == 1
            row = conn.execute(select(tickets).where(tickets.c.id == ticket_id)).mappings().first()
        return (_ticket(row) if row else None), changed

    def get_ticket(self, ticket_id: str) -> Ticket | None:
        with self._tx() as conn:
            row = conn.execute(select(tickets).where(tickets.c.id == ticket_id)).mappings().first()
        return _ticket(row) if row else None

    def open_tickets(self, role: str | None = None) -> list[Ticket]:
        """Open tickets, oldest first, optionally for one role."""
        query = select(tickets).where(tickets.c.status == "open").order_by(tickets.c.created_at, tickets.c.id)
        if role is not None:
            query = query.where(tickets.c.role == role)
        with self._tx() as conn:
            return [_ticket(r) for r in conn.execute(query).mappings()]

    def claim_event(self, platform: str, event_id: str) -> bool:
        """True only for the first caller ever (in any process) to claim this event; the primary key makes it atomic."""
        try:
            with self._tx() as conn:
                conn.execute(insert(event_claims).values(platform=platform, event_id=event_id, claimed_at=self._now()))
        except IntegrityError:
            return False
        return True

    def allow_question(self, platform: str, user_id: str, limit: int, window_seconds: int = 60) -> bool:
        """True, and the attempt is counted, if this user asked fewer than `limit` questions in the window (across all
        instances); best-effort under exact races."""
        asker = self.pseudonymise(platform, user_id)
        now = self._now()
        with self._tx() as conn:
            recent = conn.execute(
                select(func.count()).select_from(rate_events).where(
                    (rate_events.c.asker == asker)
                    & (rate_events.c.created_at > now - timedelta(seconds=window_seconds))
                )
            ).scalar_one()
            if recent >= limit:
                return False
            conn.execute(insert(rate_events).values(asker=asker, created_at=now))
        return True

    def purge(self, retention_days: int, now: datetime | None = None) -> dict[str, int]:
        """Delete question-log rows (with their feedback) and resolved tickets older than the retention, plus stale
        event claims and rate events; returns rows deleted per table. Open tickets are kept."""
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        now = now or self._now()
        cutoff = now - timedelta(days=retention_days)
        old_questions = select(questions.c.id).where(questions.c.created_at < cutoff)
        with self._tx() as conn:
            counts = {
                "feedback": conn.execute(delete(feedback).where(
                    feedback.c.question_id.in_(old_questions) | (feedback.c.updated_at < cutoff))).rowcount,
                "questions": conn.execute(delete(questions).where(questions.c.created_at < cutoff)).rowcount,
                "conversation_turns": conn.execute(delete(conversation_turns).where(
                    conversation_turns.c.created_at < cutoff)).rowcount,
                "tickets": conn.execute(delete(tickets).where(
                    (tickets.c.status == "resolved") & (tickets.c.resolved_at < cutoff))).rowcount,
                "event_claims": conn.execute(delete(event_claims).where(
                    event_claims.c.claimed_at < now - timedelta(days=EVENT_CLAIM_DAYS))).rowcount,
                "rate_events": conn.execute(delete(rate_events).where(
                    rate_events.c.created_at < now - timedelta(days=RATE_EVENT_DAYS))).rowcount,
            }
        log.info("purged records older than %d days: %s", retention_days, counts)
        return counts

    def forget(self, platform: str, user_id: str) -> dict[str, int]:
        """Delete everything held about one user: their questions, feedback given by them or on their questions,
        tickets they raised, rate events and queued writes; their pseudonym is also cleared from tickets they
        resolved."""
        asker = self.pseudonymise(platform, user_id)
        with self._flush_lock:  # no flush may write this user's queued rows while we drop them
            before = len(self.pending)
            kept = [p for p in self.pending if p.row.get("asker") != asker]
            self.pending.clear()
            self.pending.extend(kept)
        theirs = select(questions.c.id).where(questions.c.asker == asker)
        with self._tx() as conn:
            counts = {
                "feedback": conn.execute(delete(feedback).where(
                    (feedback.c.asker == asker) | feedback.c.question_id.in_(theirs))).rowcount,
                "questions": conn.execute(delete(questions).where(questions.c.asker == asker)).rowcount,
                "conversation_turns": conn.execute(delete(conversation_turns).where(
                    conversation_turns.c.asker == asker)).rowcount,
                "tickets": conn.execute(delete(tickets).where(tickets.c.asker == asker)).rowcount,
                "rate_events": conn.execute(delete(rate_events).where(rate_events.c.asker == asker)).rowcount,
                "tickets_resolver_cleared": conn.execute(update(tickets).where(
                    tickets.c.resolved_by == asker).values(resolved_by=None)).rowcount,
            }
        counts["pending"] = before - len(kept)
        log.info("forgot one user: %s", counts)
        return counts

    def report(self, since: datetime | None = None, group: GroupFn | None = None, top_clauses: int = 20) -> Report:
        """Build the policy owner's report for records from `since` (all if None); `group` overrides how
        unanswered questions are grouped (see store_report.group_similar for the default)."""
        with self._tx() as conn:
            return collect_report(conn, questions, feedback, tickets, since=since, now=self._now(), group=group,
                                  top_clauses=top_clauses)

    def _now(self) -> datetime:
        return self._clock()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One transaction; connection-level failures (unreachable, locked, read-only) become StoreUnavailable."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(str(exc.orig or exc).splitlines()[0]) from exc


def _ticket(row: Any) -> Ticket:
    # Column names match the dataclass fields; only the JSON clause list needs decoding.
    return Ticket(**{**dict(row), "clauses": tuple(json.loads(row["clauses"]))})


def _make_engine(url: str, busy_timeout_s: float) -> Engine:
    """Create the engine, with hide_parameters so question text stays out of error messages. SQLite gets its folder,
    WAL and a busy timeout so processes can share a file; PostgreSQL gets a lock timeout so a blocked write fails
    instead of hanging an answer."""
    if url.startswith("postgres://"):  # the scheme many hosts hand out; SQLAlchemy 2 only knows postgresql://
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg2":
            args = {"connect_timeout": max(1, round(busy_timeout_s)),
                    "options": f"-c lock_timeout={int(busy_timeout_s * 1000)}"}
            args = {k: v for k, v in args.items() if k not in parsed.query}  # the URL's own settings win
        return create_engine(url, pool_pre_ping=True, hide_parameters=True, connect_args=args)
    database = parsed.database or ""
    memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if memory:
        # One shared connection, or each checkout would see its own empty database.
        engine = create_engine(url, poolclass=StaticPool, hide_parameters=True,
                               connect_args={"check_same_thread": False})
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, hide_parameters=True,
                               connect_args={"timeout": busy_timeout_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if not memory:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; only the last commits risk a power cut
        cur.close()

    return engine
