"""A real server on its own event loop in a background thread, and a plain HTTP client for it: lets synchronous
tests (hypothesis properties) drive the real aiohttp app, bolt and botbuilder stacks over loopback HTTP. Also the
fuzz runs' shared pieces: example counts (FUZZ_SCALE), arbitrary JSON values, an ERROR-log collector that tells our
exceptions from the libraries', and a loopback stand-in for Microsoft's OpenID key endpoint. And `serving(app)`, the
same loopback start for async tests on their own event loop."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import socket
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
# FUZZ_SCALE=10 runs every property ten times longer (a deeper search than the default suite's bounded runs).
FUZZ_SCALE = float(os.environ.get("FUZZ_SCALE") or 1)
OUR_CODE = tuple(str(Path(__file__).resolve().parent.parent / package) for package in ("bot", "index"))
# The server runs in another thread and uses `random` (retry jitter, ids) while hypothesis generates examples;
# hypothesis notices and warns, though the strategies themselves never touch `random`. A fuzz module's pytestmark.
SERVER_USES_RANDOM = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")


@asynccontextmanager
async def serving(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Serve `app` on an ephemeral loopback port of the running event loop; yields its base URL, cleans up after."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class LiveLoop:
    """An asyncio event loop running in a daemon thread. `run(coro)` runs a coroutine there and returns its result;
    `serve(app)` starts an aiohttp application on an ephemeral loopback port and returns its base URL."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []
        self._closers: list[Callable[[], Awaitable[Any]]] = []

    def run(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(self, app: web.Application) -> str:
        async def start() -> str:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            return f"http://127.0.0.1:{runner.addresses[0][1]}"

        return self.run(start())

    def on_close(self, closer: Callable[[], Awaitable[Any]]) -> None:
        """Await `closer()` on this loop when the loop is closed (before the servers stop)."""
        self._closers.append(closer)

    def close(self) -> None:
        async def stop() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()
            for closer in reversed(self._closers):
                await closer()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def examples(count: int) -> int:
    """`count` hypothesis examples, scaled by FUZZ_SCALE."""
    return max(1, round(count * FUZZ_SCALE))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))


def json_containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4))


# Any JSON value: what a hostile client may put in any field of a payload.
json_values = st.recursive(json_scalars, json_containers, max_leaves=12)


def http_post(base_url: str, path: str, body: bytes, headers: dict[str, str] | list[tuple[str, str]],
              timeout: float = 30.0) -> tuple[int, bytes]:
    """POST exactly these bytes and headers (nothing added but Host and Content-Length); returns status and body."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.putrequest("POST", path, skip_accept_encoding=True)
        items = headers.items() if isinstance(headers, dict) else headers
        names = set()
        for name, value in items:
            connection.putheader(name, value)
            names.add(name.lower())
        if "content-length" not in names:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def http_get(base_url: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def raw_request(base_url: str, data: bytes, timeout: float = 10.0) -> int | None:
    """Send raw bytes as an HTTP request; the response's status, or None when the server closed the connection
    without answering (which a malformed request may get)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
            if b"\r\n" in reply:
                break
    if not reply.startswith(b"HTTP/1."):
        return None
    return int(reply.split(b" ", 2)[1])


class KeepRecords(logging.Handler):
    """Keeps every record at `level` or above, from any logger (attach it to the root logger)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class ErrorLog(KeepRecords):
    """Keeps every record at ERROR or above, and tells the exceptions raised in our code from the libraries'."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)

    def raised_in_our_code(self) -> list[str]:
        """The logged exceptions raised by this project's code, as "logger: message" lines."""
        found = []
        for record in self.records:
            if raised_in_our_code(record):
                frame = next(f for f in reversed(traceback.extract_tb(record.exc_info[2]))
                             if f.filename.startswith(OUR_CODE))
                where = f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}"
                found.append(f"{record.name}: {record.getMessage()} ({record.exc_info[1]!r} at {where})")
        return found


@contextmanager
def errors_logged() -> Iterator[ErrorLog]:
    """An ErrorLog on the root logger for the duration."""
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        yield errors
    finally:
        logging.getLogger().removeHandler(errors)


def raised_in_our_code(record: logging.LogRecord) -> bool:
    """Was the exception logged with `record` raised by this project's code (bot/, index/)? The innermost frame
    outside the standard library decides: an exception a library raises on a payload its platform never sends
    (bolt, botbuilder, aiohttp) is that library's, and the server already refuses or contains it."""
    if not record.exc_info or record.exc_info[2] is None:
        return False
    for frame in reversed(traceback.extract_tb(record.exc_info[2])):
        if frame.filename.startswith(OUR_CODE):
            return True
        if "site-packages" in frame.filename:
            return False
    return False


def serve_openid(signing_key: Any, key_id: str) -> ThreadingHTTPServer:
    """OpenID metadata and a JWKS holding `signing_key`'s public key (as `key_id`), served on a loopback port in a
    thread, as login.botframework.com serves them (botbuilder fetches keys with blocking `requests` calls)."""
    from jwt.algorithms import RSAAlgorithm

    jwk = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key())) | {"kid": key_id, "use": "sig",
                                                                       "endorsements": ["msteams"]}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            host, port = self.server.server_address[:2]
            documents = {"/openid": {"issuer": "https://api.botframework.com",
                                     "jwks_uri": f"http://{host}:{port}/keys"}, "/keys": {"keys": [jwk]}}
            body = json.dumps(documents.get(self.path, {})).encode()
            self.send_response(200 if self.path in documents else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextmanager
def openid_endpoint(signing_key: Any, key_id: str) -> Iterator[str]:
    """`serve_openid`, with botbuilder's channel token validation (ChannelValidation.open_id_metadata_endpoint)
    pointed at it for the duration; yields the metadata URL."""
    from botframework.connector.auth import ChannelValidation

    server = serve_openid(signing_key, key_id)
    previous = ChannelValidation.open_id_metadata_endpoint
    ChannelValidation.open_id_metadata_endpoint = f"http://127.0.0.1:{server.server_address[1]}/openid"
    try:
        yield ChannelValidation.open_id_metadata_endpoint
    finally:
        ChannelValidation.open_id_metadata_endpoint = previous
        server.shutdown()
        server.server_close()


def metric(text: str, sample: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0.0 if absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0
