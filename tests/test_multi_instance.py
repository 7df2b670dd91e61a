"""Real `policybot serve` processes (real model, index, bolt app, record store) on loopback ports: two instances
sharing one database answer a Slack event once, and a running server picks up a policy edit without a restart.
The only stand-in is the Slack Web API, played by a loopback server in the test."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from live_server import metric
from slack_stub import BOT_TOKEN, SIGNING_SECRET, SlackStub, all_text, event_body, mention, message, signed_headers

REPO = Path(__file__).resolve().parent.parent
JSON = "application/json"
LOGO_QUESTION = "can I use the council logo on my website?"
POLICY_FILE = "social-media-policy-for-councillors.txt"
OLD_WORDS = "written permission of the chief executive."
NEW_WORDS = "written permission of the Monitoring Officer."
PSEUDONYM_KEY = "multi-instance-test-pseudonym-key"
WAIT = 240.0  # generous ceiling for a process to load the model on a busy machine; never a speed assertion
_OWN_SETTINGS = ("SLACK_", "POLICYBOT_", "MicrosoftApp", "TEAMS_", "DATABASE_URL", "HOST", "PORT")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Instance:
    """One `policybot serve` process and its JSON log (stdout and stderr)."""

    process: subprocess.Popen
    base_url: str
    log_path: Path
    session: aiohttp.ClientSession

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.base_url + path) as response:
            return response.status, await response.text()

    async def metrics(self) -> str:
        status, text = await self.get("/metrics")
        assert status == 200
        return text

    async def post_event(self, body: str, retry: int | None = None) -> int:
        headers = signed_headers(body, JSON, retry=retry)
        async with self.session.post(self.base_url + "/slack/events", data=body.encode(), headers=headers) as resp:
            return resp.status

    async def wait_until(self, check, what: str, timeout: float = WAIT):  # noqa: ANN001, ANN201
        """Poll `check` (sync or async) until it is truthy; fail with the log's tail if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited ({self.process.returncode}) waiting for {what}:\n"
                                     + self.log_text()[-3000:])
            try:
                result = check()
                if asyncio.iscoroutine(result):
                    result = await result
            except aiohttp.ClientConnectionError:
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n" + self.log_text()[-3000:])
            await asyncio.sleep(0.1)

    async def ready(self) -> None:
        async def healthy() -> bool:
            return (await self.get("/healthz"))[0] == 200

        await self.wait_until(healthy, "/healthz to answer 200")


@asynccontextmanager
async def serving(tmp_path: Path, name: str, index_dir: Path, env: dict[str, str], *args: str
                  ) -> AsyncIterator[Instance]:
    """Start `python -m bot.cli serve` with its own data folder (holding a copy of an index built from the same
    policy files, as each container builds its own) and the given environment; stop it afterwards."""
    data = tmp_path / name
    shutil.copytree(index_dir, data / "index")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_SETTINGS)}
    environment |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "POLICYBOT_DATA_DIR": str(data),
                    "POLICYBOT_PSEUDONYM_KEY": PSEUDONYM_KEY, "SLACK_BOT_TOKEN": BOT_TOKEN,
                    "SLACK_SIGNING_SECRET": SIGNING_SECRET} | env
    port = free_port()
    log_path = tmp_path / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(port), *args],
                                   cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        yield Instance(process, f"http://127.0.0.1:{port}", log_path, session)
    finally:
        await session.close()
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
async def slack():
    stub = await SlackStub().start()
    yield stub
    await stub.stop()


async def test_two_instances_sharing_a_database_answer_a_slack_event_once(
        shared_database_url, slack, settings, adviser, tmp_path):
    """Behind a load balancer, Slack's delivery of an event and its retry can reach different instances: with
    the event claims in the shared database, the same signed event POSTed to two server processes at once, and
    retried to one of them, is answered with exactly one chat.postMessage, and counted as one question."""
    env = {"DATABASE_URL": shared_database_url, "SLACK_API_URL": slack.api_url}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(serving(tmp_path, "one", settings.index_dir, env))
        second = await stack.enter_async_context(serving(tmp_path, "two", settings.index_dir, env))
        await asyncio.gather(first.ready(), second.ready())
        body = event_body(mention(LOGO_QUESTION, "1700000000.000900"), f"Ev{uuid.uuid4().hex[:16].upper()}")
        assert await asyncio.gather(first.post_event(body), second.post_event(body)) == [200, 200]
        assert await second.post_event(body, retry=1) == 200
        await slack.wait_for("chat.postMessage", 1, timeout=WAIT)

        def ignored() -> int:
            return sum("already handled" in line for i in (first, second) for line in i.log_text().splitlines())

        await first.wait_until(lambda: ignored() == 2, "both duplicate deliveries to be ignored")
        assert len(slack.calls_to("chat.postMessage")) == 1
        assert "written permission of the chief executive" in all_text(slack.calls_to("chat.postMessage")[0].payload)
        texts = [await first.metrics(), await second.metrics()]
        assert sum(metric(t, "policybot_questions_total", platform="slack", outcome="answered") for t in texts) == 1
        for instance in (first, second):
            assert BOT_TOKEN not in instance.log_text() and SIGNING_SECRET not in instance.log_text()

        # A reply in the thread, without a mention, reaches the instance that did not answer: it learns from the
        # shared database that the bot answered this thread and what was asked, so "what about instagram?" is
        # answered as a follow-up about the logo (alone it would be read as "is Instagram covered?").
        answered_by = [i for i in (first, second) if i.events("question")]
        assert len(answered_by) == 1
        other = second if answered_by[0] is first else first
        follow_up = message("what about instagram?", "1700000000.000950", "C0GENERAL", "channel",
                            thread_ts="1700000000.000900")
        assert await other.post_event(event_body(follow_up)) == 200
        calls = await slack.wait_for("chat.postMessage", 2, timeout=WAIT)
        assert calls[1].payload.get("thread_ts") == "1700000000.000900"
        assert "written permission of the chief executive" in all_text(calls[1].payload)
        assert other.events("question")


async def test_a_policy_edit_reaches_a_running_server_without_a_restart(slack, settings, adviser, policy_copy,
                                                                        tmp_path):
    """Editing a policy file while `policybot serve` runs changes the next answer, without a restart; SIGHUP
    reloads too; a policy that then fails to load leaves the last good index answering (and /healthz at 200,
    reporting the failure); /metrics counts the questions and reloads, and the log has one "question" event per
    question with no question text, user id or secret in it."""
    (policy_copy / POLICY_FILE).chmod(0o644)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/store.sqlite3", "SLACK_API_URL": slack.api_url,
           "POLICYBOT_POLICY_DIR": str(policy_copy)}
    async with serving(tmp_path, "server", settings.index_dir, env, "--reload-interval", "0.5") as server:
        await server.ready()

        async def ask(ts: str, count: int) -> str:
            assert await server.post_event(event_body(mention(LOGO_QUESTION, ts, user="U0PRIVATEASKER"))) == 200
            calls = await slack.wait_for("chat.postMessage", count, timeout=WAIT)
            return all_text(calls[count - 1].payload)

        async def reloads(result: str) -> float:
            return metric(await server.metrics(), "policybot_reloads_total", result=result)

        assert "written permission of the chief executive" in await ask("1700000001.000100", 1)

        path = policy_copy / POLICY_FILE
        path.write_text(path.read_text(encoding="utf-8").replace(OLD_WORDS, NEW_WORDS, 1), encoding="utf-8")
        await server.wait_until(lambda: reloads("success"), "the edited policy to be reloaded")
        answer = await ask("1700000001.000200", 2)
        assert "written permission of the Monitoring Officer" in answer and OLD_WORDS not in answer

        os.kill(server.process.pid, signal.SIGHUP)

        async def reloaded_twice() -> bool:
            return await reloads("success") == 2

        await server.wait_until(reloaded_twice, "the SIGHUP reload")

        (policy_copy / "minutes.docx").write_bytes(b"not a Word document")
        await server.wait_until(lambda: reloads("failed"), "the broken policy to fail to load")
        status, health = await server.get("/healthz")
        assert status == 200 and "minutes.docx" in json.loads(health)["last_reload"]["error"]
        assert "written permission of the Monitoring Officer" in await ask("1700000001.000300", 3)

        metrics = await server.metrics()
        assert metric(metrics, "policybot_questions_total", platform="slack", outcome="answered") == 3
        assert metric(metrics, "policybot_answer_latency_seconds_count", platform="slack") == 3
        assert metric(metrics, "policybot_reloads_total", result="failed") == 1
        questions = server.events("question")
        assert len(questions) == 3 and {q["top_clause"] for q in questions} == {"5.3"}
        assert len({q["question_id"] for q in questions}) == 3
        assert [e["reason"] for e in server.events("reloaded")] == ["policy folder changed", "requested"]
        assert "minutes.docx" in server.events("reload_failed")[0]["error"]
        log = server.log_text()
        for leak in ("council logo", "U0PRIVATEASKER", BOT_TOKEN, SIGNING_SECRET):
            assert leak not in log, leak
