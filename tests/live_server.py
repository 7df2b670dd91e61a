"""A real server on its own event loop in a background thread, and a plain HTTP client for it: lets synchronous
tests (hypothesis properties) drive the real aiohttp app, bolt and botbuilder stacks over loopback HTTP. Also the
fuzz runs' shared pieces: example counts (FUZZ_SCALE), an ERROR-log collector that tells our exceptions from the
libraries', and a loopback stand-in for Microsoft's OpenID key endpoint."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import socket
import threading
import traceback
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
# FUZZ_SCALE=10 runs every property ten times longer (a deeper search than the default suite's bounded runs).
FUZZ_SCALE = float(os.environ.get("FUZZ_SCALE") or 1)
OUR_CODE = tuple(str(Path(__file__).resolve().parent.parent / package) for package in ("bot", "index"))


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


class ErrorLog(logging.Handler):
    """Keeps every record at ERROR or above, from any logger (attach it to the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

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


def metric(text: str, sample: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0.0 if absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0
