"""A loopback stand-in for the Slack Web API and response_urls that records every call, plus Slack-signed request
builders: the network edge of the Slack end-to-end tests. And `running_with_stub`, which starts the real server
(create_app) wired to a fresh stand-in."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from live_server import serving

from bot.adviser import Adviser
from bot.server import create_app
from bot.service import AdviserService
from bot.settings import Secret, Settings
from bot.store import Store

BOT_USER_ID = "UBOTPOLICY"
BOT_ID = "BBOTPOLICY"
TEAM_ID = "T0COUNCIL"
BOT_TOKEN = "xoxb-test-bot-token-not-real"
SIGNING_SECRET = "test-signing-secret-not-real"
JSON_FIELDS = ("blocks", "view", "attachments", "metadata")  # sent as JSON strings inside form bodies


@dataclass
class Call:
    """One request the app made: the Web API method (or "respond:<name>" for a response_url), its parameters,
    the Authorization header and when it arrived (time.monotonic())."""

    method: str
    payload: dict[str, Any]
    authorization: str
    at: float
    status: int = 200


@dataclass
class Fault:
    status: int
    retry_after: int | None = None


@dataclass
class SlackStub:
    """Plays the Slack Web API on 127.0.0.1: answers auth.test, chat.*, reactions.*, views.*, conversations.open
    like Slack does, records calls per method, and can be told to fail (429 with Retry-After, 500) or to be slow."""

    calls: list[Call] = field(default_factory=list)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))
    _socket: web.WebSocketResponse | None = None

    async def start(self) -> SlackStub:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk sends a few methods (chat.getPermalink) as GET
        app.router.add_post("/respond/{name}", self._respond)
        app.router.add_get("/link", self._socket_mode)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/respond/{name}"

    def fail(self, method: str, status: int, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next `times` calls of `method` with `status` (429 carries Retry-After)."""
        self.faults.setdefault(method, []).extend(Fault(status, retry_after) for _ in range(times))

    def delay(self, method: str, seconds: float) -> None:
        self.delays[method] = seconds

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Wait until `method` has been called at least `count` times; fail the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.calls_to(method)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = sorted({c.method for c in self.calls})
                raise AssertionError(f"{method} called {len(self.calls_to(method))} times, wanted {count}; "
                                     f"calls seen: {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return self.calls_to(method)

    async def socket_send(self, envelope: dict[str, Any], timeout: float = 10.0) -> None:
        """Send a Socket Mode envelope to the connected app (waiting for it to connect)."""
        deadline = time.monotonic() + timeout
        while self._socket is None:
            if time.monotonic() > deadline:
                raise AssertionError("the app never opened a Socket Mode connection")
            await asyncio.sleep(0.05)
        await self._socket.send_json(envelope)

    # ------------------------------------------------------------------------------------------ handlers
    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        """Socket Mode's websocket: says hello like Slack, then records every envelope ack the app sends."""
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json({"type": "hello", "num_connections": 1,
                                "connection_info": {"app_id": "A0POLICY"}})
        self._socket = socket
        async for frame in socket:
            if frame.type == web.WSMsgType.TEXT:
                self._record(Call("socket:ack", json.loads(frame.data), "", time.monotonic()))
        return socket

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        payload = await _read_payload(request)
        call = Call(method, payload, request.headers.get("Authorization", ""), time.monotonic())
        faults = self.faults.get(method)
        if faults:
            fault = faults.pop(0)
            call.status = fault.status
            self._record(call)
            if fault.status == 429:
                headers = {"Retry-After": str(fault.retry_after or 1)}
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
            return web.Response(status=fault.status, text="Internal Server Error")
        if method in self.delays:
            await asyncio.sleep(self.delays[method])
        self._record(call)
        return web.json_response(self._answer(method, payload))

    async def _respond(self, request: web.Request) -> web.Response:
        payload = await _read_payload(request)
        self._record(Call(f"respond:{request.match_info['name']}", payload, "", time.monotonic()))
        return web.Response(text="ok")

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._changed.set()

    def _answer(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://council.slack.com/", "team": "Council", "user": "policybot",
                    "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}
        if method in ("chat.postMessage", "chat.update"):
            ts = payload.get("ts") or f"1700001000.{next(self._ts):06d}"
            return {"ok": True, "channel": payload.get("channel"), "ts": ts,
                    "message": {"text": payload.get("text"), "ts": ts, "bot_id": BOT_ID}}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1700002000.{next(self._ts):06d}"}
        if method == "chat.getPermalink":
            return {"ok": True, "channel": payload.get("channel"),
                    "permalink": f"https://council.slack.com/archives/{payload.get('channel')}/p1"}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D0ASKER"}}
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"}
        if method in ("views.open", "views.publish"):
            return {"ok": True, "view": {"id": "V1", **(payload.get("view") or {})}}
        return {"ok": True}


async def _read_payload(request: web.Request) -> dict[str, Any]:
    raw = await request.text()
    if request.content_type == "application/json":
        payload = json.loads(raw or "{}")
    else:
        payload = dict(parse_qsl(raw, keep_blank_values=True))
    payload = dict(request.query) | payload  # slack_sdk sends some methods' arguments as query parameters
    for name in JSON_FIELDS:
        if isinstance(payload.get(name), str):
            payload[name] = json.loads(payload[name])
    return payload


# ---------------------------------------------------------------------------------------------- the real server
@dataclass
class StubbedServer:
    """The real server on a loopback port, the Slack stand-in it talks to, its service and store, and an HTTP
    session for the test. Test modules subclass it with their own request helpers."""

    base_url: str
    stub: SlackStub
    service: AdviserService
    store: Store
    session: aiohttp.ClientSession


Server = TypeVar("Server", bound=StubbedServer)


@asynccontextmanager
async def running_with_stub(kind: type[Server], adviser: Adviser | None, tmp_path: Path, database: str,
                            runner_options: dict[str, Any] | None = None, **settings: Any) -> AsyncIterator[Server]:
    """Start a SlackStub and the real app (create_app: bolt, botbuilder, the service, a SQLite store at
    tmp_path/database) with Slack settings pointing at the stub; `runner_options` go to aiohttp's AppRunner (the
    access log), `settings` to Settings. Everything is stopped and closed on the way out."""
    stub = await SlackStub().start()
    config = Settings(policy_dir=adviser.settings.policy_dir if adviser else tmp_path, data_dir=tmp_path,
                      slack_bot_token=Secret(BOT_TOKEN), slack_signing_secret=Secret(SIGNING_SECRET),
                      slack_api_url=stub.api_url, **settings)
    service = AdviserService(config, adviser)
    store = Store.open(f"sqlite:///{tmp_path}/{database}", b"k" * 32)
    try:
        async with serving(create_app(config, service, store), **(runner_options or {})) as base_url, \
                aiohttp.ClientSession() as session:
            yield kind(base_url, stub, service, store, session)
    finally:
        await stub.stop()
        service.close()
        store.close()


# ---------------------------------------------------------------------------------------------- Slack requests
def sign(body: str | bytes, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 signature of a text body (UTF-8) or of any bytes, computed independently of the code under test."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def signed_headers(body: str, content_type: str, timestamp: int | None = None, retry: int | None = None,
                   secret: str = SIGNING_SECRET) -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": sign(body, ts, secret)}
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return headers


_event_ids = itertools.count(1)


def event_body(event: dict[str, Any], event_id: str | None = None) -> str:
    """An Events API event_callback envelope around `event`."""
    return json.dumps({
        "token": "legacy-unused", "team_id": TEAM_ID, "api_app_id": "A0POLICY", "type": "event_callback",
        "event": {"event_ts": event.get("ts", "1700000000.000001"), **event},
        "event_id": event_id or f"Ev{next(_event_ids):08d}", "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
    })


def mention(text: str, ts: str, channel: str = "C0GENERAL", user: str = "U0ASKER", thread_ts: str = "") -> dict:
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts, "channel": channel}
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


def message(text: str, ts: str, channel: str, channel_type: str, user: str = "U0ASKER", thread_ts: str = "",
            **extra: Any) -> dict:
    event = {"type": "message", "user": user, "text": text, "ts": ts, "channel": channel,
             "channel_type": channel_type}
    return event | ({"thread_ts": thread_ts} if thread_ts else {}) | extra


def command_body(text: str, response_url: str, user: str = "U0ASKER", channel: str = "C0GENERAL") -> str:
    """A /policy slash command as Slack form-encodes it."""
    return urlencode({
        "token": "legacy-unused", "team_id": TEAM_ID, "team_domain": "council", "channel_id": channel,
        "channel_name": "general", "user_id": user, "user_name": "councillor", "command": "/policy",
        "text": text, "api_app_id": "A0POLICY", "response_url": response_url, "trigger_id": "1.2.trigger",
    })


def interaction_body(payload: dict[str, Any]) -> str:
    """An interactivity payload (block_actions, view_submission, message_action) as Slack form-encodes it."""
    base = {"team": {"id": TEAM_ID, "domain": "council"}, "api_app_id": "A0POLICY", "token": "legacy-unused",
            "user": {"id": "U0ASKER", "team_id": TEAM_ID}, "trigger_id": "1.2.trigger"}
    return urlencode({"payload": json.dumps(base | payload)})


def block_action(action: dict[str, Any], channel: str, message: dict[str, Any], response_url: str,
                 ephemeral: bool = False, user: str = "U0ASKER") -> str:
    """A click on a button of `message` (the message as the app posted it, with its ts)."""
    return interaction_body({
        "type": "block_actions", "user": {"id": user, "team_id": TEAM_ID},
        "container": {"type": "message", "message_ts": message.get("ts", ""), "channel_id": channel,
                      "is_ephemeral": ephemeral},
        "channel": {"id": channel, "name": "general"}, "message": message, "response_url": response_url,
        "actions": [{"type": "button", "block_id": "b1", "action_ts": str(time.time()), **action}],
    })


def find_buttons(blocks: list[dict[str, Any]], action_prefix: str) -> list[dict[str, Any]]:
    """Every button in `blocks` whose action_id starts with `action_prefix`."""
    found = []
    for block in blocks:
        elements = list(block.get("elements") or []) + ([block["accessory"]] if "accessory" in block else [])
        found += [e for e in elements if e.get("type") == "button" and e["action_id"].startswith(action_prefix)]
    return found


def all_text(payload: Any) -> str:
    """Every string inside a message payload, joined: what a user could see, or Slack could parse."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict):
        return "\n".join(all_text(v) for v in payload.values())
    if isinstance(payload, list):
        return "\n".join(all_text(v) for v in payload)
    return ""
