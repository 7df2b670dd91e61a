"""Faults injected for real into the running server (create_app, the service, bolt, botbuilder, the store), with
loopback stand-ins for Slack and the Bot Framework at the network edge: a corrupt index, a model that will not
load, a database that is down or locked, a Slack Web API that fails or hangs, a Teams serviceUrl that refuses
connections, and a process killed while saving an index."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from live_server import serving
from slack_stub import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackStub,
    _read_payload,
    all_text,
    event_body,
    message,
    signed_headers,
)
from teams_support import ServiceUrlRecorder, card_texts, unescape
from teams_support import message as teams_message

from bot.adviser import Adviser
from bot.server import create_app
from bot.service import AdviserService
from bot.settings import Secret, Settings
from bot.slack_app import BOLT_APP_KEY
from bot.slack_handlers import NOT_STARTED
from bot.store import Store, questions
from index.store import load_index

REPO = Path(__file__).resolve().parent.parent
LOGO_QUESTION = "can I use the council logo on my website?"
HARASSMENT_QUESTION = "who do I tell if I am being harassed online?"
UNREACHABLE_PG = "postgresql+psycopg2://nobody:nothing@127.0.0.1:9/none"  # nothing listens on the discard port
JSON = "application/json"


# ---------------------------------------------------------------------------------------------- the rig
class SlowChannelStub(SlackStub):
    """The Slack stand-in, plus: chat.postMessage to one channel hangs for `hang_seconds` (longer than the client's
    timeout), and every attempt is counted when it arrives (the base stub records a call only once answered)."""

    def __init__(self, channel: str, hang_seconds: float) -> None:
        super().__init__()
        self.slow_channel = channel
        self.hang_seconds = hang_seconds
        self.slow_attempts: list[float] = []

    async def start(self) -> SlowChannelStub:
        await super().start()
        return self

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["method"] == "chat.postMessage":
            payload = await _read_payload(request)  # aiohttp keeps the body, so the base handler reads it again
            if payload.get("channel") == self.slow_channel:
                self.slow_attempts.append(time.monotonic())
                await asyncio.sleep(self.hang_seconds)
        return await super()._api(request)


@dataclass
class Rig:
    """One running server with both platforms on: Slack (signed requests, a loopback Web API stand-in) and Teams in
    anonymous mode (a loopback serviceUrl recorder)."""

    base_url: str
    app: web.Application
    service: AdviserService
    stub: SlackStub
    recording: ServiceUrlRecorder
    service_url: str
    session: aiohttp.ClientSession

    async def slack(self, event: dict) -> int:
        body = event_body(event)
        async with self.session.post(f"{self.base_url}/slack/events", data=body.encode(),
                                     headers=signed_headers(body, JSON)) as response:
            return response.status

    async def teams(self, text: str, service_url: str | None = None, conversation: str = "a:personal-alex"
                    ) -> tuple[int, float]:
        started = time.monotonic()
        activity = teams_message(text, service_url or self.service_url, conversation_id=conversation)
        async with self.session.post(f"{self.base_url}/api/messages", json=activity) as response:
            return response.status, time.monotonic() - started

    async def health(self) -> tuple[int, dict]:
        async with self.session.get(f"{self.base_url}/healthz") as response:
            return response.status, await response.json()

    def teams_replies(self) -> list[str]:
        return [unescape(card_texts(m["json"]["attachments"][0]["content"])) for m in self.recording.messages()]


@asynccontextmanager
async def running(settings: Settings, adviser: Adviser | None, store: Store | None = None,
                  stub: SlackStub | None = None) -> AsyncIterator[Rig]:
    stub = stub or await SlackStub().start()
    recording = ServiceUrlRecorder()
    settings = replace(settings, slack_bot_token=Secret(BOT_TOKEN), slack_signing_secret=Secret(SIGNING_SECRET),
                       slack_api_url=stub.api_url, teams_allow_anonymous=True)
    service = AdviserService(settings, adviser)
    app = create_app(settings, service, store)
    try:
        async with serving(recording.app()) as service_url, serving(app, access_log=None) as base_url, \
                aiohttp.ClientSession() as session:
            yield Rig(base_url, app, service, stub, recording, service_url + "/", session)
    finally:
        await stub.stop()
        service.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # botbuilder replies with `requests`, which would send loopback traffic to a configured proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


async def eventually(check, timeout: float = 60.0, what: str = "the condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return result


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------- the index
def copy_index(settings: Settings, data_dir: Path) -> Path:
    """A private copy of the session's built index (so it can be damaged without rebuilding it first)."""
    shutil.copytree(settings.index_dir, data_dir / "index")
    return data_dir / "index"


async def test_a_truncated_index_at_start_up_is_detected_rebuilt_and_served(
        adviser: Adviser, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The live build's faiss.index cut to 100 bytes before the server starts: start-up (create_app, then
    service.start) detects it by checksum, logs it, rebuilds, and the server answers from a valid new build."""
    index_dir = copy_index(settings, tmp_path)
    damaged = index_dir / "builds" / (index_dir / "CURRENT").read_text() / "faiss.index"
    damaged.write_bytes(damaged.read_bytes()[:100])
    caplog.set_level(logging.WARNING, logger="index.store")
    async with running(replace(settings, data_dir=tmp_path), None) as rig:
        assert (await rig.health())[0] == 503  # loading: not yet serving
        await asyncio.wait_for(rig.service.start(), 300)
        assert "unusable" in caplog.text and "checksum" in caplog.text
        assert (await rig.health())[0] == 200
        status, _ = await rig.teams(LOGO_QUESTION)
        assert status == 200
        assert "Clause 5.3" in rig.teams_replies()[-1]
    rebuilt = load_index(index_dir)  # verifies every checksum
    assert rebuilt.manifest["built_at"] == rig.service.adviser.index.manifest["built_at"]


def test_a_process_killed_while_saving_an_index_leaves_the_old_one_serving(
        adviser: Adviser, settings: Settings, tmp_path: Path) -> None:
    """A real process is SIGKILLed while it writes a new build (its faiss.index written, nothing made live yet);
    the next start-up (create_app, service.start) loads the previous, complete build without rebuilding and
    answers from it. (tests/test_index.py kills a full rebuild the same way at the index level.)"""
    index_dir = copy_index(settings, tmp_path)
    before = (index_dir / "CURRENT").read_text()
    ready = tmp_path / "ready"
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import faiss\n"
        "from pathlib import Path\n"
        "from index import store\n"
        "real = faiss.write_index\n"
        "def slow(index, path):\n"
        f"    real(index, path); Path({str(ready)!r}).touch(); time.sleep(120)\n"
        "faiss.write_index = slow\n"
        f"store.save_index(store.load_index(Path({str(index_dir)!r})), Path({str(index_dir)!r}))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None, "the saving process exited early"
            assert time.monotonic() < deadline, "the saving process never reached the write"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert list((index_dir / "builds").glob(".*.partial")), "the kill should leave a half-written build behind"
    assert (index_dir / "CURRENT").read_text() == before

    async def start_and_ask() -> str:
        async with running(replace(settings, data_dir=tmp_path), None) as rig:
            await asyncio.wait_for(rig.service.start(), 300)
            assert (await rig.health())[0] == 200
            await rig.teams(LOGO_QUESTION)
            assert rig.service.adviser.index.manifest["built_at"] == adviser.index.manifest["built_at"]
            return rig.teams_replies()[-1]

    assert "Clause 5.3" in asyncio.run(start_and_ask())
    assert (index_dir / "CURRENT").read_text() == before  # served the old build: nothing rebuilt


# ---------------------------------------------------------------------------------------------- the model
def test_policybot_ask_with_an_unloadable_model_exits_2_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    """POLICYBOT_MODEL pointing at an empty folder: `policybot ask` fails fast with exit status 2 and one line on
    stderr that names POLICYBOT_MODEL (the setting to fix), not a traceback, and never hangs on a download."""
    empty = tmp_path / "empty-model"
    empty.mkdir()
    env = {**os.environ, "POLICYBOT_MODEL": str(empty), "POLICYBOT_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "ask", LOGO_QUESTION], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("policybot: ") and "POLICYBOT_MODEL" in lines[0]
    assert result.stdout == ""


async def test_a_server_whose_model_cannot_load_reports_it_at_healthz_and_tells_users(
        settings: Settings, tmp_path: Path) -> None:
    """The same fault in the server: start-up fails within a bounded time (no hang), /healthz answers 503 with
    status "error" and a reason naming POLICYBOT_MODEL, and Slack and Teams users are told the adviser could not
    start (not "ask again in a minute", which would never come true)."""
    empty = tmp_path / "m"
    empty.mkdir()
    async with running(replace(settings, data_dir=tmp_path, model=str(empty)), None) as rig:
        with pytest.raises(Exception, match="POLICYBOT_MODEL"):
            await asyncio.wait_for(rig.service.start(), 120)
        status, body = await rig.health()
        assert (status, body["status"]) == (503, "error")
        assert "POLICYBOT_MODEL" in body.get("error", ""), body
        assert (await rig.teams(LOGO_QUESTION))[0] == 200
        assert "couldn't load the council's policies" in rig.teams_replies()[-1]
        await rig.slack(message(LOGO_QUESTION, ts="1700000300.000001", channel="D0ASKER", channel_type="im"))
        post = (await rig.stub.wait_for("chat.postMessage"))[0]
        assert post.payload["text"] == NOT_STARTED


# ---------------------------------------------------------------------------------------------- the database
def question_rows(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [row.question for row in conn.execute(sa.select(questions.c.question))]


async def test_a_locked_database_never_stops_answers_and_what_was_not_recorded_is_retried(
        adviser: Adviser, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture, write_lock) -> None:
    """While another process holds the database's write lock, Slack and Teams questions are still answered;
    each question that could not be recorded is logged (without its text) and queued in store.pending, and once
    the lock is gone the next question's write records the queued ones too: nothing is silently dropped."""
    database = tmp_path / "records.sqlite3"
    store = Store.open(f"sqlite:///{database}", b"k" * 32, busy_timeout_s=0.3)
    caplog.set_level(logging.WARNING)
    try:
        async with running(replace(settings, data_dir=tmp_path), adviser, store) as rig:
            with write_lock(f"sqlite:///{database}"):
                await rig.slack(message(LOGO_QUESTION, ts="1700000400.000001", channel="D0ASKER",
                                        channel_type="im"))
                post = (await rig.stub.wait_for("chat.postMessage", timeout=30))[0]
                assert "*5.3*" in all_text(post.payload["blocks"])
                assert (await rig.teams(HARASSMENT_QUESTION))[0] == 200
                assert "Clause 7.2" in rig.teams_replies()[-1]
                assert [p.kind for p in store.pending] == ["question", "question"]
                assert question_rows(store) == []
            assert "could not record question" in caplog.text and "queued for retry" in caplog.text
            assert LOGO_QUESTION not in caplog.text and HARASSMENT_QUESTION not in caplog.text

            await rig.slack(message("what about instagram?", ts="1700000400.000002", channel="D0OTHER",
                                    channel_type="im", user="U0OTHER"))
            await rig.stub.wait_for("chat.postMessage", 2, timeout=30)
            await eventually(lambda: not store.pending, 30, "the queued writes to be recorded")
        assert {LOGO_QUESTION, HARASSMENT_QUESTION} <= set(question_rows(store))
        assert len(question_rows(store)) == 3
    finally:
        store.close()


async def test_an_unreachable_database_never_stops_answers(adviser: Adviser, settings: Settings, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """With the database server down (connection refused), Slack and Teams questions are answered (event dedupe
    and the rate limit fall back to allowing), and each unrecorded question is logged and kept in store.pending
    for a later retry, not dropped."""
    store = Store(UNREACHABLE_PG, b"k" * 32, busy_timeout_s=1)  # Store.open would fail: the schema needs a server
    caplog.set_level(logging.WARNING)
    try:
        async with running(replace(settings, data_dir=tmp_path), adviser, store) as rig:
            await rig.slack(message(LOGO_QUESTION, ts="1700000500.000001", channel="D0ASKER", channel_type="im"))
            post = (await rig.stub.wait_for("chat.postMessage", timeout=30))[0]
            assert "*5.3*" in all_text(post.payload["blocks"])
            assert (await rig.teams(HARASSMENT_QUESTION))[0] == 200
            assert "Clause 7.2" in rig.teams_replies()[-1]
        assert [p.row["question"] for p in store.pending] == [LOGO_QUESTION, HARASSMENT_QUESTION]
        assert caplog.text.count("could not record question") == 2
        assert "rate limit store unavailable" in caplog.text  # Slack's fallback, logged
    finally:
        store.engine.dispose()


def test_policy_owner_commands_with_the_database_down_exit_2_with_one_line(tmp_path: Path) -> None:
    """`policybot forget` (a subject-erasure request) against a database that refuses connections fails with exit
    status 2 and one line naming DATABASE_URL, with no traceback and without printing the database password, so
    the officer knows the erasure did not happen and what to fix."""
    env = {**os.environ, "DATABASE_URL": UNREACHABLE_PG.replace("nothing@", "pw-4f9e1c@"),
           "POLICYBOT_DATA_DIR": str(tmp_path), "POLICYBOT_PSEUDONYM_KEY": "k" * 32}
    result = subprocess.run([sys.executable, "-m", "bot.cli", "forget", "U0ASKER"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "DATABASE_URL" in result.stderr and "unavailable" in result.stderr
    assert "pw-4f9e1c" not in result.stderr + result.stdout


# ---------------------------------------------------------------------------------------------- Slack Web API
@pytest.mark.parametrize("status, attempts", [(500, 2), (429, 3)])
async def test_slack_web_api_errors_are_retried_with_backoff_then_logged_and_others_are_served(
        adviser: Adviser, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int,
        attempts: int) -> None:
    """chat.postMessage answering 500 (or 429 with Retry-After: 1) on every attempt: the client retries (once
    after a backoff for 500, twice after Retry-After for 429), then the failure is logged with the method and
    status only; the next user's question is answered normally."""
    caplog.set_level(logging.WARNING)
    async with running(replace(settings, data_dir=tmp_path), adviser) as rig:
        rig.stub.fail("chat.postMessage", status, times=attempts, retry_after=1)
        await rig.slack(message(LOGO_QUESTION, ts="1700000650.000001", channel="D0FAIL", channel_type="im"))
        failed = await rig.stub.wait_for("chat.postMessage", attempts, timeout=30)
        await eventually(lambda: f"chat.postMessage failed (HTTP {status}" in caplog.text, 30, "the failure log")
        assert [c.status for c in failed] == [status] * attempts
        gaps = [b.at - a.at for a, b in zip(failed, failed[1:], strict=False)]
        assert all(gap >= (1.0 if status == 429 else 0.4) for gap in gaps), gaps

        await rig.slack(message(HARASSMENT_QUESTION, ts="1700000650.000002", channel="D0NEXT", channel_type="im",
                                user="U0NEXT"))
        posts = await rig.stub.wait_for("chat.postMessage", attempts + 1, timeout=30)
        assert posts[-1].status == 200 and posts[-1].payload["channel"] == "D0NEXT"
        assert "*7.2*" in all_text(posts[-1].payload["blocks"])
    assert LOGO_QUESTION not in caplog.text


async def test_a_slack_web_api_that_hangs_is_retried_then_logged_and_others_are_still_served(
        adviser: Adviser, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """chat.postMessage to one channel hangs longer than the client's timeout: the call is retried once after a
    backoff, then logged as failed; meanwhile the server acknowledges new events at once, /healthz answers, and
    another user's question is answered while the first is still failing. (500s and 429s are retried the same way:
    see test_slack_e2e's Web API fault tests.)"""
    caplog.set_level(logging.WARNING)
    stub = await SlowChannelStub("D0SLOW", hang_seconds=4).start()
    async with running(replace(settings, data_dir=tmp_path), adviser, stub=stub) as rig:
        rig.app[BOLT_APP_KEY].client.timeout = 1  # the production timeout is 10 s; the behaviour is the same
        await rig.slack(message(LOGO_QUESTION, ts="1700000600.000001", channel="D0SLOW", channel_type="im"))
        await eventually(lambda: stub.slow_attempts, 30, "the first attempt")

        started = time.monotonic()
        assert await rig.slack(message(HARASSMENT_QUESTION, ts="1700000600.000002", channel="D0FINE",
                                       channel_type="im", user="U0FINE")) == 200
        assert time.monotonic() - started < 1.0  # acknowledged at once, though Slack is hanging
        assert (await rig.health())[0] == 200
        fine = await eventually(lambda: [c for c in stub.calls_to("chat.postMessage")
                                         if c.payload.get("channel") == "D0FINE"], 30, "the other answer")
        assert "*7.2*" in all_text(fine[0].payload["blocks"])

        await eventually(lambda: "chat.postMessage failed (TimeoutError)" in caplog.text, 30, "the failure log")
        first, second = stub.slow_attempts
        assert second - first >= 1.0  # the client's timeout, then a backoff, before the retry
        assert fine[0].at < second + 1.0  # the other user did not wait for the failing one
    assert LOGO_QUESTION not in caplog.text


# ---------------------------------------------------------------------------------------------- Teams serviceUrl
async def test_a_teams_service_url_that_refuses_connections_is_logged_and_others_are_served(
        adviser: Adviser, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A conversation whose serviceUrl refuses connections: the reply is retried with backoff (by the Bot
    Framework client), then the failure is logged and the request completes without a 500; a second
    conversation asking at the same time is answered, and the server keeps serving afterwards."""
    caplog.set_level(logging.WARNING)
    dead = f"http://127.0.0.1:{closed_port()}/"
    async with running(replace(settings, data_dir=tmp_path), adviser) as rig:
        failing = asyncio.create_task(rig.teams(LOGO_QUESTION, service_url=dead, conversation="a:dead"))
        await asyncio.sleep(0.5)
        status, took = await rig.teams(HARASSMENT_QUESTION, conversation="a:alive")
        assert status == 200
        assert not failing.done()  # still retrying the dead serviceUrl while the other was answered
        assert "Clause 7.2" in rig.teams_replies()[-1]

        status, took = await asyncio.wait_for(failing, 60)
        assert status == 200  # processed; the Bot Framework must not redeliver a turn that cannot be answered
        assert took >= 1.0  # backoff between the retries
        assert "Teams reply could not be delivered" in caplog.text
        assert "Retrying" in caplog.text  # urllib3's retry with backoff, before giving up
        assert (await rig.teams(LOGO_QUESTION, conversation="a:after"))[0] == 200
        assert "Clause 5.3" in rig.teams_replies()[-1]
        assert all(p["path"].startswith("/v3/conversations/a:") for p in rig.recording.posts)
    assert LOGO_QUESTION not in caplog.text and json.dumps(LOGO_QUESTION) not in caplog.text
