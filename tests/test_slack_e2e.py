"""The Slack app end to end: the real aiohttp server, bolt, adviser and store, with Slack-signed requests POSTed over
loopback HTTP and a loopback stand-in for the Slack Web API recording what the app sent."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from slack_stub import (
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    SlackStub,
    StubbedServer,
    all_text,
    block_action,
    command_body,
    event_body,
    find_buttons,
    interaction_body,
    mention,
    message,
    running_with_stub,
    sign,
    signed_headers,
)

from bot.adviser import EXAMPLE_QUESTIONS, Adviser
from bot.render_slack import (
    ACTION_ASK_ROLE,
    ACTION_FULL_CLAUSE,
    ACTION_HELPFUL,
    ACTION_RESOLVE,
    ACTION_SHARE,
    CALLBACK_ASK_CONFIRM,
    CALLBACK_SHORTCUT,
    PROGRESS_REACTION,
    encode_value,
)
from bot.server import create_app
from bot.service import AdviserService
from bot.settings import Secret, Settings
from bot.slack_app import start_socket_mode
from bot.store import Store, feedback

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
LOGO_QUESTION = "can I use the council logo on my website?"
HARASSMENT_QUESTION = "who do I tell if I am being harassed online?"


@dataclass
class Rig(StubbedServer):
    """One running server with its Slack stand-in and store."""

    async def post(self, body: str, headers: dict[str, str]) -> tuple[int, str, float]:
        """POST to /slack/events; returns status, body and when the response arrived (time.monotonic())."""
        async with self.session.post(f"{self.base_url}/slack/events", data=body.encode(), headers=headers) as resp:
            return resp.status, await resp.text(), time.monotonic()

    async def event(self, event: dict, event_id: str | None = None, retry: int | None = None) -> tuple[int, float]:
        body = event_body(event, event_id)
        status, _, at = await self.post(body, signed_headers(body, JSON, retry=retry))
        return status, at

    async def interact(self, body: str) -> int:
        status, _, _ = await self.post(body, signed_headers(body, FORM))
        return status


def running_rig(adviser: Adviser, tmp_path: Path, **overrides: object) -> AbstractAsyncContextManager[Rig]:
    return running_with_stub(Rig, adviser, tmp_path, "t.db", {"access_log": None}, **overrides)


@pytest.fixture
async def rig(adviser: Adviser, tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_rig(adviser, tmp_path) as running:
        yield running


async def settle() -> None:
    """Give background listeners a moment, for tests that assert something did NOT happen."""
    await asyncio.sleep(0.3)


# ---------------------------------------------------------------------------------------------- conversations
async def test_mention_answered_in_thread_citing_5_3_after_a_quick_ack(rig: Rig, caplog) -> None:
    """A mention is acknowledged at once (well inside Slack's 3 s) and answered afterwards, in the mention's
    thread, citing 5.3 and naming the chief executive, with an hourglass reaction while working; the question
    text never reaches the INFO log."""
    caplog.set_level(logging.INFO)
    rig.stub.delay("reactions.add", 1.0)  # the answer work is slow; the ack must not wait for it
    started = time.monotonic()
    status, acked_at = await rig.event(mention(LOGO_QUESTION, ts="1700000000.000100"))
    assert status == 200
    assert acked_at - started < 1.0

    post = (await rig.stub.wait_for("chat.postMessage"))[0]
    assert post.at > acked_at
    assert post.payload["channel"] == "C0GENERAL"
    assert post.payload["thread_ts"] == "1700000000.000100"
    assert post.authorization == f"Bearer {BOT_TOKEN}"
    text = all_text(post.payload["blocks"])
    assert "*5.3*" in text
    assert "chief executive" in text.lower()
    assert "chief executive" in post.payload["text"].lower()  # the plain-text fallback names them too

    removed = (await rig.stub.wait_for("reactions.remove"))[0]
    added = rig.stub.calls_to("reactions.add")[0]
    for call in (added, removed):
        assert call.payload["name"] == PROGRESS_REACTION
        assert call.payload["timestamp"] == "1700000000.000100"
    assert added.at < post.at < removed.at
    assert LOGO_QUESTION not in caplog.text


async def test_retry_of_an_answered_event_posts_nothing_more(rig: Rig) -> None:
    """Slack's retries (X-Slack-Retry-Num) of an event already claimed post nothing; an event never seen before
    that arrives as a retry is still answered."""
    first = mention(LOGO_QUESTION, ts="1700000000.000200")
    await rig.event(first, event_id="EvRETRY1")
    await rig.stub.wait_for("chat.postMessage")
    for retry in (1, 2):
        status, _ = await rig.event(first, event_id="EvRETRY1", retry=retry)
        assert status == 200

    await rig.event(mention(HARASSMENT_QUESTION, ts="1700000000.000300"), event_id="EvRETRY2", retry=1)
    posts = await rig.stub.wait_for("chat.postMessage", 2)
    await settle()
    posts = rig.stub.calls_to("chat.postMessage")
    assert [p.payload["thread_ts"] for p in posts] == ["1700000000.000200", "1700000000.000300"]
    assert len(rig.stub.calls_to("reactions.add")) == 2


async def test_direct_message_answered_in_the_dm(rig: Rig) -> None:
    """Every direct message is answered, in the DM itself (top level, not a thread)."""
    await rig.event(message(HARASSMENT_QUESTION, ts="1700000000.000400", channel="D0ASKER", channel_type="im"))
    post = (await rig.stub.wait_for("chat.postMessage"))[0]
    assert post.payload["channel"] == "D0ASKER"
    assert "thread_ts" not in post.payload
    assert "*7.2*" in all_text(post.payload["blocks"])


async def test_abstention_says_not_covered_and_offers_the_fallback(rig: Rig) -> None:
    """A question the policy does not answer says so and offers democratic services, labelled as a fallback."""
    await rig.event(message("what time does the tip open on sundays?", ts="1700000000.000450", channel="D0ASKER",
                            channel_type="im"))
    text = all_text((await rig.stub.wait_for("chat.postMessage"))[0].payload["blocks"])
    assert "Not covered by the policy" in text
    assert "not a policy requirement" in text
    assert "Democratic services" in text


async def test_bot_messages_edits_and_unrelated_messages_are_ignored(rig: Rig) -> None:
    """Messages from bots (including this one), edits and other subtypes, and channel messages outside an answered
    thread are never answered."""
    ignored = [
        message("bot says hi", ts="1700000000.000501", channel="D0ASKER", channel_type="im", bot_id="B0OTHER",
                subtype="bot_message"),
        message("my own answer", ts="1700000000.000502", channel="D0ASKER", channel_type="im", user=BOT_USER_ID,
                bot_id=BOT_ID),
        message("edited", ts="1700000000.000503", channel="D0ASKER", channel_type="im", subtype="message_changed"),
        message(LOGO_QUESTION, ts="1700000000.000504", channel="C0GENERAL", channel_type="channel"),
        message(LOGO_QUESTION, ts="1700000000.000505", channel="C0GENERAL", channel_type="channel",
                thread_ts="1700000000.000001"),  # a thread the bot never answered
    ]
    for event in ignored:
        status, _ = await rig.event(event)
        assert status == 200
    await rig.event(message(LOGO_QUESTION, ts="1700000000.000510", channel="D0ASKER", channel_type="im"))
    await rig.stub.wait_for("chat.postMessage")
    await settle()
    assert len(rig.stub.calls_to("chat.postMessage")) == 1
    assert [c.payload["timestamp"] for c in rig.stub.calls_to("reactions.add")] == ["1700000000.000510"]


async def test_follow_up_in_an_answered_thread_is_answered_with_its_history(rig: Rig) -> None:
    """A reply without a mention in a thread the bot answered is a follow-up: "what about Instagram?" after a logo
    question is answered about the logo (5.3), which it would not be on its own (it would cite the list of social
    media)."""
    await rig.event(mention("can I use the council logo on my facebook page?", ts="1700000000.000600"))
    await rig.stub.wait_for("chat.postMessage")
    await rig.event(message("what about Instagram?", ts="1700000000.000601", channel="C0GENERAL",
                            channel_type="channel", thread_ts="1700000000.000600"))
    follow_up = (await rig.stub.wait_for("chat.postMessage", 2))[1]
    assert follow_up.payload["thread_ts"] == "1700000000.000600"
    headline = all_text(follow_up.payload["blocks"][:2])
    assert "*5.3*" in headline


async def test_mrkdwn_in_a_question_is_shown_literally_and_pings_nobody(rig: Rig) -> None:
    """<!channel>, <@U123> and <https://evil|click> typed into a question are escaped wherever the question is
    shown (blocks and fallback text), so Slack renders them as text: no broadcast, no mention, no disguised link."""
    hostile = "<!channel> <@U123> <https://evil|click> & can I use the council logo on my website?"
    await rig.event(mention(hostile, ts="1700000000.000700"))
    post = (await rig.stub.wait_for("chat.postMessage"))[0]
    shown = all_text(post.payload)
    for token in ("<!channel>", "<@U123>", "<https://evil", "<!here>"):
        assert token not in shown
    assert "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil|click&gt; &amp; can I use" in shown


# ---------------------------------------------------------------------------------------------- signatures
def _unsigned_cases() -> dict[str, dict[str, str]]:
    now = int(time.time())
    body = event_body(mention("SECRET-MARKER-7f3a leak me", ts="1700000000.000800"))
    good = sign(body, str(now))
    return {
        "no headers": {},
        "no signature": {"X-Slack-Request-Timestamp": str(now)},
        "no timestamp": {"X-Slack-Signature": good},
        "wrong secret": {"X-Slack-Request-Timestamp": str(now),
                         "X-Slack-Signature": sign(body, str(now), secret="not-the-secret")},
        "malformed signature": {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": "v0=zz"},
        "non-numeric timestamp": {"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": sign(body, "abc")},
        "non-ascii digits": {"X-Slack-Request-Timestamp": "١٧٠٠٠٠٠٠٠٠",
                             "X-Slack-Signature": sign(body, "١٧٠٠٠٠٠٠٠٠")},
        "oversized timestamp": {"X-Slack-Request-Timestamp": "9" * 5000, "X-Slack-Signature": good},
        "stale timestamp": {"X-Slack-Request-Timestamp": str(now - 600),
                            "X-Slack-Signature": sign(body, str(now - 600))},
        "future timestamp": {"X-Slack-Request-Timestamp": str(now + 600),
                             "X-Slack-Signature": sign(body, str(now + 600))},
    }


@pytest.mark.parametrize("case", list(_unsigned_cases()))
async def test_unsigned_or_badly_signed_requests_get_401_and_their_body_is_not_logged(rig: Rig, caplog,
                                                                                        case: str) -> None:
    """Anything not validly Slack-signed gets 401 (never 500: a non-numeric timestamp crashes bolt's own check),
    nothing is sent to Slack, and the body is not logged at any level."""
    caplog.set_level(logging.DEBUG)
    body = event_body(mention("SECRET-MARKER-7f3a leak me", ts="1700000000.000800"))
    status, text, _ = await rig.post(body, {"Content-Type": JSON, **_unsigned_cases()[case]})
    assert status == 401
    assert len(text) < 100
    await settle()
    assert rig.stub.calls == []
    assert "SECRET-MARKER" not in caplog.text


async def test_oversized_body_gets_413(rig: Rig) -> None:
    """A body over the server's 1 MiB limit is refused with 413 before it is verified or parsed."""
    body = event_body(mention("x" * (1024 * 1024 + 10), ts="1700000000.000850"))
    status, _, _ = await rig.post(body, signed_headers(body, JSON))
    assert status == 413
    assert rig.stub.calls == []


async def test_url_verification_challenge_is_answered(rig: Rig) -> None:
    """Slack's signed url_verification request (sent when an admin sets the request URL) gets its challenge back,
    which is what turns the manifest's Event Subscriptions URL to "Verified"."""
    body = json.dumps({"token": "legacy-unused", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"})
    status, text, _ = await rig.post(body, signed_headers(body, JSON))
    assert status == 200
    assert "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in text


MALFORMED_SIGNED_BODIES = {
    "empty": ("", FORM),
    "truncated json": ("{", JSON),
    "json list": ("[1, 2]", JSON),
    "json string": ('"event_callback"', JSON),
    "event not an object": ('{"type": "event_callback", "event_id": "EvBAD1", "event": "app_mention"}', JSON),
    "mention without channel": ('{"type": "event_callback", "event_id": "EvBAD2", "event": {"type": "app_mention"}}',
                                JSON),
    "payload not json": ("payload=%7Bnot-json", FORM),
    "payload without actions": ('payload={"type": "block_actions", "actions": []}', FORM),
    "action with junk value": ('payload={"type": "block_actions", "user": {"id": "U1"}, "actions": '
                               '[{"action_id": "ask_role:0", "value": "[]"}]}', FORM),
    "view with junk metadata": ('payload={"type": "view_submission", "user": {"id": "U1"}, "view": '
                                '{"callback_id": "ask_role_confirm", "private_metadata": "{{"}}', FORM),
    "command without fields": ("command=%2Fpolicy", FORM),
    "not utf-8": ("\udcff", FORM),
}


@pytest.mark.parametrize("case", list(MALFORMED_SIGNED_BODIES))
async def test_malformed_but_signed_bodies_never_get_500(rig: Rig, case: str) -> None:
    """A correctly signed request with a body Slack would never send is refused or ignored (4xx or 200), never
    answered with 500, and the server goes on answering."""
    text, content_type = MALFORMED_SIGNED_BODIES[case]
    raw = text.encode("utf-8", "surrogateescape")
    ts = str(int(time.time()))
    headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sign(raw, ts)}
    async with rig.session.post(f"{rig.base_url}/slack/events", data=raw, headers=headers) as resp:
        assert resp.status < 500
    await settle()
    async with rig.session.get(f"{rig.base_url}/healthz") as resp:
        assert resp.status == 200


def test_manifest_declares_what_the_app_handles() -> None:
    """The Slack manifest subscribes to exactly the events the app listens to, at /slack/events, with the /policy
    command, the shortcut's callback id and the scopes the listeners' Web API calls need."""
    manifest = yaml.safe_load((Path(__file__).resolve().parent.parent / "slack" / "manifest.yaml").read_text())
    settings_ = manifest["settings"]
    assert sorted(settings_["event_subscriptions"]["bot_events"]) == [
        "app_home_opened", "app_mention", "message.channels", "message.groups", "message.im", "message.mpim"]
    urls = [settings_["event_subscriptions"]["request_url"], settings_["interactivity"]["request_url"],
            manifest["features"]["slash_commands"][0]["url"]]
    assert all(url.endswith("/slack/events") for url in urls)
    assert settings_["interactivity"]["is_enabled"] is True
    assert manifest["features"]["slash_commands"][0]["command"] == "/policy"
    assert manifest["features"]["shortcuts"][0]["callback_id"] == CALLBACK_SHORTCUT
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "commands", "im:history", "reactions:write", "im:write"} <= scopes


# ---------------------------------------------------------------------------------------------- /policy
async def test_policy_command_answers_privately_citing_7_2_and_can_be_shared(rig: Rig) -> None:
    """/policy QUESTION is acknowledged at once with an empty body, then answered ephemerally through the
    response_url citing 7.2, with a "Share in channel" button that posts the answer for everyone and removes the
    private copy."""
    body = command_body(HARASSMENT_QUESTION, rig.stub.response_url("cmd"))
    status, text, _ = await rig.post(body, signed_headers(body, FORM))
    assert (status, text) == (200, "")
    reply = (await rig.stub.wait_for("respond:cmd"))[0].payload
    assert reply["response_type"] == "ephemeral"
    assert "*7.2*" in all_text(reply["blocks"])
    assert rig.stub.calls_to("chat.postMessage") == []

    share = find_buttons(reply["blocks"], ACTION_SHARE)[0]
    click = block_action({"action_id": ACTION_SHARE, "value": share["value"]}, "C0GENERAL",
                         {"ts": "1700000000.000900", "blocks": reply["blocks"]}, rig.stub.response_url("share"),
                         ephemeral=True)
    assert await rig.interact(click) == 200
    shared, deleted = await rig.stub.wait_for("respond:share", 2)
    assert shared.payload["response_type"] == "in_channel"
    assert "*7.2*" in all_text(shared.payload["blocks"])
    assert "Shared by <@U0ASKER>" in all_text(shared.payload["blocks"])
    assert find_buttons(shared.payload["blocks"], ACTION_SHARE) == []
    assert deleted.payload.get("delete_original") is True


@pytest.mark.parametrize("text", ["", "help", "hello"])
async def test_policy_command_without_a_question_shows_how_to_use_it(rig: Rig, text: str) -> None:
    """/policy with no text, "help" or a greeting shows what the bot does and example questions."""
    body = command_body(text, rig.stub.response_url("help"))
    await rig.post(body, signed_headers(body, FORM))
    reply = (await rig.stub.wait_for("respond:help"))[0].payload
    assert EXAMPLE_QUESTIONS[0] in all_text(reply["blocks"])
    assert reply["response_type"] == "ephemeral"


# ---------------------------------------------------------------------------------------------- buttons
async def test_feedback_button_is_recorded_and_acknowledged_privately(rig: Rig) -> None:
    """"Helpful" records feedback against the logged question in the store and thanks the user ephemerally;
    nothing is posted publicly."""
    await rig.event(mention(LOGO_QUESTION, ts="1700000000.001000"))
    post = (await rig.stub.wait_for("chat.postMessage"))[0]
    helpful = find_buttons(post.payload["blocks"], ACTION_HELPFUL)[0]
    posted = {"ts": "1700001000.000001", "thread_ts": "1700000000.001000", "blocks": post.payload["blocks"]}
    click = block_action({"action_id": ACTION_HELPFUL, "value": helpful["value"]}, "C0GENERAL", posted,
                         rig.stub.response_url("fb"))
    assert await rig.interact(click) == 200
    thanks = (await rig.stub.wait_for("respond:fb"))[0].payload
    assert thanks["response_type"] == "ephemeral"
    with rig.store.engine.connect() as conn:
        rows = conn.execute(sa.select(feedback.c.question_id, feedback.c.helpful)).all()
    assert rows == [(helpful["value"], True)]
    assert len(rig.stub.calls_to("chat.postMessage")) == 1


async def test_show_full_clause_posts_the_whole_clause_privately(rig: Rig) -> None:
    """"Show full clause" sends the clause's complete verbatim text to whoever clicked, ephemerally."""
    value = encode_value({"d": "social-media-policy-for-councillors", "c": "5.3"})
    click = block_action({"action_id": f"{ACTION_FULL_CLAUSE}:0", "value": value}, "C0GENERAL",
                         {"ts": "1700001000.000002"}, rig.stub.response_url("full"))
    await rig.interact(click)
    reply = (await rig.stub.wait_for("respond:full"))[0].payload
    text = all_text(reply["blocks"])
    assert "In any biography where the Councillor is identified as a Councillor" in text
    assert "written permission of the chief executive" in text


async def test_message_shortcut_answers_in_that_messages_thread(rig: Rig) -> None:
    """"Check against policy" on a colleague's message answers that message in its thread."""
    payload = {"type": "message_action", "callback_id": CALLBACK_SHORTCUT, "action_ts": "1700000000.1",
               "channel": {"id": "C0GENERAL", "name": "general"}, "response_url": rig.stub.response_url("sc"),
               "message": {"type": "message", "user": "U0COLLEAGUE", "ts": "1700000000.001100",
                           "text": LOGO_QUESTION}}
    assert await rig.interact(interaction_body(payload)) == 200
    post = (await rig.stub.wait_for("chat.postMessage"))[0]
    assert post.payload["thread_ts"] == "1700000000.001100"
    assert "*5.3*" in all_text(post.payload["blocks"])


async def test_app_home_lists_policies_and_their_version_dates(rig: Rig) -> None:
    """Opening the App Home tab publishes what the bot does, example questions and the policies it knows."""
    await rig.event({"type": "app_home_opened", "user": "U0ASKER", "channel": "D0ASKER", "tab": "home",
                     "ts": "1700000000.001200"})
    view = (await rig.stub.wait_for("views.publish"))[0].payload
    assert view["user_id"] == "U0ASKER"
    text = all_text(view["view"])
    assert view["view"]["type"] == "home"
    assert "Social Media Policy for Councillors" in text
    assert "28th June 2021" in text
    assert EXAMPLE_QUESTIONS[0] in text


async def test_questions_over_the_rate_limit_get_a_polite_message(adviser: Adviser, tmp_path: Path) -> None:
    """Beyond POLICYBOT_RATE_LIMIT_PER_MINUTE a user's question is not answered; they are asked to wait."""
    async with running_rig(adviser, tmp_path, rate_limit_per_minute=1) as rig:
        for ts in ("1700000000.001250", "1700000000.001251"):
            await rig.event(message(LOGO_QUESTION, ts=ts, channel="D0ASKER", channel_type="im"))
            await rig.stub.wait_for("reactions.remove", 1 if ts.endswith("0") else 2)
        answered, limited = rig.stub.calls_to("chat.postMessage")
        assert "*5.3*" in all_text(answered.payload["blocks"])
        assert "wait a moment" in limited.payload["text"]
        assert "*5.3*" not in all_text(limited.payload["blocks"])


# ---------------------------------------------------------------------------------------------- Web API faults
async def test_rate_limited_post_is_retried_after_retry_after(rig: Rig) -> None:
    """A 429 from chat.postMessage is retried once Retry-After has passed, and the answer is delivered."""
    rig.stub.fail("chat.postMessage", 429, times=1, retry_after=1)
    await rig.event(mention(LOGO_QUESTION, ts="1700000000.001300"))
    limited, delivered = await rig.stub.wait_for("chat.postMessage", 2)
    assert (limited.status, delivered.status) == (429, 200)
    assert delivered.at - limited.at >= 1.0
    assert "*5.3*" in all_text(delivered.payload["blocks"])


async def test_web_api_500_is_logged_and_the_server_keeps_answering(rig: Rig, caplog) -> None:
    """When chat.postMessage keeps failing with 500 the failure is logged, and the next question is answered."""
    caplog.set_level(logging.WARNING)
    rig.stub.fail("chat.postMessage", 500, times=2)  # the first try and the client's one retry
    await rig.event(mention(LOGO_QUESTION, ts="1700000000.001400"))
    await rig.stub.wait_for("chat.postMessage", 2)
    await rig.stub.wait_for("reactions.remove")
    assert "chat.postMessage failed" in caplog.text

    await rig.event(mention(HARASSMENT_QUESTION, ts="1700000000.001401"))
    posts = await rig.stub.wait_for("chat.postMessage", 3)
    assert posts[2].status == 200
    assert "*7.2*" in all_text(posts[2].payload["blocks"])


# ---------------------------------------------------------------------------------------------- escalation
@pytest.fixture
def adviser_with_slack_contacts(adviser: Adviser, policy_copy: Path) -> Adviser:
    """The same index, with the chief executive reachable in Slack."""
    contacts = policy_copy / "contacts.toml"
    text = contacts.read_text(encoding="utf-8").replace(
        '[roles."chief executive"]\nname = "CHANGE-ME Chief Executive\'s Office"\n'
        'email = "chief.executive@example.gov.uk"\nplaceholder = true',
        '[roles."chief executive"]\nname = "Chief Executive\'s Office"\nemail = "ce@example.gov.uk"\n'
        'slack = "U0CHIEFEX"')
    contacts.write_text(text, encoding="utf-8")
    settings = Settings(policy_dir=policy_copy, data_dir=adviser.settings.data_dir)
    configured = Adviser.from_index(settings, adviser.encoder, adviser.index)
    assert configured.contacts.lookup("chief executive").slack == "U0CHIEFEX"
    return configured


async def test_ask_role_confirms_then_forwards_a_ticket_and_tells_the_asker_when_resolved(
    adviser_with_slack_contacts: Adviser, tmp_path: Path,
) -> None:
    """"Ask chief executive" shows what will be forwarded (views.open) and sends nothing until confirmed; on
    confirm a ticket is opened and posted to the contact with "Mark resolved"; resolving it updates that message
    and tells the asker in their thread."""
    async with running_rig(adviser_with_slack_contacts, tmp_path) as rig:
        await rig.event(mention(LOGO_QUESTION, ts="1700000000.001500"))
        answer = (await rig.stub.wait_for("chat.postMessage"))[0].payload
        assert "<@U0CHIEFEX>" in all_text(answer["blocks"])
        ask = find_buttons(answer["blocks"], ACTION_ASK_ROLE)[0]
        assert ask["text"]["text"] == "Ask chief executive"
        posted = {"ts": "1700001000.000001", "thread_ts": "1700000000.001500", "blocks": answer["blocks"]}
        await rig.interact(block_action({"action_id": ask["action_id"], "value": ask["value"]}, "C0GENERAL",
                                        posted, rig.stub.response_url("ask")))
        modal = (await rig.stub.wait_for("views.open"))[0].payload["view"]
        assert LOGO_QUESTION in all_text(modal["blocks"])
        assert rig.stub.calls_to("chat.postMessage")[1:] == []  # nothing forwarded before confirmation

        submit = interaction_body({"type": "view_submission", "view": {
            "id": "V1", "type": "modal", "callback_id": CALLBACK_ASK_CONFIRM,
            "private_metadata": modal["private_metadata"], "state": {"values": {}}}})
        assert await rig.interact(submit) == 200
        forwarded, told = (await rig.stub.wait_for("chat.postMessage", 3))[1:]
        assert forwarded.payload["channel"] == "U0CHIEFEX"
        assert LOGO_QUESTION in all_text(forwarded.payload["blocks"])
        assert (told.payload["channel"], told.payload["thread_ts"]) == ("C0GENERAL", "1700000000.001500")
        [ticket] = rig.store.open_tickets()
        assert (ticket.role, ticket.question, ticket.destination) == ("chief executive", LOGO_QUESTION,
                                                                      "U0CHIEFEX")
        assert "5.3" in ticket.clauses
        assert ticket.link == "https://council.slack.com/archives/C0GENERAL/p1"
        assert ticket.notify == "slack:C0GENERAL:1700000000.001500"
        assert "View the conversation" in all_text(forwarded.payload["blocks"])

        resolve = find_buttons(forwarded.payload["blocks"], ACTION_RESOLVE)[0]
        assert resolve["value"] == ticket.id
        ticket_message = {"ts": "1700001000.000009", "blocks": forwarded.payload["blocks"]}
        await rig.interact(block_action({"action_id": ACTION_RESOLVE, "value": resolve["value"]}, "D0CHIEFEX",
                                        ticket_message, rig.stub.response_url("res"), user="U0CHIEFEX"))
        updated = (await rig.stub.wait_for("chat.update"))[0].payload
        assert "Marked resolved by <@U0CHIEFEX>" in all_text(updated["blocks"])
        resolved_note = (await rig.stub.wait_for("chat.postMessage", 4))[3].payload
        assert resolved_note["thread_ts"] == "1700000000.001500"
        assert "resolved" in resolved_note["text"]
        assert rig.store.get_ticket(ticket.id).status == "resolved"


# ---------------------------------------------------------------------------------------------- Socket Mode
async def test_socket_mode_answers_events_and_acknowledges_each_envelope(adviser: Adviser, tmp_path: Path) -> None:
    """With Socket Mode (app token, no public URL or signing secret) the same listeners answer a mention arriving
    over the websocket, and the envelope is acknowledged by its id."""
    stub = await SlackStub().start()
    settings = Settings(policy_dir=adviser.settings.policy_dir, data_dir=tmp_path, slack_bot_token=Secret(BOT_TOKEN),
                        slack_app_token=Secret("xapp-test-app-token"), slack_api_url=stub.api_url)
    service = AdviserService(settings, adviser)
    store = Store.open(f"sqlite:///{tmp_path}/t.db", b"k" * 32)
    handler = await start_socket_mode(create_app(settings, service, store), service, store, settings)
    try:
        opened = (await stub.wait_for("apps.connections.open"))[0]
        assert opened.authorization == "Bearer xapp-test-app-token"
        envelope = {"envelope_id": "env-1", "type": "events_api", "accepts_response_payload": False,
                    "retry_attempt": 0, "retry_reason": "",
                    "payload": json.loads(event_body(mention(LOGO_QUESTION, ts="1700000000.001600")))}
        await stub.socket_send(envelope)
        ack = (await stub.wait_for("socket:ack"))[0]
        assert ack.payload["envelope_id"] == "env-1"
        post = (await stub.wait_for("chat.postMessage"))[0]
        assert post.payload["thread_ts"] == "1700000000.001600"
        assert "*5.3*" in all_text(post.payload["blocks"])
    finally:
        await handler.close_async()
        await stub.stop()
        service.close()
        store.close()
