"""Teams end to end over HTTP: the real aiohttp server from bot.server.create_app, real botbuilder CloudAdapter and
token validation, and loopback servers at the network edge only: one plays the Bot Framework serviceUrl and records
what the bot sends back, one serves the OpenID metadata and signing keys for tokens signed by a local RSA key."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack

import jwt
import pytest
from aiohttp import ClientSession, web
from botframework.connector.auth import AppCredentials, ServiceClientCredentialsFactory
from cryptography.hazmat.primitives.asymmetric import rsa
from live_server import openid_endpoint, serving
from teams_support import (
    KEY,
    LOGO_QUESTION,
    ServiceUrlRecorder,
    actions_of,
    card_texts,
    message,
    shared_adviser,
    unescape,
)

from bot.render_teams import MAX_CARD_BYTES
from bot.server import MAX_BODY_BYTES, create_app
from bot.service import AdviserService
from bot.store import Store
from bot.teams import TEAMS_ENDPOINT_KEY, TeamsEndpoint, is_loopback_url

APP_ID = "0b5ea3b2-1111-4222-8333-944455556666"
KEY_ID = "local-test-key"
OUTBOUND_TOKEN = "outbound-token-from-the-loopback-credentials"


@pytest.fixture(scope="session")
def teams_adviser(tmp_path_factory):
    return shared_adviser(tmp_path_factory)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # botbuilder talks to the serviceUrl with `requests`, which would route loopback through a configured proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ------------------------------------------------------------------------------------ loopback servers
@pytest.fixture
async def recorder() -> AsyncIterator[tuple[ServiceUrlRecorder, str]]:
    recording = ServiceUrlRecorder()
    async with serving(recording.app()) as url:
        yield recording, url + "/"


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'records.sqlite3'}", KEY)
    yield store
    store.close()


class BotServer:
    def __init__(self, url: str, app: web.Application) -> None:
        self.url = url
        self.app = app

    async def post(self, body: object, token: str | None = None, content_type: str = "application/json",
                   raw: bytes | None = None) -> tuple[int, str]:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else json.dumps(body).encode()
        async with ClientSession() as session, session.post(self.url + "/api/messages", data=data,
                                                             headers=headers) as response:
            return response.status, await response.text()


@pytest.fixture
async def serve(teams_adviser, store, tmp_path) -> AsyncIterator:
    """Start the real server (create_app) on an ephemeral loopback port with the given Teams settings."""
    async with AsyncExitStack() as started:  # on the way out: each server stopped, then its service closed
        async def start_server(credentials_factory=None, **teams_settings) -> BotServer:  # noqa: ANN001
            settings = dataclasses.replace(teams_adviser.settings, data_dir=tmp_path, **teams_settings)
            service = AdviserService(settings, teams_adviser)
            started.callback(service.close)
            app = create_app(settings, service, store)
            if credentials_factory is not None:
                # The documented seam: an endpoint whose outbound tokens come from elsewhere than Entra.
                app[TEAMS_ENDPOINT_KEY] = TeamsEndpoint(settings, service, store, credentials_factory)
            url = await started.enter_async_context(serving(app))
            return BotServer(url, app)

        yield start_server


# ------------------------------------------------------------------------------ anonymous (Emulator) mode
async def test_done_when_logo_question_gets_a_card_citing_5_3_at_the_service_url(serve, recorder):
    """The issue's "done when": with TEAMS_ALLOW_ANONYMOUS, the logo question POSTed to /api/messages is answered
    with an Adaptive Card (version <= 1.5, < 80 KB) sent as a reply to the activity at its loopback serviceUrl,
    citing 5.3 and naming the chief executive; a typing indicator goes first."""
    recording, service_url = recorder
    server = await serve(teams_allow_anonymous=True)
    activity = message(LOGO_QUESTION, service_url, activity_id="incoming-1")
    status, _ = await server.post(activity)
    assert status == 200
    types = [p["json"]["type"] for p in recording.posts]
    assert types[0] == "typing" and types.count("message") == 1
    [reply] = recording.messages()
    assert reply["path"] == "/v3/conversations/a:personal-alex/activities/incoming-1"
    assert reply["json"]["replyToId"] == "incoming-1"
    [attachment] = reply["json"]["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert tuple(int(n) for n in card["version"].split(".")) <= (1, 5)
    assert len(json.dumps(card).encode()) < MAX_CARD_BYTES
    texts = unescape(card_texts(card))
    assert "Clause 5.3" in texts and "chief executive" in texts
    assert any(a["title"] == "Ask the chief executive" for a in actions_of(card, "Action.Submit"))
    assert reply["authorization"] == ""  # anonymous mode has no credentials to send


@pytest.mark.parametrize("service_url", [
    "https://smba.trafficmanager.net/uk/",
    "http://10.0.0.8:8080/",
    "http://127.0.0.1@evil.example/",
    "http://localhost.evil.example/",
    "http://2130706433/",
    "ftp://127.0.0.1/",
])
async def test_anonymous_mode_refuses_non_loopback_service_urls(serve, recorder, service_url):
    """Without authentication the serviceUrl is the caller's word, so the bot refuses (403/400) any that is not
    loopback, before botbuilder sees it, and sends nothing anywhere."""
    recording, _ = recorder
    server = await serve(teams_allow_anonymous=True)
    status, _ = await server.post(message(LOGO_QUESTION, service_url))
    assert status in (400, 403)
    assert recording.posts == []


def test_loopback_check_accepts_only_loopback_hosts():
    """The serviceUrl check accepts localhost, 127.0.0.0/8 and ::1, and nothing that merely looks like them."""
    assert all(is_loopback_url(u) for u in ("http://127.0.0.1:3978/", "http://127.8.9.10/", "http://[::1]:80/",
                                             "https://localhost/x"))
    assert not any(is_loopback_url(u) for u in ("http://[::ffff:8.8.8.8]/", "http://127.0.0.1.nip.io/",
                                                 "http://127.0.0.1:99999/", "javascript:alert(1)", ""))


async def test_without_app_id_or_anonymous_mode_everything_is_refused(serve, recorder):
    """No silent anonymous mode: with neither MicrosoftAppId nor TEAMS_ALLOW_ANONYMOUS, activities get 401."""
    recording, service_url = recorder
    server = await serve()
    status, _ = await server.post(message(LOGO_QUESTION, service_url))
    assert status == 401 and recording.posts == []


async def test_malformed_requests_get_4xx_not_500(serve, recorder):
    """Malformed JSON is 400, a non-JSON content type 415, a JSON array or an activity without serviceUrl 400,
    and a body over 1 MiB 413; nothing is sent for any of them."""
    recording, service_url = recorder
    server = await serve(teams_allow_anonymous=True)
    assert (await server.post(None, raw=b'{"type": "message", '))[0] == 400
    assert (await server.post(None, raw=b"\xff\xfe not utf-8"))[0] == 400
    assert (await server.post(message("hi", service_url), content_type="text/plain"))[0] == 415
    assert (await server.post([message("hi", service_url)]))[0] == 400
    no_url = message("hi", service_url)
    del no_url["serviceUrl"]
    assert (await server.post(no_url))[0] == 400
    assert (await server.post({**message("hi", service_url), "from": [1, 2]}))[0] == 400
    huge = message("x" * (MAX_BODY_BYTES + 1), service_url)
    assert (await server.post(huge))[0] == 413
    assert recording.posts == []


async def test_unsupported_invokes_get_an_invoke_status_not_a_crash(serve, recorder):
    """Invokes the bot does not implement (Action.Execute, message extensions) get botbuilder's 4xx/501 invoke
    status with a JSON body, never an unhandled 500."""
    _, service_url = recorder
    server = await serve(teams_allow_anonymous=True)
    for name, expected in (("adaptiveCard/action", 400), ("composeExtension/query", 501)):
        invoke = {**message(None, service_url), "type": "invoke", "name": name, "value": {}}
        status, body = await server.post(invoke)
        assert status == expected, name
        json.loads(body or "null")


# ------------------------------------------------------------------------------------------ with an app id
@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def openid_server(signing_key) -> Iterator[str]:
    """Serve OpenID metadata and a JWKS holding the local public key, and point botbuilder's channel token
    validation at it (ChannelValidation.open_id_metadata_endpoint). A thread, because botbuilder fetches keys
    with blocking `requests` calls."""
    with openid_endpoint(signing_key, KEY_ID) as endpoint:
        yield endpoint


def bot_framework_token(key, service_url: str, audience: str = APP_ID, expires_in: int = 300,
                        kid: str = KEY_ID) -> str:
    """A token shaped like the Bot Framework's: issuer api.botframework.com, audience the bot's app id, and the
    serviceurl claim that binds it to the activity's serviceUrl."""
    now = int(time.time())
    claims = {"iss": "https://api.botframework.com", "aud": audience, "serviceurl": service_url,
              "nbf": now - 60, "iat": now - 60, "exp": now + expires_in}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


class LoopbackCredentials(AppCredentials):
    """Outbound credentials with a fixed token, standing in for Entra's token endpoint at the network edge."""

    def get_access_token(self, force_refresh: bool = False) -> str:
        return OUTBOUND_TOKEN


class LoopbackCredentialsFactory(ServiceClientCredentialsFactory):
    def __init__(self) -> None:
        self.created = 0

    async def is_valid_app_id(self, app_id: str) -> bool:
        return app_id == APP_ID

    async def is_authentication_disabled(self) -> bool:
        return False

    async def create_credentials(self, app_id, oauth_scope, login_endpoint, validate_authority):  # noqa: ANN001, ANN201
        self.created += 1
        return LoopbackCredentials(app_id=app_id, oauth_scope=oauth_scope)


def app_id_settings() -> dict:
    from bot.settings import Secret

    return {"teams_app_id": APP_ID, "teams_app_password": Secret("not-used-offline"),
            "teams_allow_anonymous": True}  # anonymous is ignored once an app id is set


async def test_app_id_set_no_token_and_garbage_tokens_get_401_and_nothing_is_sent(
        serve, recorder, openid_server, signing_key):
    """With MicrosoftAppId set: no token, a garbage bearer token, a token signed by another key, an expired one,
    one for another bot, and one bound to a different serviceUrl all get 401 (botbuilder alone answers 500 to
    some), and the bot sends nothing."""
    recording, service_url = recorder
    server = await serve(**app_id_settings())
    activity = message(LOGO_QUESTION, service_url)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "no token": None,
        "garbage": "garbage",
        "three garbage parts": "aaa.bbb.ccc",
        "other key, unknown kid": bot_framework_token(other_key, service_url, kid="not-ours"),
        "other key, our kid": bot_framework_token(other_key, service_url),
        "expired": bot_framework_token(signing_key, service_url, expires_in=-3600),
        "another bot": bot_framework_token(signing_key, service_url, audience="another-app"),
        "other serviceUrl": bot_framework_token(signing_key, "https://smba.trafficmanager.net/uk/"),
    }
    for name, token in refused.items():
        status, _ = await server.post(activity, token=token)
        assert status == 401, name
    status, _ = await server.post(activity, token=None, content_type="application/json")
    assert status == 401
    assert recording.posts == []


async def test_valid_token_is_accepted_and_the_reply_is_sent_with_the_bots_credentials(
        serve, recorder, openid_server, signing_key):
    """A token signed by the (local) Bot Framework key, for this bot and this serviceUrl, is accepted: the card
    is sent to the serviceUrl carrying the bot's own outbound token, and the outbound credentials are built once
    and reused (so Entra's token cache survives between messages)."""
    recording, service_url = recorder
    credentials = LoopbackCredentialsFactory()
    server = await serve(credentials_factory=credentials, **app_id_settings())
    token = bot_framework_token(signing_key, service_url)
    for question in (LOGO_QUESTION, "Someone is trolling me online, who do I tell?"):
        status, _ = await server.post(message(question, service_url), token=token)
        assert status == 200
    logo, trolling = recording.messages()
    assert logo["authorization"] == trolling["authorization"] == f"Bearer {OUTBOUND_TOKEN}"
    assert "Clause 5.3" in unescape(card_texts(logo["json"]["attachments"][0]["content"]))
    assert "Clause 7.2" in unescape(card_texts(trolling["json"]["attachments"][0]["content"]))
    assert credentials.created == 1
