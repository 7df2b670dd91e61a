"""The record store's tables (SQLAlchemy Core): schema only, no connections or state, shared by every Store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

SCHEMA_VERSION = 2  # 2: conversation_turns (follow-up context shared by all instances)


class _UTCDateTime(sa.TypeDecorator):
    """Stores naive UTC in the column and hands back aware UTC, so SQLite and PostgreSQL compare and return alike."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        # Naive datetimes are taken to be UTC already.
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = sa.MetaData()
schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True), sa.Column("applied_at", _UTCDateTime, nullable=False),
)
questions = sa.Table(
    "questions", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("asker", sa.String(32), nullable=False, index=True),
    sa.Column("platform", sa.String(32), nullable=False),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("answered", sa.Boolean, nullable=False),
    sa.Column("top_clause", sa.Text),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("created_at", _UTCDateTime, nullable=False, index=True),
)
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("question_id", sa.Text, primary_key=True),
    sa.Column("asker", sa.String(32), primary_key=True),
    sa.Column("helpful", sa.Boolean, nullable=False),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    sa.Column("created_at", _UTCDateTime, nullable=False),
    sa.Column("updated_at", _UTCDateTime, nullable=False, index=True),
)
tickets = sa.Table(
    "tickets", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False, index=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("clauses", sa.Text, nullable=False),  # JSON list, order kept
    sa.Column("link", sa.Text, nullable=False, default=""),
    sa.Column("destination", sa.Text, nullable=False, default=""),
    sa.Column("notify", sa.Text, nullable=False, default=""),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("asker", sa.String(32), nullable=False, index=True),
    sa.Column("asker_platform", sa.String(32), nullable=False),
    sa.Column("created_at", _UTCDateTime, nullable=False),
    sa.Column("resolved_at", _UTCDateTime),
    sa.Column("resolved_by", sa.String(32)),
)
event_claims = sa.Table(
    "event_claims", metadata,
    sa.Column("platform", sa.String(32), primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("claimed_at", _UTCDateTime, nullable=False, index=True),
)
rate_events = sa.Table(
    "rate_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("asker", sa.String(32), nullable=False),
    sa.Column("created_at", _UTCDateTime, nullable=False, index=True),
    sa.Index("ix_rate_events_asker_created_at", "asker", "created_at"),
)
conversation_turns = sa.Table(
    "conversation_turns", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("platform", sa.String(32), nullable=False),
    sa.Column("conversation", sa.String(32), nullable=False),  # keyed hash of the thread or conversation id
    sa.Column("asker", sa.String(32), nullable=False, index=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("created_at", _UTCDateTime, nullable=False, index=True),
    sa.Index("ix_conversation_turns_conversation", "platform", "conversation", "id"),
)
