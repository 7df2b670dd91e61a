"""The Slack app: bolt's AsyncApp at POST /slack/events through a small aiohttp adapter, or over Socket Mode."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.service import AdviserService
from bot.settings import Settings
from bot.slack_handlers import SlackListeners

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SLACK_API_URL = "https://slack.com/api/"
BOLT_APP_KEY = web.AppKey("slack_bolt_app", AsyncApp)
# Slack allows five minutes of clock skew. We refuse a little earlier than bolt would, so a request can never pass
# our check and then fail bolt's a moment later (bolt logs the body of a request it refuses).
MAX_AGE_SECONDS = 300 - 5
WEB_API_TIMEOUT_SECONDS = 10
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also accepts other scripts' digits
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


# ---------------------------------------------------------------------------------------------- HTTP adapter
def check_request_headers(headers: Mapping[str, str], now: float) -> str | None:
    """Why a request must be refused before bolt sees it, or None. Bolt answers a non-numeric timestamp with 500
    (its int() raises) and logs the body of any request whose signature fails, so anything not shaped like a
    Slack request stops here with a short reason and nothing logged."""
    timestamp = headers.get("X-Slack-Request-Timestamp")
    signature = headers.get("X-Slack-Signature")
    if timestamp is None or signature is None:
        return "missing Slack signature headers"
    if not _TIMESTAMP.fullmatch(timestamp):
        return "malformed request timestamp"
    if abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        return "stale request timestamp"
    if not _SIGNATURE.fullmatch(signature):
        return "malformed signature"
    return None


def valid_signature(signing_secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Slack's v0 signature: HMAC-SHA256 over "v0:{timestamp}:{body}", computed on the raw bytes so a body that is
    not UTF-8 is refused rather than raising."""
    basestring = b"v0:" + timestamp.encode("ascii") + b":" + body
    expected = "v0=" + hmac.new(signing_secret.encode(), basestring, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def _refuse(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason)


def _first_values(request: web.Request) -> dict[str, list[str]]:
    # The first value of each header, as checked above: a repeated header must not let bolt see another.
    headers: dict[str, list[str]] = {}
    for name in request.headers:
        headers.setdefault(name.lower(), [request.headers[name]])
    return headers


def events_handler(bolt_app: AsyncApp, signing_secret: str):  # noqa: ANN201 - an aiohttp handler
    """The aiohttp handler for POST /slack/events: refuse what is not Slack-signed (401), then translate the request
    for bolt, which verifies the signature again and dispatches it, and translate bolt's response back."""

    async def handle(request: web.Request) -> web.StreamResponse:
        reason = check_request_headers(request.headers, time.time())
        if reason is not None:
            return _refuse(401, reason)
        body = await request.read()  # aiohttp answers 413 above the app's client_max_size
        timestamp = request.headers["X-Slack-Request-Timestamp"]
        if not valid_signature(signing_secret, timestamp, body, request.headers["X-Slack-Signature"]):
            return _refuse(401, "invalid signature")
        try:
            bolt_request = AsyncBoltRequest(body=body.decode("utf-8"), query=request.query_string,
                                            headers=_first_values(request))
        except Exception:  # signed but unparseable (Slack never sends this): refuse, without the body
            return _refuse(400, "malformed request body")
        try:
            bolt_response = await bolt_app.async_dispatch(bolt_request)
        except Exception as exc:
            log.error("Slack request could not be dispatched: %s", type(exc).__name__)
            return _refuse(400, "could not process this request")
        if bolt_response.status >= 500:
            # Bolt answers 500 when a signed body breaks its parsing or a listener fails before acknowledging
            # (logged by SlackListeners.on_error). Slack retries either way; 400 says the request was the problem.
            return _refuse(400, "could not process this request")
        return await to_aiohttp_response(bolt_response)

    return handle


# ---------------------------------------------------------------------------------------------- the bolt app
class AsyncTimeoutRetryHandler(AsyncRetryHandler):
    """Retries a Web API call that got no reply within the client's timeout (after a backoff). slack_sdk's own
    handlers retry refused and dropped connections, but aiohttp's overall timeout raises a bare TimeoutError that
    none of them match. A call that did reach Slack but answered late is then made twice; for chat.postMessage
    that is a rare duplicate answer, which we judge better than a lost one."""

    async def _can_retry_async(self, *, state, request, response=None, error=None) -> bool:  # noqa: ANN001
        return isinstance(error, TimeoutError)


def create_web_client(settings: Settings) -> AsyncWebClient:
    """The Web API client: SLACK_API_URL (how tests reach a loopback stand-in), a timeout, and retries with backoff
    for 429 (after Retry-After), 500/503, dropped connections and timeouts. What still fails is logged by the
    caller."""
    base_url = settings.slack_api_url or SLACK_API_URL
    if not base_url.endswith("/"):
        base_url += "/"  # slack_sdk joins base_url and the method name without a separator
    return AsyncWebClient(
        token=settings.slack_bot_token.reveal() or None,
        base_url=base_url,
        timeout=WEB_API_TIMEOUT_SECONDS,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=1),
            AsyncTimeoutRetryHandler(max_retry_count=1),
        ],
    )


def create_bolt_app(settings: Settings, service: AdviserService, store, socket_mode: bool = False) -> AsyncApp:  # noqa: ANN001
    """Bolt's AsyncApp with the Policy Adviser's listeners. Listeners acknowledge at once and answer afterwards
    (process_before_response=False), which keeps every acknowledgement inside Slack's 3 seconds."""
    secret = settings.slack_signing_secret.reveal()
    app = AsyncApp(
        client=create_web_client(settings),
        signing_secret=secret,
        # Socket Mode requests arrive over an authenticated websocket and carry no signature.
        request_verification_enabled=not socket_mode or bool(secret),
        process_before_response=False,
        name="policybot",
    )
    SlackListeners(service, store, settings).register(app)
    return app


def setup_slack(app: web.Application, service: AdviserService, store, settings: Settings) -> AsyncApp:  # noqa: ANN001
    """Mount the Slack app at POST /slack/events (Events API, interactivity and slash commands on one URL)."""
    _silence_bolt_body_logging()
    bolt_app = create_bolt_app(settings, service, store)
    app[BOLT_APP_KEY] = bolt_app
    app.router.add_post(EVENTS_PATH, events_handler(bolt_app, settings.slack_signing_secret.reveal()))
    return bolt_app


async def start_socket_mode(app: web.Application, service: AdviserService, store, settings: Settings):  # noqa: ANN001, ANN201
    """Connect over Socket Mode (SLACK_APP_TOKEN), for councils without a public URL; returns the handler, whose
    close_async() disconnects. Reuses the HTTP app's listeners when the HTTP endpoint is mounted too."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    app_token = settings.slack_app_token.reveal()
    if not app_token:
        raise ValueError("Socket Mode needs SLACK_APP_TOKEN (an app-level token, xapp-..., with connections:write)")
    if not settings.slack_bot_token:
        raise ValueError("Socket Mode needs SLACK_BOT_TOKEN (the bot token, xoxb-...)")
    bolt_app = app.get(BOLT_APP_KEY) or create_bolt_app(settings, service, store, socket_mode=True)
    handler = AsyncSocketModeHandler(bolt_app, app_token, web_client=bolt_app.client)
    await handler.connect_async()
    log.info("connected to Slack over Socket Mode")
    return handler


class _DropRejectedBodies(logging.Filter):
    """Bolt logs "Invalid request signature detected (... body: ...)" at INFO. Our own check refuses such requests
    first; this filter makes sure a body bolt refuses is never written to the logs either."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Invalid request signature")


def _silence_bolt_body_logging() -> None:
    logger = logging.getLogger("slack_bolt.RequestVerification")
    if not any(isinstance(f, _DropRejectedBodies) for f in logger.filters):
        logger.addFilter(_DropRejectedBodies())
