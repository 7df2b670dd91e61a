"""The aiohttp server: Slack at /slack/events, Teams at /api/messages, /healthz, on one port."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bot.service import AdviserService
from bot.settings import Settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024  # Slack and Teams payloads are far smaller; anything bigger is refused with 413

SERVICE_KEY = web.AppKey("service", AdviserService)
SETTINGS_KEY = web.AppKey("settings", Settings)


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    if service.ready:
        return web.json_response({"status": "ok"})
    body = {"status": "loading" if not service.load_error else "error"}
    return web.json_response(body, status=503)


def create_app(settings: Settings, service: AdviserService, store=None) -> web.Application:  # noqa: ANN001
    """Build the web application with every platform whose settings are present."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SERVICE_KEY] = service
    app[SETTINGS_KEY] = settings
    app.router.add_get("/healthz", healthz)
    if settings.slack_bot_token and settings.slack_signing_secret:
        from bot.slack_app import setup_slack

        setup_slack(app, service, store, settings)
    try:
        from bot.teams import setup_teams
    except ImportError:
        setup_teams = None
    if setup_teams is not None:
        setup_teams(app, service, store, settings)
    return app


def _open_store(settings: Settings):  # noqa: ANN202
    try:
        from bot.store import Store
    except ImportError:
        return None
    from bot.record import pseudonym_key

    return Store.open(settings.effective_database_url, pseudonym_key(settings))


def run_server(settings: Settings, host: str | None = None, port: int | None = None, socket_mode: bool = False) -> int:
    """Start the server; the adviser loads in the background and /healthz turns 200 when it is ready."""
    logging.getLogger().setLevel(logging.INFO)
    service = AdviserService(settings)
    store = _open_store(settings)
    app = create_app(settings, service, store)

    async def load_adviser(app: web.Application) -> None:
        app["loader"] = asyncio.get_running_loop().create_task(service.start())

    app.on_startup.append(load_adviser)
    if socket_mode:
        from bot.slack_app import start_socket_mode

        async def slack_socket_mode(app: web.Application):  # noqa: ANN202 - an aiohttp cleanup context
            handler = await start_socket_mode(app, service, store, settings)
            yield
            await handler.close_async()

        app.cleanup_ctx.append(slack_socket_mode)
    web.run_app(app, host=host or settings.host, port=port or settings.port, print=None)
    return 0
