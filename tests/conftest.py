"""Shared fixtures: one real Adviser (packaged MiniLM, real FAISS) per test session, on a private data folder."""

from __future__ import annotations

import os
import shutil
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
