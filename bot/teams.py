"""Microsoft Teams on the shared aiohttp server: POST /api/messages through botbuilder's CloudAdapter.

All botbuilder-specific code lives here and in bot/teams_bot.py; the rest of the project sees only
`setup_teams(app, service, store, settings)`, and the cards (bot/render_teams.py) are plain dicts. A move to the
Microsoft 365 Agents SDK replaces these two modules and nothing else.

The request is checked before botbuilder sees it, because botbuilder answers 500 to a malformed token, and in
anonymous mode would POST its reply to whatever serviceUrl the caller names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from aiohttp import web
from botbuilder.core import TurnContext, serializer_helper
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
    ConfigurationServiceClientCredentialFactory,
)
from botbuilder.schema import Activity
from botframework.connector.auth import AuthenticateRequestResult, ServiceClientCredentialsFactory
from msrest.authentication import Authentication
from msrest.exceptions import ClientRequestError

from bot.render_teams import render_notice_card
from bot.service import AdviserService
from bot.settings import Settings
from bot.teams_bot import PolicyBot, card_activity

log = logging.getLogger(__name__)

MESSAGES_PATH = "/api/messages"
AUTH_TIMEOUT_S = 10.0  # fetching Microsoft's signing keys; beyond this the request is refused, not left hanging


@dataclass(frozen=True)
class BotFrameworkConfig:
    """The configuration object botbuilder's ConfigurationBotFrameworkAuthentication reads (attribute names are
    botbuilder's), built from Settings: MicrosoftAppId, MicrosoftAppPassword, MicrosoftAppTenantId, MicrosoftAppType."""

    APP_ID: str
    APP_PASSWORD: str = field(repr=False)
    APP_TENANTID: str
    APP_TYPE: str

    @classmethod
    def from_settings(cls, settings: Settings) -> BotFrameworkConfig:
        return cls(
            APP_ID=settings.teams_app_id,
            APP_PASSWORD=settings.teams_app_password.reveal(),
            APP_TENANTID=settings.teams_tenant_id,
            APP_TYPE=settings.teams_app_type or "MultiTenant",
        )


def config_problem(settings: Settings) -> str:
    """What is wrong with the Teams settings, in words an administrator can act on; "" when they are usable."""
    if not settings.teams_app_id:
        return ""
    app_type = (settings.teams_app_type or "MultiTenant").lower()
    if app_type not in ("multitenant", "singletenant", "userassignedmsi"):
        return f"MicrosoftAppType must be MultiTenant, SingleTenant or UserAssignedMSI, not {settings.teams_app_type!r}"
    if app_type in ("singletenant", "userassignedmsi") and not settings.teams_tenant_id:
        return f"MicrosoftAppType={settings.teams_app_type} needs MicrosoftAppTenantId (the Entra tenant id)"
    return ""


def config_warning(settings: Settings) -> str:
    """A setting that does not stop the bot from checking requests but will stop it replying."""
    app_type = (settings.teams_app_type or "MultiTenant").lower()
    if settings.teams_app_id and app_type != "userassignedmsi" and not settings.teams_app_password:
        return "MicrosoftAppPassword is empty: the bot can verify Teams requests but not reply (set the client secret)"
    return ""


class CachingCredentialsFactory(ServiceClientCredentialsFactory):
    """Reuses one credentials object per app id, scope and login endpoint. botbuilder builds new credentials, and
    so fetches a new token from Entra, for every incoming activity; reusing them keeps MSAL's token cache."""

    def __init__(self, inner: ServiceClientCredentialsFactory) -> None:
        self._inner = inner
        self._credentials: dict[tuple, Authentication] = {}

    async def is_valid_app_id(self, app_id: str) -> bool:
        return await self._inner.is_valid_app_id(app_id)

    async def is_authentication_disabled(self) -> bool:
        return await self._inner.is_authentication_disabled()

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> Authentication:
        key = (app_id, oauth_scope, login_endpoint, validate_authority)
        if key not in self._credentials:
            self._credentials[key] = await self._inner.create_credentials(
                app_id, oauth_scope, login_endpoint, validate_authority
            )
        return self._credentials[key]


def build_adapter(
    settings: Settings, credentials_factory: ServiceClientCredentialsFactory | None = None
) -> CloudAdapter:
    """A CloudAdapter configured from settings. `credentials_factory` supplies the bot's outbound tokens (default:
    app id and password via Entra); it is the seam where tests and other clouds plug in."""
    config = BotFrameworkConfig.from_settings(settings)
    factory = CachingCredentialsFactory(credentials_factory or ConfigurationServiceClientCredentialFactory(config))
    adapter = CloudAdapter(ConfigurationBotFrameworkAuthentication(config, credentials_factory=factory))

    async def on_turn_error(turn_context: TurnContext, error: Exception) -> None:
        if isinstance(error, ClientRequestError):
            # The serviceUrl could not be reached (after the client's retries): an error card would only fail
            # the same way, after another round of retries.
            log.error("Teams reply could not be delivered: the serviceUrl is unreachable (%s)",
                      type(error.inner_exception or error).__name__)
            return
        log.error("Teams turn failed: %s", error, exc_info=error)
        try:  # tell the user, but a failure to do so must not turn into a second error
            card = render_notice_card("Sorry, something went wrong. Please try again.")
            await turn_context.send_activity(card_activity(card))
        except Exception as exc:
            log.warning("could not send the error message: %s", type(exc).__name__)

    adapter.on_turn_error = on_turn_error
    return adapter


def is_loopback_url(url: str) -> bool:
    """True only for http(s) URLs whose host is localhost or a loopback address (127.0.0.0/8, ::1); a userinfo
    trick ("http://127.0.0.1@evil.example") or a name that merely resolves to loopback is not accepted."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_http_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_loopback_address(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _refuse(status: int, reason: str) -> web.Response:
    # A short JSON body: the Bot Framework ignores it, a person testing with curl learns why.
    return web.json_response({"error": reason}, status=status)


class TeamsEndpoint:
    """Handles POST /api/messages: validates the request, authenticates it, and runs the turn on the bot."""

    def __init__(
        self,
        settings: Settings,
        service: AdviserService,
        store: object = None,
        credentials_factory: ServiceClientCredentialsFactory | None = None,
    ) -> None:
        self.settings = settings
        self.problem = config_problem(settings)
        self.anonymous = not settings.teams_app_id and settings.teams_allow_anonymous
        self.enabled = bool(settings.teams_app_id) or self.anonymous
        self.bot = PolicyBot(service, store, settings)
        self.adapter = build_adapter(settings, credentials_factory) if self.enabled and not self.problem else None

    async def handle(self, request: web.Request) -> web.Response:
        if not self.enabled:
            return _refuse(401, "Teams is not configured: set MicrosoftAppId (TEAMS_ALLOW_ANONYMOUS=1 only for "
                                "local testing)")
        if self.adapter is None:
            return _refuse(503, "Teams is misconfigured; see the server log")
        if request.content_type != "application/json":
            return _refuse(415, "expected application/json")
        auth_header = request.headers.get("Authorization", "")
        if self.anonymous and not _is_loopback_address(request.remote):
            return _refuse(403, "anonymous mode accepts activities from this machine only")
        if not self.anonymous and not auth_header:
            return _refuse(401, "missing Authorization header")
        activity, problem = await _read_activity(request)  # a body over the size limit raises 413 here
        if activity is None:
            return _refuse(400, problem)
        if self.anonymous:
            if not is_loopback_url(activity.service_url):
                # Without authentication the serviceUrl is the caller's word: never POST anywhere but this machine.
                return _refuse(403, "anonymous mode replies only to a loopback serviceUrl")
            auth_header = ""  # the Emulator sends none; any other would be validated against Microsoft's keys
        auth = await self._authenticate(activity, auth_header)
        if isinstance(auth, web.Response):
            return auth
        try:
            invoke_response = await self.adapter.process_activity(auth, activity, self.bot.on_turn)
        except Exception:
            log.exception("Teams activity %s could not be processed", activity.type)
            return _refuse(500, "the activity could not be processed")
        if invoke_response:
            return web.json_response(_invoke_body(invoke_response.body), status=invoke_response.status)
        return web.Response(status=200)

    async def _authenticate(self, activity: Activity, auth_header: str) -> AuthenticateRequestResult | web.Response:
        """botbuilder's token validation, with every failure mapped to 401 (it would answer 500 to a malformed
        token). It fetches Microsoft's signing keys with blocking `requests` calls, so it runs in a worker thread
        on its own event loop: a slow key server then delays only this request, never Slack's acknowledgements."""
        authentication = self.adapter.bot_framework_authentication
        try:
            if not auth_header:
                return await authentication.authenticate_request(activity, auth_header)
            work = asyncio.to_thread(asyncio.run, authentication.authenticate_request(activity, auth_header))
            return await asyncio.wait_for(work, AUTH_TIMEOUT_S)
        except (TimeoutError, requests.RequestException) as exc:
            log.warning("could not fetch the Bot Framework signing keys: %s", type(exc).__name__)
            return _refuse(503, "cannot verify the token right now")
        except Exception as exc:  # PermissionError, jwt errors, a malformed header: all mean "not authenticated"
            log.info("refused a Teams activity: %s", type(exc).__name__)
            return _refuse(401, "invalid or unauthorised token")


async def _read_activity(request: web.Request) -> tuple[Activity | None, str]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, "malformed JSON"
    if not isinstance(body, dict):
        return None, "the body must be a JSON object (a Bot Framework activity)"
    try:
        activity = Activity().deserialize(body)
    except Exception:
        return None, "not a Bot Framework activity"
    if not isinstance(activity.type, str) or not activity.type:
        return None, "the activity has no type"
    if not _is_http_url(activity.service_url):
        return None, "the activity has no valid serviceUrl"
    if activity.conversation is None or not activity.conversation.id:
        return None, "the activity has no conversation"
    return activity, ""


def _invoke_body(body: object) -> object:
    # botbuilder's error responses to invokes we do not support can carry an exception it cannot serialise.
    if body is None:
        return None
    try:
        return serializer_helper(body)
    except Exception:
        return {"error": "unsupported invoke"}


TEAMS_ENDPOINT_KEY = web.AppKey("teams_endpoint", TeamsEndpoint)


async def handle_messages(request: web.Request) -> web.Response:
    # Looked up per request, so an embedder (or a test) can install an endpoint with its own credentials factory.
    return await request.app[TEAMS_ENDPOINT_KEY].handle(request)


def setup_teams(app: web.Application, service: AdviserService, store: object, settings: Settings) -> None:
    """Add POST /api/messages. Always added: without MicrosoftAppId it refuses every activity with 401 unless
    TEAMS_ALLOW_ANONYMOUS is set (local testing with the Bot Framework Emulator, loopback only)."""
    endpoint = TeamsEndpoint(settings, service, store)
    if endpoint.problem:
        log.error("Teams is misconfigured: %s", endpoint.problem)
    elif config_warning(settings):
        log.error("Teams: %s", config_warning(settings))
    elif endpoint.anonymous:
        log.warning("TEAMS_ALLOW_ANONYMOUS is set: /api/messages accepts unauthenticated activities from this "
                    "machine and replies only to loopback serviceUrls. Never use this in production.")
    elif not endpoint.enabled:
        log.info("Teams is off: set MicrosoftAppId and MicrosoftAppPassword to enable /api/messages")
    app[TEAMS_ENDPOINT_KEY] = endpoint
    app.router.add_post(MESSAGES_PATH, handle_messages)
