"""Conversation turns in the record store: the follow-up context every server instance shares (SQLite always,
PostgreSQL when POLICYBOT_TEST_POSTGRES_URL names a server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bot.store import SCHEMA_VERSION, Store, conversation_turns, schema_version

KEY = b"conversation-memory-test-key"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores(shared_database_url, clock):
    """Two Store objects on one database: two server instances."""
    opened = [Store.open(shared_database_url, KEY, clock=clock) for _ in range(2)]
    yield opened
    for store in opened:
        store.close()


def test_a_question_remembered_by_one_instance_is_history_on_another(stores):
    first, second = stores
    thread = f"C0GENERAL:{uuid.uuid4().hex}"
    assert second.conversation_history("slack", thread) == []
    first.remember_turn("slack", thread, "U0ASKER", "can I use the council logo on my website?")
    first.remember_turn("slack", thread, "U0OTHER", "what about my blog?")
    assert second.conversation_history("slack", thread) == [
        "can I use the council logo on my website?", "what about my blog?"]
    # other platforms and other threads are separate conversations
    assert second.conversation_history("teams", thread) == []
    assert second.conversation_history("slack", thread + "x") == []


def test_only_the_last_turns_are_kept_and_old_ones_are_not_history(stores, clock):
    store = stores[0]
    thread = f"D0DM:{uuid.uuid4().hex}"
    for n in range(8):
        store.remember_turn("slack", thread, "U0ASKER", f"question {n}", keep=5)
    assert store.conversation_history("slack", thread, limit=10) == [f"question {n}" for n in range(3, 8)]
    assert store.conversation_history("slack", thread, limit=2) == ["question 6", "question 7"]
    clock.now += timedelta(days=8)
    assert store.conversation_history("slack", thread) == []


def test_turns_hold_no_raw_ids_and_go_with_purge_and_forget(stores, clock):
    store = stores[0]
    thread = f"C0GENERAL:{uuid.uuid4().hex}"
    store.remember_turn("slack", thread, "U0SECRETUSER", "first question")
    store.remember_turn("slack", thread, "U0KEEP", "second question")
    key = store.pseudonymise("slack-conversation", thread)
    theirs = sa.select(conversation_turns).where(conversation_turns.c.conversation == key)
    with store.engine.connect() as conn:
        rows = conn.execute(theirs).mappings().all()
    assert len(rows) == 2
    stored = repr([dict(r) for r in rows])
    assert "U0SECRETUSER" not in stored and thread not in stored
    assert store.forget("slack", "U0SECRETUSER")["conversation_turns"] == 1
    assert store.conversation_history("slack", thread) == ["second question"]
    clock.now += timedelta(days=31)
    assert store.purge(30)["conversation_turns"] >= 1
    with store.engine.connect() as conn:  # the database may be shared with other tests: count this thread's rows
        assert conn.execute(theirs).all() == []


def test_a_version_1_database_gains_the_table_at_start_up(tmp_path, clock):
    url = f"sqlite:///{tmp_path}/old.sqlite3"
    with Store.open(url, KEY, clock=clock) as store:
        with store.engine.begin() as conn:
            conversation_turns.drop(conn)
            conn.execute(sa.delete(schema_version))
            conn.execute(sa.insert(schema_version).values(version=1, applied_at=clock.now))
    with Store.open(url, KEY, clock=clock) as store:
        store.remember_turn("teams", "a:conversation", "29:user", "is linkedin covered?")
        assert store.conversation_history("teams", "a:conversation") == ["is linkedin covered?"]
        with store.engine.connect() as conn:
            versions = conn.execute(sa.select(schema_version.c.version)).scalars().all()
    assert sorted(versions) == [1, SCHEMA_VERSION] and SCHEMA_VERSION == 2
