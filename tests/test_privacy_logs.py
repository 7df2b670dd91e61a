"""Privacy through a full Slack exchange and a full Teams exchange on the real server: every log record from every
logger (root at DEBUG) is captured, raw and through the server's own redacting handler, and the record store's
tables are read back. No secret, token, Authorization value, question text or raw chat user id may leak."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from live_server import KeepRecords, openid_endpoint, serving
from slack_stub import (
    SlackStub,
    all_text,
    block_action,
    command_body,
    event_body,
    find_buttons,
    message,
    signed_headers,
)
from teams_support import ServiceUrlRecorder, card_texts, unescape
from teams_support import message as teams_message
from test_teams_e2e import KEY_ID, OUTBOUND_TOKEN, LoopbackCredentialsFactory, bot_framework_token

from bot.adviser import Adviser
from bot.logs import build_handler, settings_secrets
from bot.render_slack import ACTION_HELPFUL
from bot.server import create_app
from bot.service import AdviserService
from bot.settings import Secret
from bot.store import Store, metadata
from bot.teams import TEAMS_ENDPOINT_KEY, TeamsEndpoint

# Secrets configured for this test only: distinctive, so any appearance in a log line is certain to be a leak.
SIGNING_SECRET = "privacy-signing-secret-5b7e0c"
BOT_TOKEN = "xoxb-privacy-bot-token-2f9a41"
APP_PASSWORD = "privacy-app-password-c3d8e6"
PSEUDONYM_KEY = "privacy-pseudonym-key-91aa07"
APP_ID = "0b5ea3b2-1111-4222-8333-944455556666"
SLACK_USER = "U0PRIVACY7"
TEAMS_USER = {"id": "29:privacy-councillor-4e1f", "name": "Pat Privacy",
              "aadObjectId": "6f2c1d0e-0000-4000-8000-0000priv4cy1"}
# Questions as a councillor might ask them, each with a word that appears nowhere else.
SLACK_QUESTION = "can I use the council logo on my website for the Quixotic Lane campaign?"
SLACK_COMMAND_QUESTION = "who do I tell if I am being harassed online by my Vexford neighbour?"
TEAMS_QUESTION = "can I use the council logo on my Facebook page about Zephyrine Park?"
PRIVATE_WORDS = ("Quixotic", "Vexford", "Zephyrine")


@dataclass
class Captured:
    records: list[logging.LogRecord]
    redacted: io.StringIO  # what the server's own handler (bot.logs) would have written

    def text_at(self, minimum: int) -> str:
        """Every record at `minimum` or above: message, extra fields and traceback, one per line."""
        lines = []
        for record in self.records:
            if record.levelno >= minimum:
                extras = {k: v for k, v in vars(record).items() if k not in STANDARD_ATTRIBUTES}
                text = f"{record.levelname} {record.name}: {record.getMessage()} {extras}"
                if record.exc_info:
                    text += " " + logging.Formatter().formatException(record.exc_info)
                lines.append(text)
        return "\n".join(lines)


STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


@contextmanager
def all_logs(secrets: list[str]) -> Iterator[Captured]:
    """Every record from every logger at DEBUG and above, kept raw; and the same records through the server's
    redacting JSON handler. The raw handler goes first: the redacting filter rewrites the records it sees."""
    root = logging.getLogger()
    keep = KeepRecords(logging.DEBUG)
    stream = io.StringIO()
    redacting = build_handler(secrets, json_lines=True, stream=stream)
    old_level = root.level
    root.addHandler(keep)
    root.addHandler(redacting)
    root.setLevel(logging.DEBUG)
    try:
        yield Captured(keep.records, stream)
    finally:
        root.removeHandler(redacting)
        root.removeHandler(keep)
        root.setLevel(old_level)


@dataclass
class Exchange:
    """What the two exchanges produced: the secrets and tokens that were in play, and the store."""

    secrets: list[str]
    tokens: list[str]
    store: Store
    captured: Captured


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def exchange(adviser: Adviser, tmp_path: Path, signing_key: rsa.RSAPrivateKey,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Exchange]:
    """One server with Slack and Teams (app id and password set, tokens checked against a loopback key server)
    runs a full Slack exchange (a DM question, a feedback click, a /policy command) and a full Teams exchange
    (a question, a feedback click) while every log record is captured."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with openid_endpoint(signing_key, KEY_ID):
        stub = await SlackStub().start()
        recording = ServiceUrlRecorder()
        async with serving(recording.app()) as recorder_url:
            service_url = recorder_url + "/"
            settings = dataclasses.replace(
                adviser.settings, data_dir=tmp_path, slack_signing_secret=Secret(SIGNING_SECRET),
                slack_bot_token=Secret(BOT_TOKEN), slack_api_url=stub.api_url, teams_app_id=APP_ID,
                teams_app_password=Secret(APP_PASSWORD), pseudonym_key=Secret(PSEUDONYM_KEY))
            secrets = settings_secrets(settings)
            store = Store.open(f"sqlite:///{tmp_path / 'records.sqlite3'}", PSEUDONYM_KEY.encode())
            inbound = bot_framework_token(signing_key, service_url)
            with all_logs(secrets) as captured:
                service = AdviserService(settings, adviser)
                app = create_app(settings, service, store)
                app[TEAMS_ENDPOINT_KEY] = TeamsEndpoint(settings, service, store, LoopbackCredentialsFactory())
                try:
                    # with aiohttp's default access log, as a plain deployment would have
                    async with serving(app) as base, aiohttp.ClientSession() as session:
                        await slack_exchange(session, base, stub)
                        await teams_exchange(session, base, service_url, recording, inbound)
                finally:
                    await stub.stop()
                    service.close()
    try:
        yield Exchange(secrets, [inbound, OUTBOUND_TOKEN], store, captured)
    finally:
        store.close()


async def slack_exchange(session: aiohttp.ClientSession, base: str, stub: SlackStub) -> None:
    async def post(body: str, content_type: str) -> None:
        async with session.post(f"{base}/slack/events", data=body.encode(),
                                headers=signed_headers(body, content_type, secret=SIGNING_SECRET)) as response:
            assert response.status == 200

    await post(event_body(message(SLACK_QUESTION, ts="1700000700.000001", channel="D0PRIVACY", channel_type="im",
                                  user=SLACK_USER)), "application/json")
    answer = (await stub.wait_for("chat.postMessage"))[0].payload
    assert "What the policy says" in all_text(answer["blocks"])
    helpful = find_buttons(answer["blocks"], ACTION_HELPFUL)[0]
    await post(block_action({"action_id": ACTION_HELPFUL, "value": helpful["value"]}, "D0PRIVACY",
                            {"ts": "1700001000.000001", "blocks": answer["blocks"]}, stub.response_url("fb"),
                            user=SLACK_USER), "application/x-www-form-urlencoded")
    await stub.wait_for("respond:fb")
    await post(command_body(SLACK_COMMAND_QUESTION, stub.response_url("cmd"), user=SLACK_USER),
               "application/x-www-form-urlencoded")
    reply = (await stub.wait_for("respond:cmd"))[0].payload
    assert "What the policy says" in all_text(reply["blocks"])


async def teams_exchange(session: aiohttp.ClientSession, base: str, service_url: str,
                         recording: ServiceUrlRecorder, token: str) -> None:
    async def post(activity: dict) -> None:
        async with session.post(f"{base}/api/messages", json=activity,
                                headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200

    question = teams_message(TEAMS_QUESTION, service_url) | {"from": TEAMS_USER}
    await post(question)
    card = recording.messages()[-1]["json"]["attachments"][0]["content"]
    assert "Clause 5." in unescape(card_texts(card))
    feedback = next(a["data"] for a in card.get("actions", []) if a.get("data", {}).get("action") == "feedback")
    await post(teams_message(None, service_url, value=feedback) | {"from": TEAMS_USER})
    assert "Thanks for your feedback" in unescape(card_texts(recording.messages()[-1]["json"]["attachments"][0][
        "content"]))


# ---------------------------------------------------------------------------------------------- the tests
def leaks(text: str, exchange: Exchange) -> list[str]:
    """Which of the secrets, tokens and private question words appear in `text`."""
    found = [f"secret {s[:8]}..." for s in exchange.secrets if s in text]
    found += [f"token {t[:12]}..." for t in exchange.tokens if t in text]
    found += [f"question word {w!r}" for w in PRIVATE_WORDS if w in text]
    return found


async def test_no_secret_token_or_question_text_reaches_the_log_at_info_or_above(exchange: Exchange) -> None:
    """Through a full Slack exchange and a full Teams exchange, no record at INFO or above from any logger (ours,
    bolt, botbuilder, aiohttp, SQLAlchemy, urllib3), before any redaction, contains the signing secret, the bot
    token, the app password, the pseudonym key, an Authorization header's token (the inbound Bot Framework token
    or the bot's outbound one), or any word of the users' questions."""
    info = exchange.captured.text_at(logging.INFO)
    assert info, "nothing was logged: the capture is not working"
    assert leaks(info, exchange) == []
    assert "Bearer ey" not in info


async def test_raw_chat_user_ids_are_not_logged_at_info_or_above(exchange: Exchange) -> None:
    """Users are named in logs by pseudonym only: the raw Slack user id and the Teams user's ids (channel account
    and Entra object id) appear in no record at INFO or above."""
    info = exchange.captured.text_at(logging.INFO)
    for raw in (SLACK_USER, TEAMS_USER["id"], TEAMS_USER["aadObjectId"]):
        assert raw not in info


async def test_the_servers_log_handler_writes_none_of_them_even_at_debug(exchange: Exchange) -> None:
    """With logging at DEBUG (as an administrator chasing a problem might set it), the server's own handler
    (bot.logs: redaction, third-party body loggers dropped) writes no secret, token or question word at all.
    Raw DEBUG records from slack_sdk do carry message bodies, which is why that handler drops them."""
    written = exchange.captured.redacted.getvalue()
    assert written
    assert leaks(written, exchange) == []
    raw_debug = exchange.captured.text_at(logging.DEBUG)
    assert any(word in raw_debug for word in PRIVATE_WORDS)  # proves the capture saw the bodies it must drop


async def test_the_store_holds_pseudonyms_never_raw_chat_user_ids(exchange: Exchange) -> None:
    """Every table of the record store (questions, feedback, tickets, event claims, rate events) is read back:
    the questions and feedback of both users are there under their keyed pseudonyms, and neither the raw Slack
    user id nor the Teams user's ids appear in any column of any row."""
    store = exchange.store
    dump = []
    with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                dump.append(" ".join(str(value) for value in row))
    everything = "\n".join(dump)
    for raw in (SLACK_USER, TEAMS_USER["id"], TEAMS_USER["aadObjectId"]):
        assert raw not in everything
    slack_pseudonym = store.pseudonymise("slack", SLACK_USER)
    teams_pseudonym = store.pseudonymise("teams", TEAMS_USER["aadObjectId"])
    assert everything.count(slack_pseudonym) >= 3  # two questions and a feedback click
    assert everything.count(teams_pseudonym) >= 2  # a question and a feedback click
    assert SLACK_QUESTION in everything  # question text is kept (for the retention period), under the pseudonym
