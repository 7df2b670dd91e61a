"""Hostile requests to POST /api/messages on the real server (create_app, botbuilder's CloudAdapter and token
validation, adviser, SQLite store) over loopback HTTP: in anonymous (Emulator) mode with a loopback serviceUrl, and
with an app id set, where tokens are checked against a loopback OpenID key server; then the limits a Teams user
meets (long questions, big bodies, the per-user rate limit across instances)."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from live_server import (
    SERVER_USES_RANDOM,
    ErrorLog,
    LiveLoop,
    errors_logged,
    examples,
    http_get,
    http_post,
    json_scalars,
    json_values,
    openid_endpoint,
    raised_in_our_code,
)
from teams_support import BOT_ID, KEY, LOGO_QUESTION, ServiceUrlRecorder, card_texts, message, unescape
from test_teams_e2e import APP_ID, KEY_ID, LoopbackCredentialsFactory, app_id_settings, bot_framework_token

from bot.adviser import Adviser
from bot.server import MAX_BODY_BYTES, create_app
from bot.service import AdviserService
from bot.settings import Settings
from bot.store import Store
from bot.teams import TEAMS_ENDPOINT_KEY, TeamsEndpoint

ANONYMOUS_EXAMPLES = 250  # reported in docs/reliability.md
AUTHENTICATED_EXAMPLES = 150
FORGED_TOKEN_EXAMPLES = 150
RATE_LIMITED = "asked a lot of questions in the last minute"
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

pytestmark = SERVER_USES_RANDOM


@dataclass
class TeamsServers:
    live: LiveLoop
    anonymous: str  # base URL of the server in anonymous mode
    authenticated: str  # base URL of the server with an app id
    service_url: str  # the loopback serviceUrl recorder
    recording: ServiceUrlRecorder
    signing_key: rsa.RSAPrivateKey
    errors: ErrorLog


@pytest.fixture(scope="module")
def teams_servers(adviser: Adviser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamsServers]:
    """Two real servers for the module (anonymous, and with an app id) plus the serviceUrl recorder and the OpenID
    key server, on one event loop in a thread, so hypothesis drives them over HTTP."""
    data = tmp_path_factory.mktemp("teams-fuzz")
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    live = LiveLoop()
    recording = ServiceUrlRecorder()
    service_url = live.serve(recording.app()) + "/"
    store = Store.open(f"sqlite:///{data / 'records.sqlite3'}", KEY)
    services = []
    urls = []
    for teams in ({"teams_allow_anonymous": True}, app_id_settings()):
        settings_ = dataclasses.replace(adviser.settings, data_dir=data, **teams)
        service = AdviserService(settings_, adviser)
        app = create_app(settings_, service, store)
        if settings_.teams_app_id:
            app[TEAMS_ENDPOINT_KEY] = TeamsEndpoint(settings_, service, store, LoopbackCredentialsFactory())
        services.append(service)
        urls.append(live.serve(app))
    with openid_endpoint(signing_key, KEY_ID), errors_logged() as errors, pytest.MonkeyPatch.context() as patch:
        # botbuilder replies with `requests`, which would send loopback traffic to a configured proxy.
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        patch.setenv("no_proxy", "127.0.0.1,localhost")
        try:
            yield TeamsServers(live, urls[0], urls[1], service_url, recording, signing_key, errors)
        finally:
            live.close()
            for service in services:
                service.close()
            store.close()


def post(base_url: str, activity: object, token: str | None = None, raw: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, bytes]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = raw if raw is not None else json.dumps(activity).encode()
    return http_post(base_url, "/api/messages", body, headers)


# ---------------------------------------------------------------------------------------------- strategies
texts = st.one_of(st.text(max_size=300), st.sampled_from([
    LOGO_QUESTION, "<at>Policy Adviser</at> can I use the logo?", "<at>", "**bold** [x](http://e.x)", "help", "",
    "5.3", "${{7*7}}", "\u202e\u200b"]), json_values)
roles = st.one_of(st.sampled_from(["chief executive", "monitoring officer", "democratic services", "Chief Executive "]),
                  json_values)
button_values = st.one_of(json_values, st.fixed_dictionaries({
    "action": st.one_of(st.sampled_from(["ask", "feedback", "escalate", "escalate_confirm", "escalate_cancel",
                                         "resolve", "unknown"]), json_values),
}, optional={
    "question": texts, "role": roles, "clauses": st.one_of(st.lists(st.text(max_size=70), max_size=8), json_values),
    "question_id": st.one_of(st.text(max_size=70), st.just("0" * 32), json_values),
    "helpful": json_values, "ticket_id": st.one_of(st.text(max_size=70), json_values),
}))
mention_entities = st.lists(st.one_of(json_values, st.fixed_dictionaries({
    "type": st.sampled_from(["mention", "Mention", "clientInfo", "x"]),
    "text": st.one_of(st.just("<at>Policy Adviser</at>"), json_values),
    "mentioned": st.one_of(st.just({"id": BOT_ID, "name": "Policy Adviser"}), json_values)})), max_size=3)


@st.composite
def activities(draw: st.DrawFn, service_url: str) -> dict:
    """A Bot Framework activity with Teams' field names and arbitrary values; its serviceUrl is the recorder's."""
    activity = message(None, service_url, conversation_type=draw(st.sampled_from(
        ["personal", "channel", "groupChat"])), activity_id=draw(st.text(min_size=1, max_size=20)))
    # A new sender each time: one sender's burst would only meet the rate limit (tested on its own below).
    activity["from"] = {"id": f"29:{draw(st.uuids()).hex}", "name": draw(st.text(max_size=20))}
    activity["type"] = draw(st.one_of(st.just("message"), st.sampled_from(
        ["invoke", "conversationUpdate", "messageReaction", "typing", "event", "installationUpdate",
         "endOfConversation", "messageUpdate"]), st.text(max_size=20)))
    activity["text"] = draw(texts)
    for name, strategy in (("value", button_values), ("entities", mention_entities),
                           ("membersAdded", st.lists(st.one_of(st.just({"id": BOT_ID}), st.none(),
                                                               st.fixed_dictionaries({"id": json_scalars})),
                                                     max_size=3)),
                           ("name", st.one_of(st.sampled_from(["adaptiveCard/action", "composeExtension/query",
                                                               "task/fetch", "signin/verifyState"]), json_values)),
                           ("channelData", json_values), ("replyToId", st.text(max_size=20)),
                           ("from", st.fixed_dictionaries({}, optional={
                               "id": json_scalars, "aadObjectId": json_scalars, "name": json_scalars}))):
        if draw(st.booleans()):
            activity[name] = draw(strategy)
    if draw(st.integers(0, 3)) == 0:  # now and then any field at all becomes any JSON
        name = draw(st.sampled_from(sorted(activity)))
        if name != "serviceUrl":  # checked before botbuilder sees it; fuzzed by the raw bodies
            activity[name] = draw(json_values)
    return activity


def any_body(service_url: str) -> st.SearchStrategy:
    as_json = activities(service_url).map(lambda a: json.dumps(a).encode())
    return st.one_of(as_json, as_json, as_json, json_values.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=500))


def is_invoke(body: bytes) -> bool:
    """An invoke gets botbuilder's 501 Not Implemented when the bot has no handler for its name: an answer, not
    a failure."""
    try:
        return json.loads(body).get("type") == "invoke"
    except (ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------- properties
@settings(max_examples=examples(ANONYMOUS_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_anonymous_mode_never_answers_500(teams_servers: TeamsServers, data: st.DataObject) -> None:
    """With TEAMS_ALLOW_ANONYMOUS and a loopback serviceUrl, any JSON activity (messages, card buttons with
    arbitrary values, invokes, mentions, conversation updates, any field replaced by any JSON) or any bytes get a
    status below 500 (or botbuilder's 501 for an invoke the bot does not implement)."""
    body = data.draw(any_body(teams_servers.service_url))
    status, reason = post(teams_servers.anonymous, None, raw=body)
    event(f"HTTP {status} {reason[:50]!r}")
    assert status < 500 or status == 501 and is_invoke(body)


# Inputs the properties above found that once raised inside the bot (the user got "Sorry, something went wrong").
FOUND_BY_FUZZING = {
    "null mention entity in a channel": {"conversation": {"id": "19:c", "conversationType": "channel"},
                                         "entities": [None], "text": "<at>Policy Adviser</at> logo?"},
    "null mention entity in a chat": {"entities": [None, {"type": "mention"}], "text": "logo?"},
    "null member added": {"type": "conversationUpdate", "membersAdded": [None, {"id": BOT_ID}]},
    "list for a question id": {"value": {"action": "feedback", "question_id": ["x"], "helpful": True}},
    "list for a role": {"value": {"action": "escalate", "role": ["chief executive"], "question": "q"}},
}


@pytest.mark.parametrize("case", list(FOUND_BY_FUZZING))
def test_activities_found_by_fuzzing_are_handled(teams_servers: TeamsServers, case: str) -> None:
    """Each activity that once raised inside the bot is now handled without an exception in our code."""
    before = len(teams_servers.errors.records)
    activity = message("logo?", teams_servers.service_url) | FOUND_BY_FUZZING[case]
    status, _ = post(teams_servers.anonymous, activity)
    assert status < 500
    raised = [r.getMessage() for r in teams_servers.errors.records[before:] if raised_in_our_code(r)]
    assert raised == []


@settings(max_examples=examples(AUTHENTICATED_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_authenticated_activities_with_any_content_never_get_500(teams_servers: TeamsServers,
                                                                  data: st.DataObject) -> None:
    """With an app id set, an activity carrying a valid Bot Framework token for its serviceUrl (as only Microsoft
    could sign) and arbitrary content gets a status below 500."""
    activity = data.draw(activities(teams_servers.service_url))
    token = bot_framework_token(teams_servers.signing_key, teams_servers.service_url)
    status, _ = post(teams_servers.authenticated, activity, token=token)
    event(f"HTTP {status}")
    assert status < 500 or status == 501 and activity.get("type") == "invoke"


forged_tokens = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300),
    st.lists(st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
             min_size=3, max_size=3).map(".".join),
    st.sampled_from(["", "null", "eyJhbGciOiJub25lIn0.eyJhdWQiOiIwYjVlYTNiMiJ9.", "Basic Zm9vOmJhcg=="]),
)


@settings(max_examples=examples(FORGED_TOKEN_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), token=forged_tokens, audience=st.sampled_from([APP_ID, "another-app"]),
       forge=st.sampled_from(["garbage", "other key", "unsigned alg none"]))
def test_forged_tokens_are_refused_with_401(teams_servers: TeamsServers, data: st.DataObject, token: str,
                                            audience: str, forge: str) -> None:
    """With an app id set, garbage bearer tokens, tokens signed by another key and unsigned ("alg": "none") tokens
    are refused: 401 for a well-formed activity, 400 for a malformed one, never 500, and nothing is sent."""
    if forge == "other key":
        token = bot_framework_token(OTHER_KEY, teams_servers.service_url, audience=audience)
    elif forge == "unsigned alg none":
        token = jwt.encode({"iss": "https://api.botframework.com", "aud": audience,
                            "serviceurl": teams_servers.service_url}, None, algorithm="none")
    before = len(teams_servers.recording.posts)
    status, _ = post(teams_servers.authenticated, None, token=token, raw=data.draw(any_body(
        teams_servers.service_url)))
    event(f"HTTP {status}")
    assert status in (400, 401)
    assert len(teams_servers.recording.posts) == before


def test_after_the_fuzz_both_servers_still_answer_and_nothing_of_ours_failed(teams_servers: TeamsServers) -> None:
    """Run after the properties above: both servers still answer the logo question with a card citing 5.3, and no
    exception was raised in this project's code on any fuzzed activity (botbuilder would have swallowed it into
    an error card, leaving the user without an answer)."""
    recording, service_url = teams_servers.recording, teams_servers.service_url
    token = bot_framework_token(teams_servers.signing_key, service_url)
    for base_url, auth in ((teams_servers.anonymous, None), (teams_servers.authenticated, token)):
        before = len(recording.messages())
        status, _ = post(base_url, message(LOGO_QUESTION, service_url, conversation_id="a:after-fuzz"), token=auth)
        assert status == 200
        replies = recording.messages()[before:]
        assert "Clause 5.3" in unescape(card_texts(replies[-1]["json"]["attachments"][0]["content"]))
        assert http_get(base_url, "/healthz")[0] == 200
    assert teams_servers.errors.raised_in_our_code() == []


# ---------------------------------------------------------------------------------------------- limits
def test_a_long_question_is_answered_with_a_note_the_user_sees(teams_servers: TeamsServers) -> None:
    """A question longer than POLICYBOT_MAX_QUESTION_CHARS is answered from its beginning, and the card tells the
    user it was shortened (not silently truncated)."""
    recording, service_url = teams_servers.recording, teams_servers.service_url
    long_question = LOGO_QUESTION + " " + "and also some more background to my question " * 40
    before = len(recording.messages())
    status, _ = post(teams_servers.anonymous, message(long_question, service_url, conversation_id="a:long"))
    assert status == 200
    texts = unescape(card_texts(recording.messages()[before]["json"]["attachments"][0]["content"]))
    assert "only its first 1000 characters were used" in texts
    assert "Clause 5.3" in texts


@pytest.mark.parametrize("server", ["anonymous", "authenticated"])
def test_a_body_over_1_mib_gets_413(teams_servers: TeamsServers, server: str) -> None:
    """A body over 1 MiB is refused with 413 before it is parsed or its token checked, in both modes, and nothing
    is sent."""
    before = len(teams_servers.recording.posts)
    huge = message("x" * (MAX_BODY_BYTES + 1), teams_servers.service_url)
    status, _ = post(getattr(teams_servers, server), huge, token="any.bearer.token")
    assert status == 413
    assert len(teams_servers.recording.posts) == before


def test_the_21st_question_in_a_minute_gets_the_polite_message_across_two_instances(
        adviser: Adviser, teams_servers: TeamsServers, tmp_path: Path) -> None:
    """POLICYBOT_RATE_LIMIT_PER_MINUTE=20 is held in the shared database: a Teams user whose questions alternate
    between two server instances (each with its own Store on one database file) gets 20 answers and then the
    polite rate-limit message."""
    limit = Settings.from_env({"POLICYBOT_RATE_LIMIT_PER_MINUTE": "20"}).rate_limit_per_minute
    live, recording, service_url = teams_servers.live, teams_servers.recording, teams_servers.service_url
    settings_ = dataclasses.replace(adviser.settings, data_dir=tmp_path, teams_allow_anonymous=True,
                                    rate_limit_per_minute=limit)
    stores = [Store.open(f"sqlite:///{tmp_path / 'shared.sqlite3'}", KEY) for _ in range(2)]
    services = [AdviserService(settings_, adviser) for _ in range(2)]
    urls = [live.serve(create_app(settings_, service, store)) for service, store in zip(services, stores,
                                                                                         strict=True)]
    try:
        before = len(recording.messages())
        for number in range(limit + 1):
            status, _ = post(urls[number % 2], message(LOGO_QUESTION, service_url, conversation_id="a:limited"))
            assert status == 200
        replies = [unescape(card_texts(m["json"]["attachments"][0]["content"]))
                   for m in recording.messages()[before:]]
    finally:
        for service, store in zip(services, stores, strict=True):
            service.close()
            store.close()
    assert len(replies) == limit + 1
    assert all("Clause 5.3" in reply for reply in replies[:limit])
    assert RATE_LIMITED in replies[limit] and "Clause 5.3" not in replies[limit]

