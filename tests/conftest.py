"""Shared fixtures: one real Adviser (packaged MiniLM, real FAISS) per test session, on a private data folder."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO / "policy_text"
BENCH_POLICIES = REPO.parent / "shared" / "bench" / "policies"
SEED_POLICY = POLICY_DIR / "social-media-policy-for-councillors.txt"


@pytest.fixture(scope="session")
def encoder():
    from index.embedder import load_encoder

    return load_encoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    from bot.settings import Settings

    data = tmp_path_factory.mktemp("data")
    return Settings(policy_dir=POLICY_DIR, data_dir=data)


@pytest.fixture(scope="session")
def adviser(settings, encoder):
    from bot.adviser import Adviser

    return Adviser.load(settings, encoder=encoder)


@pytest.fixture
def policy_copy(tmp_path) -> Path:
    """A private copy of policy_text/ that a test may edit."""
    target = tmp_path / "policy_text"
    shutil.copytree(POLICY_DIR, target)
    return target


@contextmanager
def _database_write_lock(url: str) -> Iterator[None]:
    """Another connection holding a lock that blocks every write the store makes (SQLite's exclusive lock, or a
    PostgreSQL ACCESS EXCLUSIVE lock on the store's tables)."""
    if url.startswith("sqlite"):
        lock = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE questions, feedback, tickets IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


@pytest.fixture
def write_lock() -> Callable[[str], AbstractContextManager[None]]:
    """`with write_lock(database_url):` another connection blocks every write the store tries."""
    return _database_write_lock


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_database_url(request, tmp_path) -> str:
    """A database several Store objects or server processes share: a SQLite file always, and the PostgreSQL
    server named by POLICYBOT_TEST_POSTGRES_URL when there is one (`.ci/run` starts one)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.sqlite3"
    url = os.environ.get("POLICYBOT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("POLICYBOT_TEST_POSTGRES_URL not set")
    return url
