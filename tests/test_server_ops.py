"""Running the server: structured and redacted JSON logs, /metrics, health and readiness, and the policy watcher
(debounced reloads, the CURRENT pointer, failures that leave the old index serving). In-process, with the real
adviser, bolt app and aiohttp server; a loopback Slack stand-in at the network edge."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from botbuilder.core.adapters import TestAdapter
from botbuilder.schema import Activity, ChannelAccount, ConversationAccount
from live_server import metric
from slack_stub import (
    BOT_TOKEN,
    SIGNING_SECRET,
    StubbedServer,
    event_body,
    mention,
    message,
    running_with_stub,
    signed_headers,
)

from bot.adviser import Adviser
from bot.logs import REDACTED, build_handler, settings_secrets
from bot.reload import PolicyWatcher, current_build
from bot.server import AccessLogger, add_background, create_app
from bot.service import AdviserService
from bot.settings import Secret, Settings
from bot.store import Store, questions
from bot.teams import TEAMS_ENDPOINT_KEY
from index.store import save_index

JSON = "application/json"
LOGO_QUESTION = "can I use the council logo on my website?"
OFF_TOPIC_QUESTION = "When is my bin collected?"
POLICY_FILE = "social-media-policy-for-councillors.txt"
LOGO_SENTENCE = "should only occur with the written permission of the chief executive."


# ---------------------------------------------------------------------------------------------- helpers
@contextmanager
def captured_logs(secrets: list[str] = ()) -> Iterator[io.StringIO]:
    """Every record from every logger, at INFO and above, through the server's own redacting JSON handler."""
    stream = io.StringIO()
    handler = build_handler(secrets, json_lines=True, stream=stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def eventually(check, timeout: float = 30.0, what: str = "condition"):  # noqa: ANN001, ANN201
    """Wait (generously) for an async or plain check to return something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Server(StubbedServer):
    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.base_url + path) as response:
            return response.status, await response.text()

    async def slack_event(self, event: dict, path: str = "/slack/events") -> int:
        body = event_body(event)
        async with self.session.post(self.base_url + path, data=body.encode(),
                                     headers=signed_headers(body, JSON)) as response:
            return response.status

    async def metrics(self) -> str:
        status, text = await self.get("/metrics")
        assert status == 200
        return text


def running_server(adviser: Adviser | None, tmp_path: Path) -> AbstractAsyncContextManager[Server]:
    """The real app (bolt, botbuilder, store) on a loopback port, with the server's own access logger."""
    return running_with_stub(Server, adviser, tmp_path, "ops.db", {"access_log_class": AccessLogger})


# ---------------------------------------------------------------------------------------------- logs
async def test_a_slack_question_logs_one_question_event_and_no_text_ids_or_secrets(adviser, tmp_path):
    """Each answered Slack question writes exactly one JSON "question" event (its id as stored, the asker's
    pseudonym, platform, outcome, top clause, latency); the question's text, the raw Slack user id, the bot token,
    the signing secret and any query string never reach the log, and every line is one JSON object."""
    with captured_logs([BOT_TOKEN, SIGNING_SECRET]) as stream:
        async with running_server(adviser, tmp_path) as server:
            assert await server.slack_event(mention(LOGO_QUESTION, "1700000000.000100", user="U0SECRETASKER"),
                                            path="/slack/events?token=xoxb-query-string-leak") == 200
            await server.stub.wait_for("chat.postMessage")
            await eventually(lambda: any(e.get("event") == "http_request" for e in json_lines(stream)),
                             what="the access log")
            with server.store.engine.connect() as conn:
                stored_ids = [row.id for row in conn.execute(sa.select(questions.c.id))]
            pseudonym = server.store.pseudonymise("slack", "U0SECRETASKER")
    lines = json_lines(stream)  # raises if any line is not one JSON object
    events = [e for e in lines if e.get("event") == "question"]
    assert len(events) == 1
    event = events[0]
    assert event["platform"] == "slack" and event["answered"] is True and event["outcome"] == "answered"
    assert event["top_clause"] == "5.3" and event["latency_ms"] > 0
    assert event["question_id"] == stored_ids[0] and event["user"] == pseudonym
    assert event["escalations"] == ["chief executive"]
    assert {"ts", "level", "logger", "message"} <= set(event)
    request = next(e for e in lines if e.get("event") == "http_request" and e["method"] == "POST")
    assert request["path"] == "/slack/events" and request["status"] == 200
    text = stream.getvalue()
    for leak in ("council logo", "U0SECRETASKER", BOT_TOKEN, SIGNING_SECRET, "query-string-leak"):
        assert leak not in text, leak


async def test_a_teams_question_logs_one_question_event_and_is_counted(adviser, tmp_path):
    """The Teams path reports like Slack: each question is one "question" event (its stored id, the asker's
    pseudonym as the store keeps it, platform teams, outcome, top clause, latency) and is counted in /metrics by
    outcome; a greeting counts as help; the text and the Entra object id are not logged."""
    settings = Settings(policy_dir=adviser.settings.policy_dir, data_dir=tmp_path)
    service = AdviserService(settings, adviser)
    store = Store.open(f"sqlite:///{tmp_path}/teams.db", b"k" * 32)
    bot = create_app(settings, service, store)[TEAMS_ENDPOINT_KEY].bot
    template = Activity(channel_id="msteams", service_url="https://smba.trafficmanager.net/uk/",
                        from_property=ChannelAccount(id="29:alex", name="Alex", aad_object_id="aad-object-id-0042"),
                        recipient=ChannelAccount(id="28:bot", name="Policy Adviser"),
                        conversation=ConversationAccount(id="a:personal", conversation_type="personal"))
    adapter = TestAdapter(bot.on_turn, template)
    try:
        with captured_logs() as stream:
            await adapter.send(LOGO_QUESTION)
            await adapter.send("hi")
        with store.engine.connect() as conn:
            stored_ids = [row.id for row in conn.execute(sa.select(questions.c.id))]
        exposition = service.metrics.exposition()[0].decode()
    finally:
        service.close()
        store.close()
    events = [e for e in json_lines(stream) if e.get("event") == "question"]
    assert [(e["platform"], e["outcome"], e["top_clause"]) for e in events] == [
        ("teams", "answered", "5.3"), ("teams", "help", None)]
    assert events[0]["question_id"] == stored_ids[0] and events[0]["latency_ms"] > 0
    assert events[0]["user"] == store.pseudonymise("teams", "aad-object-id-0042")
    assert "council logo" not in stream.getvalue() and "aad-object-id-0042" not in stream.getvalue()
    assert metric(exposition, "policybot_questions_total", platform="teams", outcome="answered") == 1
    assert metric(exposition, "policybot_questions_total", platform="teams", outcome="help") == 1


def test_line_breaks_in_user_text_cannot_forge_a_log_line():
    """CR, LF, U+2028, NEL and other line breaks in user-supplied text are escaped in both log formats: one record
    is always exactly one line, and the JSON line decodes back to the text as it was."""
    evil = 'hi\r\n{"ts":"2026-01-01T00:00:00Z","level":"critical","message":"forged"}\u2028x\x85y\x0bz'
    for json_format in (True, False):
        stream = io.StringIO()
        logger = logging.getLogger(f"test.forge.{json_format}")
        logger.propagate = False
        logger.addHandler(build_handler([], json_lines=json_format, stream=stream))
        logger.warning("question from %s", evil, extra={"event": "question", "user_text": evil})
        lines = stream.getvalue().splitlines()  # splits on every line boundary Python knows, U+2028 included
        assert len(lines) == 1, lines
        if json_format:
            record = json.loads(lines[0])
            assert record["message"] == f"question from {evil}" and record["user_text"] == evil
            assert record["level"] == "warning"
        else:
            assert "WARNING test.forge" in lines[0] and '\\r\\n{"ts"' in lines[0]


def test_secrets_tokens_authorization_headers_and_bodies_are_redacted():
    """No configured secret, Slack token, bearer or basic credential, Authorization header, JWT, database password
    or labelled request body reaches the log, whether it is in the message, an extra field or a traceback; and the
    DEBUG output of HTTP client libraries (which prints bodies) is dropped even when DEBUG is on."""
    settings = Settings(slack_bot_token=Secret("xoxb-1111-2222-configuredtoken"),
                        slack_signing_secret=Secret("signing-secret-value-42"),
                        teams_app_password=Secret("Teams~Client~Secret~99"),
                        pseudonym_key=Secret("pseudonym-key-value-77"),
                        database_url="postgresql+psycopg2://policybot:db-passw0rd@db.internal/policybot")
    leaks = ["xoxb-1111-2222-configuredtoken", "signing-secret-value-42", "Teams~Client~Secret~99",
             "pseudonym-key-value-77", "db-passw0rd", "xapp-1-A0123-4567-abcdef", "xoxp-9999-user-token",
             "Zm9vOmJhcjpiYXo=", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJl", "opaque-auth-value",
             '"text": "my private question"']
    stream = io.StringIO()
    logger = logging.getLogger("test.redact")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(build_handler(settings_secrets(settings), stream=stream))
    logger.info("configured %s and %s", settings.slack_bot_token.reveal(), settings.teams_app_password.reveal())
    logger.info("headers {'Authorization': 'Basic Zm9vOmJhcjpiYXo=', 'X-Other': 'ok'}")
    logger.info("calling with Authorization: opaque-auth-value")
    logger.info("token Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJl refused")
    logger.info("connecting to postgresql+psycopg2://policybot:db-passw0rd@db.internal/policybot")
    logger.info('Invalid request signature (body: {"token": "x", "text": "my private question"})')
    logger.info("app token", extra={"event": "x", "token": "xapp-1-A0123-4567-abcdef",
                                    "nested": {"list": ["xoxp-9999-user-token"]}})
    try:
        raise RuntimeError("failed with signing-secret-value-42 and pseudonym-key-value-77")
    except RuntimeError:
        logger.exception("it went wrong")
    library = logging.getLogger("slack_sdk.web.async_base_client")
    library.propagate = False
    library.setLevel(logging.DEBUG)
    library.addHandler(logger.handlers[0])
    try:
        library.debug("Sending a request - url: https://slack.com/api/chat.postMessage, body_params: {'text': 'x'}")
        library.warning("Slack chat.postMessage failed")
    finally:
        library.handlers.clear()
        library.propagate = True
    text = stream.getvalue()
    for leak in leaks:
        assert leak not in text, leak
    lines = json_lines(stream)
    assert len(lines) == 9  # eight of ours (the traceback inside one of them) and the library's warning
    assert "Sending a request" not in text  # the library's DEBUG line, with its body, was dropped
    assert "Traceback" in lines[7]["exception"] and text.count(REDACTED) >= 10


# ---------------------------------------------------------------------------------------------- metrics, health
async def test_metrics_count_questions_latency_escalations_index_and_api_errors(adviser, tmp_path):
    """/metrics (Prometheus text) counts each question by platform and outcome, observes its latency, counts the
    roles answers say to contact, reports the index's size, and counts Slack API calls that still fail after the
    client's retries."""
    async with running_server(adviser, tmp_path) as server:
        await server.slack_event(mention(LOGO_QUESTION, "1700000000.000200"))
        await server.stub.wait_for("chat.postMessage", 1)
        await server.slack_event(message("hello", "1700000000.000300", "D0DIRECT", "im"))
        await server.stub.wait_for("chat.postMessage", 2)
        server.stub.fail("chat.postMessage", 500, times=2)  # the first attempt and the client's one retry
        await server.slack_event(mention(OFF_TOPIC_QUESTION, "1700000000.000400"))
        await server.stub.wait_for("chat.postMessage", 4)

        async def api_error_counted() -> str | None:
            text = await server.metrics()
            return text if metric(text, "policybot_platform_api_errors_total", platform="slack",
                                  method="chat.postMessage") == 1 else None

        text = await eventually(api_error_counted, what="the Slack API error to be counted")
    assert metric(text, "policybot_questions_total", platform="slack", outcome="answered") == 1
    assert metric(text, "policybot_questions_total", platform="slack", outcome="help") == 1
    assert metric(text, "policybot_questions_total", platform="slack", outcome="abstained") == 1
    assert metric(text, "policybot_questions_total", platform="slack", outcome="error") == 0
    assert metric(text, "policybot_questions_total", platform="teams", outcome="answered") == 0
    assert metric(text, "policybot_answer_latency_seconds_count", platform="slack") == 3
    assert metric(text, "policybot_escalations_total", role="chief executive", stage="advised") == 1
    assert metric(text, "policybot_index_clauses") == len(adviser.index.clauses)
    assert metric(text, "policybot_index_units") == len(adviser.index.units)
    assert metric(text, "policybot_index_build_seconds") == pytest.approx(adviser.index.build_seconds)
    assert metric(text, "policybot_ready") == 1


async def test_each_app_keeps_its_own_metrics(adviser, tmp_path):
    """Metrics live in a registry per app, not prometheus-client's global one: two servers in one process can be
    created side by side and never share or double-count a counter."""
    async with running_server(adviser, tmp_path / "one") as one, running_server(adviser, tmp_path / "two") as two:
        await one.slack_event(mention(LOGO_QUESTION, "1700000000.000500"))
        await one.stub.wait_for("chat.postMessage")
        first, second = await one.metrics(), await two.metrics()
    assert metric(first, "policybot_questions_total", platform="slack", outcome="answered") == 1
    assert metric(second, "policybot_questions_total", platform="slack", outcome="answered") == 0


async def test_health_and_readiness_follow_the_adviser(adviser, tmp_path):
    """/healthz and /readyz answer 503 until an adviser is loaded and 200 after (saying what the index holds);
    /livez answers 200 throughout, so a liveness probe never restarts a server that is still building its index."""
    async with running_server(None, tmp_path) as server:
        for path in ("/healthz", "/readyz"):
            status, body = await server.get(path)
            assert status == 503 and json.loads(body) == {"status": "loading"}
        assert (await server.get("/livez"))[0] == 200
        assert metric(await server.metrics(), "policybot_ready") == 0
        server.service.swap(adviser)
        for path in ("/healthz", "/readyz"):
            status, body = await server.get(path)
            assert status == 200 and json.loads(body)["index"]["clauses"] == len(adviser.index.clauses)
        assert (await server.get("/livez"))[0] == 200
        assert metric(await server.metrics(), "policybot_ready") == 1


# ---------------------------------------------------------------------------------------------- reloads
async def test_a_server_that_could_not_load_starts_answering_once_the_policy_is_fixed(adviser, settings, tmp_path):
    """A server started on an unusable policy folder answers /healthz 503 with the reason (and /livez 200), and
    starts answering as soon as the folder is fixed, without a restart."""
    folder = tmp_path / "policies"
    folder.mkdir()
    shutil.copytree(settings.index_dir, tmp_path / "data" / "index")
    broken = Settings(policy_dir=folder, data_dir=tmp_path / "data")
    service = AdviserService(broken)
    app = create_app(broken, service)
    watcher = add_background(app, reload_interval=0.5, handle_sighup=False)
    watcher.encoder = adviser.encoder  # the session's; the server would load its own
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:

            async def health() -> tuple[int, dict]:
                async with session.get(base + "/healthz") as response:
                    return response.status, await response.json()

            await eventually(lambda: service.load_error, timeout=120, what="the start-up load to fail")
            status, body = await health()
            assert status == 503 and body["status"] == "error" and "no policy documents" in body["error"]
            async with session.get(base + "/livez") as response:
                assert response.status == 200
            for path in settings.policy_dir.iterdir():
                shutil.copy(path, folder / path.name)

            async def healthy() -> bool:
                return (await health())[0] == 200

            await eventually(healthy, timeout=120, what="/healthz to turn 200")
        assert (await service.ask(LOGO_QUESTION)).top_clause == "5.3"
    finally:
        await runner.cleanup()
        service.close()


@pytest.fixture
def served_copy(policy_copy: Path, settings: Settings, adviser: Adviser, tmp_path: Path) -> AdviserService:
    """A service on a private, editable copy of policy_text/, starting from a copy of the session's index (the
    same files, so it loads without a rebuild) and the session's encoder."""
    data = tmp_path / "data"
    shutil.copytree(settings.index_dir, data / "index")
    (policy_copy / POLICY_FILE).chmod(0o644)
    copy_settings = Settings(policy_dir=policy_copy, data_dir=data)
    service = AdviserService(copy_settings, Adviser.load(copy_settings, encoder=adviser.encoder))
    yield service
    service.close()


def edit_policy(service: AdviserService, old: str, new: str) -> None:
    path = service.settings.policy_dir / POLICY_FILE
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


async def test_a_burst_of_policy_edits_rebuilds_once_and_serves_the_new_text(served_copy):
    """An edit to a policy file is picked up by polling, but only once the folder has stopped changing: a burst of
    edits seen at successive polls leads to one rebuild, and the new adviser quotes the text as finally saved."""
    service = served_copy
    watcher = PolicyWatcher(service, interval=0)  # polled by hand here; the server polls on a timer
    await watcher.prime()
    old_adviser = service.adviser
    edit_policy(service, LOGO_SENTENCE, LOGO_SENTENCE.replace("the chief executive", "the Head of Paid Service"))
    assert not await watcher.poll()  # changed: wait for it to settle
    edit_policy(service, "the Head of Paid Service.", "the Monitoring Officer.")
    assert not await watcher.poll()  # changed again: still waiting
    assert await watcher.poll()  # unchanged for a whole interval: rebuild
    assert not await watcher.poll()  # nothing new: no second rebuild
    assert metric(service.metrics.exposition()[0].decode(), "policybot_reloads_total", result="success") == 1
    assert service.adviser is not old_adviser
    answer = await service.ask(LOGO_QUESTION)
    assert answer.top_clause == "5.3" and "written permission of the Monitoring Officer" in answer.answer
    assert "Head of Paid Service" not in answer.answer
    # The old adviser is untouched by the swap: a question that started on it finishes with the old text.
    assert "the chief executive" in old_adviser.ask(LOGO_QUESTION).answer
    await watcher.stop()


async def test_a_policy_that_cannot_be_read_leaves_the_old_index_serving(served_copy):
    """A policy folder that fails to load (an unreadable .docx, then no policy documents at all) fails the reload:
    the previous adviser keeps answering, the failure is logged with its reason and counted, the same broken folder
    is not retried at every poll, and fixing the folder brings reloads back."""
    service = served_copy
    watcher = PolicyWatcher(service, interval=0)
    await watcher.prime()
    serving = service.adviser
    folder = service.settings.policy_dir
    original = (folder / POLICY_FILE).read_bytes()
    with captured_logs() as stream:
        (folder / "minutes.docx").write_bytes(b"this is not a Word document")
        assert not await watcher.poll() and await watcher.poll()
        assert not await watcher.poll() and not await watcher.poll()  # still broken: not retried
        (folder / "minutes.docx").unlink()
        (folder / POLICY_FILE).unlink()
        assert not await watcher.poll() and await watcher.poll()
    failures = [e for e in json_lines(stream) if e.get("event") == "reload_failed"]
    assert [("minutes.docx" in f["error"], "no policy documents" in f["error"]) for f in failures] == [
        (True, False), (False, True)]
    assert all(f["level"] == "error" and "previous index keeps serving" in f["message"] for f in failures)
    assert service.adviser is serving and "no policy documents" in service.reload_error
    assert (await service.ask(LOGO_QUESTION)).top_clause == "5.3"
    exposition = service.metrics.exposition()[0].decode()
    assert metric(exposition, "policybot_reloads_total", result="failed") == 2
    (folder / POLICY_FILE).write_bytes(original)
    assert not await watcher.poll() and await watcher.poll()
    assert service.reload_error == "" and service.adviser is not serving
    await watcher.stop()


async def test_a_build_written_by_another_process_is_loaded_without_rebuilding(served_copy):
    """`policybot index` run beside the server writes a new build and moves CURRENT; the watcher notices the
    pointer move and loads that build (no rebuild of its own: CURRENT stays where the other process put it)."""
    service = served_copy
    watcher = PolicyWatcher(service, interval=0)
    await watcher.prime()
    serving = service.adviser
    await asyncio.to_thread(save_index, serving.index, service.settings.index_dir)  # what `policybot index` does
    written = current_build(service.settings.index_dir)
    assert not await watcher.poll() and await watcher.poll()
    assert service.adviser is not serving and current_build(service.settings.index_dir) == written
    assert not await watcher.poll()
    await watcher.stop()


async def test_reloads_never_overlap(served_copy):
    """Reloads asked for at the same moment (a poll, SIGHUP, another request) run one after another, never two at
    once, and each of them swaps in a working adviser."""

    class OverlapWatcher(PolicyWatcher):
        active = most = 0

        def _load(self, previous: Adviser | None) -> Adviser:
            OverlapWatcher.active += 1
            OverlapWatcher.most = max(OverlapWatcher.most, OverlapWatcher.active)
            try:
                time.sleep(0.05)  # widen the window in which an overlap would show
                return super()._load(previous)
            finally:
                OverlapWatcher.active -= 1

    service = served_copy
    watcher = OverlapWatcher(service, interval=0)
    await watcher.prime()
    assert await asyncio.gather(*(watcher.reload() for _ in range(3))) == [True, True, True]
    assert OverlapWatcher.most == 1
    assert metric(service.metrics.exposition()[0].decode(), "policybot_reloads_total", result="success") == 3
    assert (await service.ask(LOGO_QUESTION)).top_clause == "5.3"
    await watcher.stop()


async def test_questions_asked_during_reloads_are_all_answered(served_copy):
    """Questions asked while reloads run (in their own thread, beside the question workers) are all answered,
    and every reload succeeds: the two share the encoder and the tokenizer, and neither may corrupt the other."""
    service = served_copy
    watcher = PolicyWatcher(service, interval=0)
    await watcher.prime()
    results = await asyncio.gather(*(watcher.reload() for _ in range(3)),
                                   *(service.ask(LOGO_QUESTION) for _ in range(12)))
    assert results[:3] == [True, True, True]
    assert all(answer.top_clause == "5.3" for answer in results[3:])
    await watcher.stop()
