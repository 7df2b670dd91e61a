"""Tests for the record store against a real SQLite file, and the same tests against PostgreSQL when
POLICYBOT_TEST_POSTGRES_URL is set (scripts/start-postgres.sh prints one)."""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select

from bot.store import Store, StoreUnavailable, metadata

KEY = b"test-pseudonym-key-0123456789abcdef"
OTHER_KEY = b"another-key-entirely-9876543210fedcba"
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
# Nothing listens on the discard port on loopback, so connecting fails at once.
UNREACHABLE_PG = "postgresql+psycopg2://nobody:nothing@127.0.0.1:9/none"


class Clock:
    """A settable clock so tests can age records without sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        metadata.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        # A folder that does not exist yet: the store must create it.
        yield f"sqlite:///{tmp_path / 'var' / 'records.sqlite3'}"
        return
    url = os.environ.get("POLICYBOT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("POLICYBOT_TEST_POSTGRES_URL not set")
    _reset_postgres(url)
    yield url
    _reset_postgres(url)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_store(db_url: str, clock: Clock) -> Iterator[Callable[..., Store]]:
    """Open Stores on the test database and close them all afterwards."""
    opened: list[Store] = []

    def _open(**kwargs) -> Store:
        kwargs.setdefault("clock", clock)
        store = Store.open(db_url, kwargs.pop("key", KEY), **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., Store]) -> Store:
    return open_store()


def _all_values(store: Store) -> str:
    """Every value in every table, as one string, to search for things that must not be stored."""
    parts: list[str] = []
    with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


def _count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one()


def test_pseudonym_is_keyed_stable_and_never_the_raw_id(store: Store, open_store) -> None:
    """A pseudonym never equals or contains the raw user id, is stable for one key, differs by key and platform,
    and the raw id is stored nowhere after every kind of write."""
    raw = "U0123ABCD"
    p = store.pseudonymise("slack", raw)
    assert p != raw and raw not in p and raw.lower() not in p
    assert len(p) == 32 and int(p, 16) >= 0
    assert p == store.pseudonymise("slack", raw)
    assert p != store.pseudonymise("teams", raw)
    assert p != open_store(key=OTHER_KEY).pseudonymise("slack", raw)
    qid = store.log_question("slack", raw, "May I accept a gift?", True, "5.3", 12.5)
    store.record_feedback(qid, "slack", raw, helpful=False, comment="too vague")
    ticket = store.create_ticket("slack", raw, "monitoring officer", "May I accept a gift?", ["5.3"],
                                 notify="slack:D999")
    store.resolve_ticket(ticket.id, "slack", "U0RESOLVER")
    assert store.allow_question("slack", raw, limit=5)
    dump = _all_values(store)
    assert raw not in dump and "U0RESOLVER" not in dump
    assert p in dump


def test_ticket_lifecycle_survives_reopening(store: Store, open_store, clock: Clock) -> None:
    """A ticket opens, is listed, resolves once (a second resolve changes nothing), unknown ids give None, and its
    state survives opening a new Store on the same database."""
    ticket = store.create_ticket("teams", "29:abc", "chief executive", "Can I speak to the press?", ["7.1", "7.2"],
                                 link="https://example.invalid/q", destination="slack:C01", notify="teams:conv-1")
    assert ticket.status == "open" and ticket.clauses == ("7.1", "7.2") and ticket.resolved_at is None
    assert ticket.asker == store.pseudonymise("teams", "29:abc") and ticket.asker_platform == "teams"
    assert ticket.notify == ticket.asker_user_ref == "teams:conv-1"
    assert [t.id for t in store.open_tickets()] == [ticket.id]
    assert [t.id for t in store.open_tickets(role="chief executive")] == [ticket.id]
    assert store.open_tickets(role="monitoring officer") == []

    clock.advance(hours=3)
    resolved, changed = store.resolve_ticket_once(ticket.id, "slack", "U0BOSS")
    assert changed and resolved is not None
    assert resolved.status == "resolved" and resolved.resolved_at == T0 + timedelta(hours=3)
    clock.advance(hours=1)
    again = store.resolve_ticket(ticket.id, "slack", "U0OTHER")
    assert again == resolved  # no-op: same resolver, same time
    assert store.resolve_ticket_once(ticket.id, "slack", "U0OTHER") == (resolved, False)
    assert store.resolve_ticket("no-such-ticket", "slack", "U0BOSS") is None
    assert store.get_ticket("no-such-ticket") is None
    assert store.open_tickets() == []
    store.close()

    reopened = open_store()
    loaded = reopened.get_ticket(ticket.id)
    assert loaded == resolved
    assert loaded.created_at.tzinfo is not None and loaded.created_at == T0
    assert reopened.open_tickets() == []


def test_feedback_second_click_updates(store: Store) -> None:
    """One feedback per (question, user): a second click replaces the first instead of adding a row."""
    qid = store.log_question("slack", "U1", "Who approves overtime?", True, "4.2", 30.0)
    store.record_feedback(qid, "slack", "U1", helpful=True)
    store.record_feedback(qid, "slack", "U1", helpful=False, comment="wrong clause")
    store.record_feedback(qid, "slack", "U2", helpful=True)
    assert _count(store, "feedback") == 2
    unhelpful = store.report().unhelpful
    assert len(unhelpful) == 1
    assert (unhelpful[0].question, unhelpful[0].top_clause, unhelpful[0].comment) == (
        "Who approves overtime?", "4.2", "wrong clause")


def test_claim_event_true_once_across_instances(store: Store, open_store) -> None:
    """Only the first claim of an event id ever succeeds, including from a second Store on the same database, so
    a retried chat event is never answered twice."""
    other = open_store()
    assert store.claim_event("slack", "Ev001") is True
    assert store.claim_event("slack", "Ev001") is False
    assert other.claim_event("slack", "Ev001") is False
    assert other.claim_event("teams", "Ev001") is True  # ids are per platform
    assert other.claim_event("slack", "Ev002") is True
    assert store.claim_event("slack", "Ev002") is False


def _claim_many(url: str, ids: list[str]) -> int:
    store = Store(url, KEY)
    try:
        return sum(store.claim_event("slack", i) for i in ids)
    finally:
        store.close()


def test_claim_event_atomic_across_processes(store: Store, db_url: str) -> None:
    """Several processes racing to claim the same event ids win each id exactly once between them."""
    ids = [f"Ev{i:03d}" for i in range(40)]
    ctx = multiprocessing.get_context("spawn")  # no inherited connections
    with ctx.Pool(3) as pool:
        wins = pool.starmap(_claim_many, [(db_url, ids)] * 3)
    assert sum(wins) == len(ids)
    assert _count(store, "event_claims") == len(ids)


def test_rate_limit_counts_per_user_and_window(store: Store, open_store, clock: Clock) -> None:
    """A user gets `limit` questions per window, shared across Store instances; other users are unaffected and the
    allowance returns once the window has passed."""
    other = open_store()
    assert store.allow_question("slack", "U1", limit=3)
    assert other.allow_question("slack", "U1", limit=3)
    assert store.allow_question("slack", "U1", limit=3)
    assert not other.allow_question("slack", "U1", limit=3)
    assert not store.allow_question("slack", "U1", limit=3)
    assert store.allow_question("slack", "U2", limit=3)
    clock.advance(seconds=61)
    assert store.allow_question("slack", "U1", limit=3)


def test_purge_removes_old_text_keeps_recent(store: Store, clock: Clock) -> None:
    """Purge deletes question text (and its feedback), resolved tickets, event claims and rate events older than
    their retention, and keeps recent records and open tickets."""
    old_q = store.log_question("slack", "U1", "Old question about expenses", False, None, 10)
    store.record_feedback(old_q, "slack", "U1", helpful=False, comment="old comment")
    store.claim_event("slack", "EvOld")
    store.allow_question("slack", "U1", limit=5)
    old_open = store.create_ticket("slack", "U1", "s151 officer", "Old open question", [])
    old_done = store.create_ticket("slack", "U1", "s151 officer", "Old resolved question", [])
    store.resolve_ticket(old_done.id, "slack", "U9")
    store.remember_turn("slack", "C1:1.0", "U1", "Old question about expenses")
    clock.advance(days=40)
    new_q = store.log_question("slack", "U1", "New question about leave", True, "3.1", 10)
    store.record_feedback(new_q, "slack", "U1", helpful=False, comment="new comment")

    counts = store.purge(30)
    assert counts == {"feedback": 1, "questions": 1, "conversation_turns": 1, "tickets": 1, "event_claims": 1,
                      "rate_events": 1}
    dump = _all_values(store)
    assert "Old question about expenses" not in dump and "old comment" not in dump
    assert "Old resolved question" not in dump
    assert "New question about leave" in dump and "new comment" in dump
    assert store.get_ticket(old_open.id) is not None
    assert store.claim_event("slack", "EvOld") is True  # the claim is gone
    assert store.purge(30) == dict.fromkeys(counts, 0)


def test_forget_removes_one_user_only(store: Store) -> None:
    """Forgetting a user deletes their questions, feedback, tickets and rate events, and leaves another user's."""
    for user in ("UA", "UB"):
        qid = store.log_question("slack", user, f"question from {user}", False, None, 5)
        store.record_feedback(qid, "slack", user, helpful=False, comment=f"comment from {user}")
        store.create_ticket("slack", user, "monitoring officer", f"ticket from {user}", ["1"])
        store.allow_question("slack", user, limit=5)
    counts = store.forget("slack", "UA")
    assert counts["questions"] == counts["feedback"] == counts["tickets"] == counts["rate_events"] == 1
    dump = _all_values(store)
    assert "from UA" not in dump and store.pseudonymise("slack", "UA") not in dump
    assert "question from UB" in dump and "comment from UB" in dump and "ticket from UB" in dump
    assert _count(store, "rate_events") == 1


def test_report_groups_similar_and_counts_escalations(store: Store, clock: Clock) -> None:
    """The report groups near-identical unanswered questions, lists unhelpful answers, counts escalations per role
    with the median resolution time, ranks cited clauses, and renders as text, JSON and CSV."""
    store.log_question("slack", "U1", "Can I accept a gift from a supplier?", False, None, 5)
    store.log_question("slack", "U2", "can i accept gifts from a supplier", False, None, 5)
    store.log_question("slack", "U3", "Can I accept a gift from a supplier?", False, None, 5)
    store.log_question("slack", "U4", "What is the lone working procedure?", False, None, 5)
    for clause in ("5.3", "5.3", "2.1"):
        qid = store.log_question("slack", "U5", f"answered about {clause}", True, clause, 5)
    store.record_feedback(qid, "slack", "U5", helpful=False, comment="missed the point")
    durations = (2, 4)
    ids = [store.create_ticket("slack", "U1", "monitoring officer", "q", []).id for _ in range(3)]
    for ticket_id, hours in zip(ids, durations, strict=False):
        clock.advance(hours=hours)
        store.resolve_ticket(ticket_id, "slack", "U9")
    store.create_ticket("slack", "U2", "chief executive", "q2", [])

    report = store.report()
    assert report.questions_total == 7 and report.questions_answered == 3
    assert [(g.text, g.count) for g in report.unanswered] == [
        ("Can I accept a gift from a supplier?", 3), ("What is the lone working procedure?", 1)]
    assert report.unanswered[0].variants == ("Can I accept a gift from a supplier?",
                                             "can i accept gifts from a supplier")
    assert [(u.question, u.top_clause, u.comment) for u in report.unhelpful] == [
        ("answered about 2.1", "2.1", "missed the point")]
    by_role = {e.role: e for e in report.escalations}
    assert (by_role["monitoring officer"].open, by_role["monitoring officer"].resolved) == (1, 2)
    # Resolved after 2h and after 2h+4h: median of 2 and 6 hours.
    assert by_role["monitoring officer"].median_resolution_hours == pytest.approx(4.0)
    assert (by_role["chief executive"].open, by_role["chief executive"].median_resolution_hours) == (1, None)
    assert [(c.clause, c.count) for c in report.top_clauses] == [("5.3", 2), ("2.1", 1)]

    text_out = report.to_text()
    assert "3 x Can I accept a gift from a supplier?" in text_out and "missed the point" in text_out
    assert report.to_json()["escalations"][1]["resolved"] == 2
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert {r["section"] for r in rows} == {"unanswered", "unhelpful", "escalations", "top_clauses"}
    assert sum(r["section"] == "unanswered" for r in rows) == 2

    later = store.report(since=clock.now + timedelta(seconds=1))
    assert later.questions_total == 0 and later.unanswered == () and later.escalations == ()
    singletons = store.report(group=lambda texts: list(range(len(texts))))
    assert len(singletons.unanswered) == 4


def test_report_csv_neutralises_formulas(store: Store) -> None:
    """Question text is user input: in the CSV a cell that a spreadsheet would run as a formula is quoted."""
    store.log_question("slack", "U1", '=HYPERLINK("http://evil.invalid","x")', False, None, 5)
    rows = list(csv.DictReader(io.StringIO(store.report().to_csv())))
    assert rows[0]["text"] == "'=HYPERLINK(\"http://evil.invalid\",\"x\")"


def test_locked_database_queues_writes_and_flushes_later(
    open_store, db_url: str, caplog: pytest.LogCaptureFixture, write_lock
) -> None:
    """When another connection holds a write lock, logging a question and feedback does not raise but queues them
    in `pending` (logging the failure without the question text); other writes raise StoreUnavailable; the next
    write after the lock is gone records the queue."""
    store = open_store(busy_timeout_s=0.3)
    with write_lock(db_url), caplog.at_level("DEBUG", logger="bot.store"):
        qid = store.log_question("slack", "U1", "Queued while locked", False, None, 5)
        store.record_feedback(qid, "slack", "U1", helpful=False, comment="queued too")
        assert [p.kind for p in store.pending] == ["question", "feedback"]
        with pytest.raises(StoreUnavailable) as raised:
            store.create_ticket("slack", "U1", "monitoring officer", "Ticket while locked", [])
    assert "could not record question" in caplog.text
    assert "while locked" not in caplog.text and "while locked" not in str(raised.value.__cause__)
    store.log_question("slack", "U2", "After the lock", True, "1.1", 5)
    assert not store.pending
    dump = _all_values(store)
    assert "Queued while locked" in dump and "queued too" in dump and "After the lock" in dump


def test_unreachable_database_bounded_queue(caplog: pytest.LogCaptureFixture) -> None:
    """With the database server unreachable, question logging keeps answering (queues, oldest dropped when the
    bounded queue is full, no question text in the log); reads and other writes raise StoreUnavailable."""
    store = Store(UNREACHABLE_PG, KEY, busy_timeout_s=1, pending_max=2)
    try:
        with caplog.at_level("INFO", logger="bot.store"):
            ids = [store.log_question("slack", "U1", f"secret text {i}", False, None, 5) for i in range(3)]
        assert [p.row["id"] for p in store.pending] == ids[1:]
        assert "secret text" not in caplog.text and "could not record question" in caplog.text
        assert store.flush_pending() == 0
        with pytest.raises(StoreUnavailable):
            store.allow_question("slack", "U1", limit=3)
        with pytest.raises(StoreUnavailable):
            store.open_tickets()
        # Forgetting still drops the user's queued rows even though the database part must be retried.
        with pytest.raises(StoreUnavailable):
            store.forget("slack", "U1")
        assert not store.pending
    finally:
        store.engine.dispose()


def test_key_must_be_bytes() -> None:
    """An empty or text key is refused, since HMAC with an empty key would make pseudonyms guessable."""
    with pytest.raises(ValueError):
        Store("sqlite://", b"")
    with pytest.raises(ValueError):
        Store("sqlite://", "text-key")  # type: ignore[arg-type]
