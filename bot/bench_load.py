"""The benchmark's server half: the real server (create_app, Slack mounted) in its own process, a loopback stand-in
for the Slack Web API counting chat.postMessage, signed Slack events sent at a fixed rate, and a /healthz probe.

The server runs in a subprocess so the load generator, the stand-in and the probe never share its event loop:
a /healthz that answers late means the server's loop was busy, not the generator's."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

READY_PREFIX = "BENCH-SERVER-READY "
BOT_USER_ID = "UBOTBENCH"
TEAM_ID = "TBENCH"
BOT_TOKEN = "xoxb-bench-not-a-real-token"  # noqa: S105 - only ever sent to the loopback stand-in


# ---------------------------------------------------------------------------------------------- Slack stand-in
@dataclass
class Post:
    """One chat.postMessage the server made: the thread it answered in, its fallback text, when it arrived."""

    thread_ts: str
    text: str
    at: float


@dataclass
class SlackRecorder:
    """Plays the Slack Web API on 127.0.0.1 (auth.test, chat.postMessage, reactions.*; anything else is ok) and
    records every chat.postMessage with time.monotonic() on arrival."""

    posts: list[Post] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _runner: Any = None
    _ts: int = 0

    async def start(self) -> SlackRecorder:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def _api(self, request):  # noqa: ANN001, ANN202
        from aiohttp import web

        method = request.match_info["method"]
        raw = await request.text()
        if request.content_type == "application/json":
            payload = json.loads(raw or "{}")
        else:
            payload = dict(parse_qsl(raw, keep_blank_values=True))
        payload = dict(request.query) | payload
        self.calls[method] = self.calls.get(method, 0) + 1
        if method == "auth.test":
            return web.json_response({"ok": True, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": "BBENCH",
                                      "team": "Bench", "user": "policybot", "url": "https://bench.slack.com/"})
        if method == "chat.postMessage":
            self.posts.append(Post(str(payload.get("thread_ts", "")), str(payload.get("text", "")),
                                   time.monotonic()))
            self._ts += 1
            ts = f"1800000000.{self._ts:06d}"
            return web.json_response({"ok": True, "channel": payload.get("channel"), "ts": ts})
        return web.json_response({"ok": True})


# ---------------------------------------------------------------------------------------------- the server process
async def _serve(policy_dir: Path, data_dir: Path, api_url: str, signing_secret: str) -> None:
    from aiohttp import web

    from bot.adviser import Adviser
    from bot.server import create_app
    from bot.service import AdviserService
    from bot.settings import Secret, Settings
    from bot.store import Store

    settings = Settings(policy_dir=policy_dir, data_dir=data_dir, slack_bot_token=Secret(BOT_TOKEN),
                        slack_signing_secret=Secret(signing_secret), slack_api_url=api_url)
    adviser = Adviser.load(settings)
    store = Store.open(settings.effective_database_url, secrets.token_bytes(32))
    service = AdviserService(settings, adviser)
    runner = web.AppRunner(create_app(settings, service, store), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(READY_PREFIX + str(runner.addresses[0][1]), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # the parent closes stdin to stop the server
    await runner.cleanup()
    service.close()
    store.close()


# ---------------------------------------------------------------------------------------------- load generation
def sign(secret: str, timestamp: str, body: str) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def mention_body(event_id: str, ts: str, text: str, user: str, channel: str) -> str:
    """A signed-to-be Events API envelope around an app_mention: the bot answers in the mention's thread (ts)."""
    event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts, "event_ts": ts,
             "channel": channel}
    return json.dumps({"token": "unused", "team_id": TEAM_ID, "api_app_id": "ABENCH", "type": "event_callback",
                       "event": event, "event_id": event_id, "event_time": int(time.time()),
                       "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}]})


@dataclass
class Probe:
    """GET /healthz in a loop (one request at a time, `interval` apart), recording each response time in ms."""

    session: Any
    url: str
    interval: float = 0.02
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with self.session.get(self.url) as response:
                    await response.read()
                    if response.status != 200:
                        self.failures += 1
            except Exception:
                self.failures += 1
            self.latencies.append((time.monotonic() - started) * 1000)
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass


@dataclass
class EventRun:
    """What one batch of events produced, per event: when it was first sent, its acks, and its answers."""

    name: str
    events: int
    rate: float
    retries: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)
    acks_ms: list[float] = field(default_factory=list)
    ack_errors: int = 0
    answers: dict[str, list[Post]] = field(default_factory=dict)
    healthz_ms: list[float] = field(default_factory=list)
    healthz_failures: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        answered = {ts: posts for ts, posts in self.answers.items() if posts}
        latencies = [(posts[0].at - self.sent_at[ts]) * 1000 for ts, posts in answered.items()]
        failed = sum(1 for posts in answered.values() if posts[0].text.startswith(("Sorry", "I am still")))
        return {
            "name": self.name, "events": self.events, "rate": self.rate, "retries": self.retries,
            "answered": len(answered), "lost": self.events - len(answered),
            "duplicated": sum(len(posts) - 1 for posts in answered.values()), "failed": failed,
            "latency_ms": sorted(latencies), "ack_ms": sorted(self.acks_ms), "ack_errors": self.ack_errors,
            "healthz_ms": self.healthz_ms, "healthz_failures": self.healthz_failures, "seconds": self.seconds,
        }


@dataclass
class LoadRig:
    """The parent's side: the Slack stand-in, the server subprocess and an HTTP session to it."""

    recorder: SlackRecorder
    process: Any
    base_url: str
    session: Any
    signing_secret: str
    questions: list[str]
    _next: int = 0

    async def _send(self, run: EventRun, body: str, ts: str, retry: int | None) -> None:
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": sign(self.signing_secret, timestamp, body)}
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        started = time.monotonic()
        run.sent_at.setdefault(ts, started)
        try:
            async with self.session.post(f"{self.base_url}/slack/events", data=body.encode(),
                                         headers=headers) as response:
                await response.read()
                if response.status != 200:
                    run.ack_errors += 1
        except Exception:
            run.ack_errors += 1
        run.acks_ms.append((time.monotonic() - started) * 1000)

    async def run_events(self, name: str, events: int, rate: float | None, retry_share: float = 0.0,
                         drain_timeout: float = 120.0, seed: int = 11) -> dict:
        """Send `events` signed app_mentions, `rate` per second (all at once when rate is None), each with a unique
        event_id and thread; re-send about `retry_share` of them as Slack retries (X-Slack-Retry-Num, same
        event_id and body) 0.2 to 3 s later. Wait until every event is answered or nothing arrives for
        `drain_timeout` seconds, probing /healthz throughout; then count answers per event."""
        rng = random.Random(seed)
        run = EventRun(name, events, rate or 0.0)
        bodies = []
        for _ in range(events):
            self._next += 1
            n = self._next
            ts = f"{1700000000 + n}.000100"
            question = self.questions[n % len(self.questions)]
            body = mention_body(f"EvBench{n:08d}{secrets.token_hex(3)}", ts, question, f"U{n:08d}",
                                f"C{n % 7:08d}")
            bodies.append((ts, body))
            run.answers[ts] = []
        retried = [i for i in range(events) if rng.random() < retry_share]
        if retry_share and not retried and events:
            retried = [rng.randrange(events)]
        run.retries = len(retried)
        first_post = len(self.recorder.posts)
        stop = asyncio.Event()
        probe = Probe(self.session, f"{self.base_url}/healthz")
        probing = asyncio.create_task(probe.run(stop))
        started = time.monotonic()
        tasks = []

        async def send_at(delay: float, ts: str, body: str, retry: int | None) -> None:
            await asyncio.sleep(max(0.0, started + delay - time.monotonic()))
            await self._send(run, body, ts, retry)

        for i, (ts, body) in enumerate(bodies):
            offset = i / rate if rate else 0.0
            tasks.append(asyncio.create_task(send_at(offset, ts, body, None)))
            if i in retried:
                tasks.append(asyncio.create_task(send_at(offset + rng.uniform(0.2, 3.0), ts, body, 1)))
        await asyncio.gather(*tasks)
        seen, quiet_since = -1, time.monotonic()
        while True:
            count = len(self.recorder.posts) - first_post
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            if count >= events or time.monotonic() - quiet_since > drain_timeout:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # a duplicate would arrive after the last first answer
        run.seconds = time.monotonic() - started
        stop.set()
        await probing
        for post in self.recorder.posts[first_post:]:
            if post.thread_ts in run.answers:
                run.answers[post.thread_ts].append(post)
        run.healthz_ms, run.healthz_failures = probe.latencies, probe.failures
        return run.summary()


async def start_rig(policy_dir: Path, data_dir: Path, questions: list[str], python: str = sys.executable,
                    timeout: float = 300.0) -> LoadRig:
    """Start the Slack stand-in here and the real server in a subprocess (its adviser loads the index already
    built in `data_dir`); return once the server listens."""
    import aiohttp

    recorder = await SlackRecorder().start()
    signing_secret = secrets.token_hex(16)
    process = await asyncio.create_subprocess_exec(
        python, "-m", "bot.bench_load", "--policy-dir", str(policy_dir), "--data-dir", str(data_dir),
        "--api-url", recorder.api_url, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env=_child_env(signing_secret),
    )
    port = None
    try:
        async with asyncio.timeout(timeout):
            while port is None:
                line = await process.stdout.readline()
                if not line:
                    raise RuntimeError(f"the benchmark server exited (status {await process.wait()})")
                text = line.decode(errors="replace").strip()
                if text.startswith(READY_PREFIX):
                    port = int(text[len(READY_PREFIX):])
    except BaseException:
        process.kill()
        await process.wait()
        await recorder.stop()
        raise
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    return LoadRig(recorder, process, f"http://127.0.0.1:{port}", session, signing_secret, questions)


async def stop_rig(rig: LoadRig) -> None:
    await rig.session.close()
    rig.process.stdin.close()
    try:
        await asyncio.wait_for(rig.process.wait(), 20)
    except TimeoutError:
        rig.process.kill()
        await rig.process.wait()
    await rig.recorder.stop()


def _child_env(signing_secret: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "POLICYBOT_BENCH_SIGNING_SECRET": signing_secret}
    return env


async def server_runs(policy_dir: Path, data_dir: Path, questions: list[str], events: int, rate: float,
                      retry_share: float, burst: int) -> dict:
    """The server measurements: a burst of `burst` simultaneous questions (is /healthz still prompt?), then
    `events` events at `rate`/s, then the same with `retry_share` Slack retries mixed in."""
    rig = await start_rig(policy_dir, data_dir, questions)
    try:
        await rig.run_events("warm-up", 4, None)
        results = {"burst": await rig.run_events("burst", burst, None)}
        results["load"] = await rig.run_events("load", events, rate)
        results["load_retries"] = await rig.run_events("load with retries", events, rate, retry_share, seed=13)
        results["web_api_calls"] = dict(rig.recorder.calls)
        return results
    finally:
        await stop_rig(rig)


def main(argv: list[str] | None = None) -> int:
    import logging
    import os
    import warnings

    parser = argparse.ArgumentParser(prog="python -m bot.bench_load", description="the benchmark's server process")
    parser.add_argument("--policy-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--api-url", required=True)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    secret = os.environ.pop("POLICYBOT_BENCH_SIGNING_SECRET", "")
    asyncio.run(_serve(args.policy_dir, args.data_dir, args.api_url, secret))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
