"""The aiohttp server: Slack at /slack/events, Teams at /api/messages, health and metrics, on one port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot.reload import DEFAULT_INTERVAL_SECONDS, PolicyWatcher
from bot.service import AdviserService
from bot.settings import Settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024  # Slack and Teams payloads are far smaller; anything bigger is refused with 413
PROBE_PATHS = ("/healthz", "/readyz", "/livez", "/metrics")  # polled every few seconds: logged at DEBUG only
MAX_REASON_CHARS = 300

SERVICE_KEY = web.AppKey("service", AdviserService)
SETTINGS_KEY = web.AppKey("settings", Settings)
WATCHER_KEY = web.AppKey("watcher", PolicyWatcher)


async def healthz(request: web.Request) -> web.Response:
    """Liveness and readiness in one (the container HEALTHCHECK): 200 only when the adviser is loaded and
    answering, 503 while it loads or when it could not load. The body says what is being served."""
    service = request.app[SERVICE_KEY]
    if service.ready:
        body: dict = {"status": "ok", "index": service.index_summary()}
        if service.reload_error:
            body["last_reload"] = {"status": "failed", "error": service.reload_error[:MAX_REASON_CHARS]}
        return web.json_response(body)
    body = {"status": "error", "error": service.load_error[:MAX_REASON_CHARS]} if service.load_error else {
        "status": "loading"}
    return web.json_response(body, status=503)


async def livez(request: web.Request) -> web.Response:
    """Liveness only: 200 whenever the server is responding, also while a large index is still being built, so
    an orchestrator's liveness probe never restarts a server that is merely loading (use /healthz for readiness)."""
    return web.json_response({"status": "alive"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this app's own registry."""
    service = request.app[SERVICE_KEY]
    service.metrics.ready.set(1 if service.ready else 0)
    body, content_type = service.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


class AccessLogger(AbstractAccessLogger):
    """One structured event per request: method, path (never the query string), status and duration. Health and
    metrics probes are logged at DEBUG so they do not drown the questions."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        level = logging.DEBUG if request.path in PROBE_PATHS else logging.INFO
        self.logger.log(level, "%s %s %s", request.method, request.path, response.status, extra={
            "event": "http_request", "method": request.method, "path": request.path, "status": response.status,
            "duration_ms": round(time * 1000, 1)})


def create_app(settings: Settings, service: AdviserService, store=None) -> web.Application:  # noqa: ANN001
    """Build the web application with every platform whose settings are present."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SERVICE_KEY] = service
    app[SETTINGS_KEY] = settings
    if store is not None:
        service.pseudonymise = store.pseudonymise  # logs and the store name a user by the same pseudonym
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
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


def add_background(app: web.Application, reload_interval: float = DEFAULT_INTERVAL_SECONDS,
                   handle_sighup: bool = True) -> PolicyWatcher:
    """Load the adviser in the background once the server is listening (so /healthz answers 503 meanwhile), then
    keep it in step with the policy folder (bot.reload.PolicyWatcher; `reload_interval` 0 turns polling off, SIGHUP
    still reloads)."""
    service = app[SERVICE_KEY]
    watcher = PolicyWatcher(service, reload_interval)
    app[WATCHER_KEY] = watcher

    async def background(app: web.Application):  # noqa: ANN202 - an aiohttp cleanup context
        loop = asyncio.get_running_loop()
        loader = loop.create_task(_load(service))
        watcher.start(after=loader)
        sighup = handle_sighup and hasattr(signal, "SIGHUP")
        if sighup:
            loop.add_signal_handler(signal.SIGHUP, watcher.request)
        yield
        if sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
        await watcher.stop()

    app.cleanup_ctx.append(background)
    return watcher


async def _load(service: AdviserService) -> None:
    with contextlib.suppress(Exception):  # recorded in service.load_error and logged by start()
        await service.start()


def _open_store(settings: Settings):  # noqa: ANN202
    try:
        from bot.store import Store, StoreUnavailable
    except ImportError:
        return None
    from bot.record import pseudonym_key

    store = Store(settings.effective_database_url, pseudonym_key(settings))
    try:
        store.create_schema()
    except StoreUnavailable as exc:
        # Answer without the database rather than not at all: every store call already fails soft (dedupe in
        # memory, the rate limit allows, question records queue in store.pending); the schema is retried below.
        log.error("record database unavailable at start-up (%s); answering without it until it is back", exc,
                  extra={"event": "store_unavailable"})
        store.schema_missing = True
    return store


async def _create_schema_when_available(service: AdviserService, store, interval: float = 15.0) -> None:  # noqa: ANN001
    while getattr(store, "schema_missing", False):
        try:
            await service.run(store.create_schema)
            store.schema_missing = False
            log.info("record database is back; schema ready", extra={"event": "store_available"})
        except Exception:
            await asyncio.sleep(interval)


def run_server(settings: Settings, host: str | None = None, port: int | None = None, socket_mode: bool = False,
               reload_interval: float = DEFAULT_INTERVAL_SECONDS, log_level: str = "INFO",
               log_json: bool = True) -> int:
    """Start the server: structured logs, the adviser loading in the background (/healthz turns 200 when it is
    ready), the policy watcher, and Slack over Socket Mode when asked."""
    from bot.logs import configure_logging, settings_secrets

    configure_logging(log_level, json_lines=log_json, secrets=settings_secrets(settings))
    service = AdviserService(settings)
    store = _open_store(settings)
    app = create_app(settings, service, store)
    add_background(app, reload_interval)
    if store is not None and getattr(store, "schema_missing", False):

        async def retry_schema(app: web.Application):  # noqa: ANN202 - an aiohttp cleanup context
            task = asyncio.get_running_loop().create_task(_create_schema_when_available(service, store))
            yield
            task.cancel()

        app.cleanup_ctx.append(retry_schema)
    if socket_mode:
        from bot.slack_app import start_socket_mode

        async def slack_socket_mode(app: web.Application):  # noqa: ANN202 - an aiohttp cleanup context
            handler = await start_socket_mode(app, service, store, settings)
            yield
            await handler.close_async()

        app.cleanup_ctx.append(slack_socket_mode)

    async def close(app: web.Application) -> None:
        service.close()
        if store is not None:
            store.close()

    app.on_cleanup.append(close)
    host, port = host or settings.host, port or settings.port
    log.info("server starting on %s:%s", host, port, extra={"event": "server_starting", "host": host, "port": port,
                                                            "reload_interval": reload_interval})
    web.run_app(app, host=host, port=port, print=None, access_log_class=AccessLogger)
    return 0
