"""Hostile requests to POST /slack/events on the real server (create_app, bolt, adviser, SQLite store) over loopback
HTTP, unsigned and validly signed, with a loopback stand-in for the Slack Web API; then the limits a Slack user
meets (long questions, big bodies, the per-user rate limit across instances)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from live_server import (
    SERVER_USES_RANDOM,
    ErrorLog,
    LiveLoop,
    errors_logged,
    examples,
    http_get,
    http_post,
    json_values,
    raw_request,
)
from slack_stub import (
    BOT_TOKEN,
    BOT_USER_ID,
    SIGNING_SECRET,
    TEAM_ID,
    SlackStub,
    all_text,
    command_body,
    event_body,
    message,
    sign,
    signed_headers,
)
from test_slack_e2e import running_rig

from bot.adviser import Adviser
from bot.render_slack import (
    ACTION_ASK_ROLE,
    ACTION_FULL_CLAUSE,
    ACTION_HELPFUL,
    ACTION_RESOLVE,
    ACTION_SHARE,
    ACTION_UNHELPFUL,
    CALLBACK_ASK_CONFIRM,
    CALLBACK_SHORTCUT,
    encode_value,
)
from bot.server import MAX_BODY_BYTES, create_app
from bot.service import AdviserService
from bot.settings import Secret, Settings
from bot.slack_handlers import RATE_LIMITED
from bot.store import Store

UNSIGNED_EXAMPLES = 300  # reported in docs/reliability.md
SIGNED_EXAMPLES = 300
RAW_EXAMPLES = 100
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
LOGO_QUESTION = "can I use the council logo on my website?"
pytestmark = SERVER_USES_RANDOM


@dataclass
class SlackServer:
    live: LiveLoop
    base_url: str
    stub: SlackStub
    store: Store
    errors: ErrorLog

    def post(self, body: bytes, headers: dict[str, str] | list[tuple[str, str]]) -> int:
        return http_post(self.base_url, "/slack/events", body, headers)[0]


@pytest.fixture(scope="module")
def slack_server(adviser: Adviser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlackServer]:
    """One real server for the whole module, on its own event loop in a thread, so hypothesis drives it over HTTP."""
    data = tmp_path_factory.mktemp("slack-fuzz")
    live = LiveLoop()
    stub = live.run(SlackStub().start())
    settings_ = Settings(policy_dir=adviser.settings.policy_dir, data_dir=data, slack_bot_token=Secret(BOT_TOKEN),
                         slack_signing_secret=Secret(SIGNING_SECRET), slack_api_url=stub.api_url)
    service = AdviserService(settings_, adviser)
    store = Store.open(f"sqlite:///{data / 'records.sqlite3'}", b"k" * 32)
    with errors_logged() as errors:
        base_url = live.serve(create_app(settings_, service, store))
        live.on_close(stub.stop)
        try:
            yield SlackServer(live, base_url, stub, store, errors)
        finally:
            live.close()
            service.close()
            store.close()


def signed(body: bytes, content_type: str | None, extra: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Slack's signature headers for any bytes (the body may not be text), then the content type and `extra`."""
    ts = str(int(time.time()))
    headers = [("X-Slack-Request-Timestamp", ts), ("X-Slack-Signature", sign(body, ts))]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return headers + list(extra)


# ---------------------------------------------------------------------------------------------- strategies
header_names = st.one_of(
    st.sampled_from(["X-Slack-Request-Timestamp", "X-Slack-Signature", "X-Slack-Retry-Num", "X-Slack-Retry-Reason",
                     "Content-Type", "Authorization", "X-Forwarded-For", "Transfer-Encoding", "Expect"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=20),
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80),
    st.integers().map(str),
    st.sampled_from(["v0=" + "0" * 64, "v0=zz", "", "chunked", "100-continue", JSON, FORM, "text/plain"]),
)
# Headers that would make the request itself malformed HTTP are aiohttp's business, tested with raw bytes below.
_FRAMING = {"content-length", "transfer-encoding", "expect", "host", "connection"}
extra_headers = st.lists(st.tuples(header_names, header_values).filter(lambda h: h[0].lower() not in _FRAMING),
                         max_size=6)

slack_ids = st.one_of(st.sampled_from(["U0ASKER", "C0GENERAL", "D0ASKER", BOT_USER_ID, "", "1700000000.000100"]),
                      st.text(max_size=20), json_values)
# response_url is where bolt POSTs replies: only ever our own stub, or something unusable, never the internet.
response_urls = st.sampled_from(["", "not a url", "ftp://127.0.0.1/x", "http://127.0.0.1:9/closed"])
question_text = st.one_of(st.text(max_size=300), st.sampled_from(
    [LOGO_QUESTION, "<!channel> <@U1> <https://evil|x>", "&lt;&gt;&amp;", "help", "", "5.3"]))


@st.composite
def events(draw: st.DrawFn) -> bytes:
    """An Events API envelope whose event has Slack's field names with arbitrary values."""
    event = {
        "type": draw(st.sampled_from(["app_mention", "message", "app_home_opened", "reaction_added", "x"])),
        "user": draw(slack_ids), "channel": draw(slack_ids), "ts": draw(slack_ids), "text": draw(question_text),
    }
    for name in ("thread_ts", "subtype", "bot_id", "channel_type", "tab", "event_ts", "blocks", "files"):
        if draw(st.booleans()):
            event[name] = draw(st.one_of(st.sampled_from(["im", "channel", "home", "message_changed"]),
                                         json_values))
    envelope = {"type": draw(st.sampled_from(["event_callback", "url_verification", "app_rate_limited", "x"])),
                "team_id": TEAM_ID, "api_app_id": "A0POLICY", "event": event,
                "event_id": draw(st.one_of(st.text(min_size=1, max_size=20), json_values)),
                "event_time": draw(st.one_of(st.integers(), json_values)),
                "authorizations": draw(st.one_of(st.just([{"team_id": TEAM_ID, "user_id": BOT_USER_ID}]),
                                                 json_values)),
                "challenge": draw(json_values)}
    for name in draw(st.lists(st.sampled_from(list(envelope)), max_size=3)):
        envelope[name] = draw(json_values)  # and any field may be something else entirely
    return json.dumps(envelope).encode()


@st.composite
def interactions(draw: st.DrawFn) -> bytes:
    """An interactivity payload (buttons, modal submissions, shortcuts) with arbitrary values, form-encoded."""
    action_id = draw(st.sampled_from([f"{ACTION_FULL_CLAUSE}:0", f"{ACTION_ASK_ROLE}:0", ACTION_RESOLVE,
                                      ACTION_HELPFUL, ACTION_UNHELPFUL, ACTION_SHARE, "unknown"]))
    value = draw(st.one_of(json_values.map(json.dumps), st.text(max_size=60), json_values.map(
        lambda v: encode_value({"q": v, "r": "chief executive", "i": "0" * 32, "d": v, "c": v}))))
    payload = {
        "type": draw(st.sampled_from(["block_actions", "view_submission", "message_action", "shortcut",
                                      "view_closed", "block_suggestion", "x"])),
        "user": draw(st.one_of(st.just({"id": "U0ASKER", "team_id": TEAM_ID}), json_values)),
        "team": {"id": TEAM_ID}, "api_app_id": "A0POLICY", "trigger_id": draw(slack_ids),
        "actions": draw(st.one_of(st.just([{"action_id": action_id, "value": value, "block_id": "b"}]),
                                  json_values)),
        "callback_id": draw(st.sampled_from([CALLBACK_SHORTCUT, "x"])),
        "view": draw(st.one_of(st.fixed_dictionaries({
            "callback_id": st.sampled_from([CALLBACK_ASK_CONFIRM, "x"]),
            "private_metadata": st.one_of(st.text(max_size=40), json_values.map(json.dumps)),
            "state": json_values}), json_values)),
        "message": draw(st.one_of(st.fixed_dictionaries({"ts": slack_ids, "text": question_text}), json_values)),
        "channel": draw(st.one_of(st.fixed_dictionaries({"id": slack_ids}), json_values)),
        "container": draw(json_values), "response_url": draw(response_urls),
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


@st.composite
def forms(draw: st.DrawFn) -> bytes:
    """A form body with Slack's field names (and others), e.g. a /policy command, with arbitrary values."""
    fields = draw(st.dictionaries(
        st.one_of(st.sampled_from(["command", "text", "user_id", "channel_id", "team_id", "trigger_id", "payload",
                                   "ssl_check", "token", "api_app_id"]), st.text(max_size=10)),
        st.one_of(st.text(max_size=100), json_values.map(json.dumps)), max_size=8))
    if draw(st.booleans()):
        fields |= {"command": "/policy", "text": draw(question_text), "user_id": draw(st.text(max_size=12)),
                   "response_url": draw(response_urls)}
    return urlencode(fields).encode()


signed_bodies = st.one_of(st.binary(max_size=2000), events(), interactions(), forms())
content_types = st.one_of(st.none(), st.sampled_from([JSON, FORM, "text/plain", "multipart/form-data",
                                                      "application/json; charset=latin-1"]), header_values)


# ---------------------------------------------------------------------------------------------- properties
@settings(max_examples=examples(UNSIGNED_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=4000), events(), interactions()), headers=extra_headers)
def test_unsigned_requests_are_refused_with_a_short_reason(slack_server: SlackServer, body: bytes,
                                                           headers: list[tuple[str, str]]) -> None:
    """Any body with any headers but no valid Slack signature (including forged X-Slack-* headers) is refused with
    a 4xx and a short reason, never 500, and nothing is sent to Slack."""
    before = len(slack_server.stub.calls)
    status, reason = http_post(slack_server.base_url, "/slack/events", body, headers)
    event(f"HTTP {status}")
    assert 400 <= status < 500
    assert len(reason) < 200
    assert len(slack_server.stub.calls) == before


@settings(max_examples=examples(SIGNED_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(body=signed_bodies, content_type=content_types, headers=extra_headers)
@example(body=json.dumps({"type": "event_callback", "event_id": ["Ev1"], "event": {
    "type": "app_mention", "user": {"id": "U1"}, "text": ["hi"], "channel": ["C1"], "ts": 1}}).encode(),
    content_type=JSON, headers=[])  # found by this property: a list event_id crashed the dedupe
@example(body=json.dumps({"type": "event_callback", "event_id": "Ev2", "event": {
    "type": "message", "channel": "C1", "ts": "2", "thread_ts": {"ts": "1"}, "channel_type": "channel"}}).encode(),
    content_type=JSON, headers=[])  # and a dict for a thread_ts crashed the thread lookup
@example(body=urlencode({"payload": json.dumps({"type": "message_action", "callback_id": CALLBACK_SHORTCUT,
                                                "channel": ["C1"], "user": "U1", "message": {"ts": "1"}})}).encode(),
         content_type=FORM, headers=[])  # and a list for the shortcut's channel crashed the shortcut listener
def test_signed_requests_with_any_body_never_get_500(slack_server: SlackServer, body: bytes,
                                                     content_type: str | None,
                                                     headers: list[tuple[str, str]]) -> None:
    """A validly signed request (as only Slack could send) with any body, any content type and any other headers
    (events, button clicks, modal submissions and commands with arbitrary field values, or bytes) is answered
    below 500: bolt's own 500s for bodies it cannot parse are refused as 400 instead."""
    headers = [h for h in headers if not h[0].lower().startswith(("x-slack-request", "x-slack-sig", "content-type"))]
    status = slack_server.post(body, signed(body, content_type, headers))
    event(f"HTTP {status}")
    assert status < 500


@settings(max_examples=examples(RAW_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.binary(min_size=1, max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b),
                      max_size=6), body=st.binary(max_size=200))
def test_malformed_http_never_gets_500(slack_server: SlackServer, lines: list[bytes], body: bytes) -> None:
    """Raw header lines that are not valid HTTP are refused by the server's parser (400) or the connection is
    closed; no request reaches the app as a 500."""
    request = b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(line + b"\r\n" for line in lines)
    status = raw_request(slack_server.base_url, request + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert status is None or status < 500


def test_after_the_fuzz_the_server_still_answers_and_no_listener_failed(slack_server: SlackServer) -> None:
    """Run after the properties above (pytest keeps file order): the same server still answers a normal signed
    question with the right clause, and no listener failed on any fuzzed input in the background (which would
    have left a user without an answer)."""
    live, stub = slack_server.live, slack_server.stub
    body = event_body(message(LOGO_QUESTION, ts="1700009999.000001", channel="D0FUZZ", channel_type="im",
                              user="U0AFTERFUZZ"))
    assert slack_server.post(body.encode(), signed_headers(body, JSON)) == 200
    posts = live.run(_wait_for_post_to(stub, "D0FUZZ"))
    assert "*5.3*" in all_text(posts[-1].payload["blocks"])
    assert http_get(slack_server.base_url, "/healthz")[0] == 200
    assert slack_server.errors.raised_in_our_code() == []



async def _wait_for_post_to(stub: SlackStub, channel: str, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        posts = [c for c in stub.calls_to("chat.postMessage") if c.payload.get("channel") == channel]
        if posts:
            return posts
        assert time.monotonic() < deadline, "the question after the fuzz run was never answered"
        await stub.wait_for("chat.postMessage", len(stub.calls_to("chat.postMessage")) + 1,
                            timeout=deadline - time.monotonic())


# ---------------------------------------------------------------------------------------------- limits
async def test_a_long_question_is_answered_with_a_note_the_user_sees(adviser: Adviser, tmp_path: Path) -> None:
    """A question longer than POLICYBOT_MAX_QUESTION_CHARS is answered from its beginning, and the Slack message
    tells the user it was shortened (not silently truncated)."""
    long_question = LOGO_QUESTION + " " + "and also some more background to my question " * 40
    async with running_rig(adviser, tmp_path) as rig:
        await rig.event(message(long_question, ts="1700000100.000001", channel="D0ASKER", channel_type="im"))
        post = (await rig.stub.wait_for("chat.postMessage"))[0]
    text = all_text(post.payload["blocks"])
    assert "only its first 1000 characters were used" in text
    assert "*5.3*" in text


@pytest.mark.parametrize("signature", ["forged", "valid"])
async def test_a_body_over_1_mib_gets_413(adviser: Adviser, tmp_path: Path, signature: str) -> None:
    """A body over 1 MiB is refused with 413 before its signature is checked or it is parsed, whether or not its
    signature headers are right, and nothing is sent to Slack."""
    body = command_body("x" * MAX_BODY_BYTES, "http://127.0.0.1:9/")
    headers = signed_headers(body, FORM)
    if signature == "forged":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    async with running_rig(adviser, tmp_path) as rig:
        status, reason, _ = await rig.post(body, headers)
        assert status == 413
        assert rig.stub.calls == []


async def test_the_21st_question_in_a_minute_gets_the_polite_message_across_two_instances(
        adviser: Adviser, tmp_path: Path) -> None:
    """POLICYBOT_RATE_LIMIT_PER_MINUTE=20 is held in the shared database: a user whose questions alternate between
    two server instances gets 20 answers, and the 21st (on either instance) gets the polite rate-limit message
    instead of an answer."""
    limit = Settings.from_env({"POLICYBOT_RATE_LIMIT_PER_MINUTE": "20"}).rate_limit_per_minute
    async with running_rig(adviser, tmp_path, rate_limit_per_minute=limit) as first, \
            running_rig(adviser, tmp_path, rate_limit_per_minute=limit) as second:
        assert first.store is not second.store  # two instances, one database file
        for number in range(limit + 1):
            rig = (first, second)[number % 2]
            await rig.event(message(LOGO_QUESTION, ts=f"1700000200.{number:06d}", channel="D0ASKER",
                                    channel_type="im"))
            await rig.stub.wait_for("chat.postMessage", number // 2 + 1, timeout=30)
        posts = sorted(first.stub.calls_to("chat.postMessage") + second.stub.calls_to("chat.postMessage"),
                       key=lambda c: c.at)
    assert len(posts) == limit + 1
    assert all("*5.3*" in all_text(p.payload["blocks"]) for p in posts[:limit])
    assert posts[limit].payload["text"] == RATE_LIMITED
    assert "*5.3*" not in all_text(posts[limit].payload["blocks"])
