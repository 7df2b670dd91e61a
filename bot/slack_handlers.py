"""Slack listeners: mentions, DMs, thread follow-ups, /policy, the message shortcut, App Home and the buttons."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adviser import EXAMPLE_QUESTIONS
from bot.answer import Answer, Citation
from bot.render_slack import (
    ACTION_ASK_ROLE,
    ACTION_FULL_CLAUSE,
    ACTION_HELPFUL,
    ACTION_RESOLVE,
    ACTION_SHARE,
    ACTION_UNHELPFUL,
    CALLBACK_ASK_CONFIRM,
    CALLBACK_SHORTCUT,
    PROGRESS_REACTION,
    PolicySummary,
    RenderOptions,
    decode_value,
    render_answer,
    render_feedback_ack,
    render_full_clause,
    render_help,
    render_home,
    render_notice,
)
from bot.service import AdviserService
from bot.settings import Settings
from bot.slack_escalation import AskAPersonListeners
from bot.slack_payload import PLATFORM, action_channel, dict_of, field_of, from_a_bot, text_of

log = logging.getLogger(__name__)
T = TypeVar("T")

COMMAND = "/policy"
ANSWERED_KINDS = ("policy", "clause", "abstain")  # the kinds that are logged and get feedback buttons
_QUESTION_ID = re.compile(r"^[0-9a-f]{32}$")
_MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")
LOADING = "I am still loading the council's policies. Please ask again in a minute."
NOT_STARTED = ("I could not load the council's policies, so I cannot answer yet. Please tell whoever runs the "
               "Policy Adviser (the reason is in its log and at /healthz).")
RATE_LIMITED = "You have asked a lot of questions in the last minute. Please wait a moment and ask again."
FAILED = "Sorry, something went wrong while answering that. Please try again, or ask democratic services."


async def slack_call(method: str, call: Awaitable[T]) -> T | None:
    """Await one Web API call; a failure (after the client's own retries) is logged and gives None, so a Slack
    outage never takes the server down. Only the method and Slack's error code are logged, never the payload."""
    try:
        return await call
    except SlackApiError as exc:
        status = getattr(exc.response, "status_code", "?")
        data = getattr(exc.response, "data", None)  # a dict, or the text of a non-JSON reply
        error = data.get("error") if isinstance(data, dict) else None
        log.warning("Slack %s failed (HTTP %s, %s); giving up", method, status, error or "no error code")
    except Exception as exc:  # network edge: connection reset, timeout, a non-JSON reply
        log.warning("Slack %s failed (%s); giving up", method, type(exc).__name__)
    return None


def question_from_slack(text: str, bot_user_id: str | None) -> str:
    """The question as the user typed it: the bot's own mention removed and Slack's &amp; &lt; &gt; decoded. Other
    tokens (<!channel>, <@U…>, links) are kept as text: the renderer escapes them, so they show literally."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())


class ThreadMemory:
    """Questions asked in the conversations the bot has answered, so a reply in such a thread is recognised as a
    follow-up and answered with the earlier questions as context. Bounded: the least recently used threads go
    first. Used when there is no record store; with one, the store's conversation turns are shared by all
    instances (see SlackListeners._thread_history)."""

    def __init__(self, max_threads: int = 5000, per_thread: int = 5) -> None:
        self._threads: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
        self.max_threads = max_threads
        self.per_thread = per_thread

    def history(self, channel: str, thread_ts: str) -> list[str]:
        return list(self._threads.get((channel, thread_ts), ()))

    def remember(self, channel: str, thread_ts: str, question: str) -> None:
        key = (channel, thread_ts)
        questions = self._threads.pop(key, [])
        questions = (questions + [question])[-self.per_thread:]
        self._threads[key] = questions
        while len(self._threads) > self.max_threads:
            self._threads.popitem(last=False)


class SeenEvents:
    """In-memory event dedupe, used only when there is no store (or it is unreachable)."""

    def __init__(self, limit: int = 10000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.limit = limit

    def claim(self, event_id: str) -> bool:
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True


@dataclass(frozen=True)
class Where:
    """Where an answer goes: a channel, the thread in it ("" for the top level of a DM), and the message that gets
    the progress reaction."""

    channel: str
    thread_ts: str = ""
    react_ts: str = ""


@dataclass
class SlackListeners(AskAPersonListeners):
    """The app's listeners. Each acknowledges first (Slack's 3-second deadline), then does the slow work."""

    service: AdviserService
    store: Any  # bot.store.Store | None; synchronous, so always called through service.run
    settings: Settings
    threads: ThreadMemory = field(default_factory=ThreadMemory)
    seen: SeenEvents = field(default_factory=SeenEvents)

    def register(self, app: AsyncApp) -> None:
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.event("app_home_opened")(self.on_home_opened)
        app.command(COMMAND)(self.on_command)
        app.shortcut(CALLBACK_SHORTCUT)(self.on_shortcut)
        app.action(re.compile(f"^{ACTION_FULL_CLAUSE}(:|$)"))(self.on_full_clause)
        app.action(re.compile(f"^{ACTION_ASK_ROLE}(:|$)"))(self.on_ask_role)
        app.view(CALLBACK_ASK_CONFIRM)(self.on_ask_confirm)
        app.action(ACTION_RESOLVE)(self.on_resolve)
        app.action(re.compile(f"^({ACTION_HELPFUL}|{ACTION_UNHELPFUL})$"))(self.on_feedback)
        app.action(ACTION_SHARE)(self.on_share)
        app.error(self.on_error)

    # ------------------------------------------------------------------------------------------ conversations
    async def on_mention(self, event: dict, body: dict, client: AsyncWebClient, context: dict) -> None:
        """A mention in a channel: answered in the mention's thread."""
        if from_a_bot(event, context.get("bot_user_id")) or not event.get("channel") or not event.get("ts"):
            return
        where = Where(event["channel"], event.get("thread_ts") or event["ts"], event["ts"])
        await self.answer(client, event.get("user", ""), event.get("text", ""), where,
                          context.get("bot_user_id"), body.get("event_id"))

    async def on_message(self, event: dict, body: dict, client: AsyncWebClient, context: dict) -> None:
        """Every DM is answered; in channels, only an un-mentioned reply in a thread the bot has answered."""
        bot_user_id = context.get("bot_user_id")
        if from_a_bot(event, bot_user_id) or event.get("subtype"):
            return  # edits, deletions, joins, bot posts: never questions
        channel, ts, thread = text_of(event.get("channel")), text_of(event.get("ts")), text_of(event.get("thread_ts"))
        if not channel or not ts:
            return
        if event.get("channel_type") == "im":
            where = Where(channel, thread, ts)
        elif thread and thread != ts and await self._thread_history(channel, thread):
            if _MENTION.search(text_of(event.get("text"))):
                return  # a mention of the bot arrives as app_mention too; a mention of someone else is for them
            where = Where(channel, thread, ts)
        else:
            return
        await self.answer(client, event.get("user", ""), event.get("text", ""), where, bot_user_id,
                          body.get("event_id"))

    async def answer(
        self, client: AsyncWebClient, user: str, text: str, where: Where, bot_user_id: str | None,
        event_id: str | None = None,
    ) -> bool:
        """Answer one question in `where`; True when the answer was posted. A retry or replay of an event that was
        already claimed posts nothing."""
        # Slack sends strings here; a payload with any other JSON type in these fields is not a question.
        user, text, event_id = text_of(user), text_of(text), text_of(event_id)
        where = Where(text_of(where.channel), text_of(where.thread_ts), text_of(where.react_ts))
        if not where.channel:
            return False
        if event_id and not await self._claim(event_id):
            log.info("event %s already handled; ignored", event_id)
            return True
        question = question_from_slack(text, bot_user_id)
        thread = {"thread_ts": where.thread_ts} if where.thread_ts else {}
        async with self.progress(client, where):
            payload = await self._answer_payload(user, question, where, ephemeral=False)
            posted = await self._slack("chat.postMessage", client.chat_postMessage(
                channel=where.channel, unfurl_links=False, unfurl_media=False, **thread, **payload))
        return posted is not None

    async def _answer_payload(self, user: str, question: str, where: Where | None, ephemeral: bool) -> dict:
        """The message for one question: the rendered answer, or a notice (loading, rate limited, failed)."""
        if not self.service.ready:  # "ask again in a minute" would be untrue once loading has failed
            return render_notice(NOT_STARTED if self.service.load_error else LOADING)
        if not await self._allowed(user):
            return render_notice(RATE_LIMITED)
        history = await self._history(where) if where else []
        try:
            answer, question_id = await self._ask(user, question, history)
        except Exception as exc:
            log.exception("answering a Slack question failed")
            self.service.observe_question(PLATFORM, user, None, None, error=exc)
            return render_notice(FAILED)
        if where and answer.kind in ANSWERED_KINDS:
            await self._remember(where, user, answer.question)
        options = RenderOptions(question_id=question_id, ephemeral=ephemeral, ask_buttons=self.store is not None)
        return render_answer(answer, options)

    async def _history(self, where: Where) -> list[str]:
        # A threaded reply in a DM may follow the DM's top-level questions.
        history = await self._thread_history(where.channel, where.thread_ts)
        if not history and where.channel.startswith("D"):
            history = await self._thread_history(where.channel, "")
        return history

    async def _thread_history(self, channel: str, thread_ts: str) -> list[str]:
        """The questions answered in a thread, oldest first. With a store, its record is the one every instance
        shares (a follow-up may reach another instance than the question it follows); memory serves without one,
        or when the database cannot be reached."""
        if self.store is not None:
            try:
                return await self.service.run(self.store.conversation_history, PLATFORM, f"{channel}:{thread_ts}")
            except Exception as exc:
                log.warning("could not read a Slack thread's earlier questions: %s", type(exc).__name__)
        return self.threads.history(channel, thread_ts)

    async def _remember(self, where: Where, user: str, question: str) -> None:
        self.threads.remember(where.channel, where.thread_ts, question)
        if self.store is not None:
            try:
                await self.service.run(self.store.remember_turn, PLATFORM, f"{where.channel}:{where.thread_ts}",
                                       user, question)
            except Exception as exc:  # the answer goes out regardless; a follow-up just lacks its context
                log.warning("could not record a Slack thread's question: %s", type(exc).__name__)

    async def _ask(self, user: str, question: str, history: list[str]) -> tuple[Answer, str]:
        started = time.perf_counter()
        answer = await self.service.ask(question, history)
        latency_ms = (time.perf_counter() - started) * 1000
        question_id = ""
        if answer.kind in ANSWERED_KINDS and self.store is not None:
            question_id = uuid.uuid4().hex
            try:
                await self.service.run(self.store.log_question, PLATFORM, user, answer.question, answer.answered,
                                       answer.top_clause, latency_ms, question_id)
            except Exception as exc:  # the record must never cost the answer
                log.warning("could not log a Slack question: %s", type(exc).__name__)
                question_id = ""
        self.service.observe_question(PLATFORM, user, answer, latency_ms, question_id)
        return answer, question_id

    @asynccontextmanager
    async def progress(self, client: AsyncWebClient, where: Where) -> AsyncIterator[None]:
        """An hourglass on the question while the answer is worked out, removed after."""
        added = bool(where.react_ts) and await self._slack("reactions.add", client.reactions_add(
            channel=where.channel, timestamp=where.react_ts, name=PROGRESS_REACTION)) is not None
        try:
            yield
        finally:
            if added:
                await self._slack("reactions.remove", client.reactions_remove(
                    channel=where.channel, timestamp=where.react_ts, name=PROGRESS_REACTION))

    async def _slack(self, method: str, call: Awaitable[T]) -> T | None:
        """slack_call, with a failure counted in /metrics."""
        result = await slack_call(method, call)
        if result is None:
            self.service.observe_api_error(PLATFORM, method)
        return result

    async def _claim(self, event_id: str) -> bool:
        """Claim the event on receipt: in the store, so the claim holds across instances and restarts."""
        if self.store is not None:
            try:
                return bool(await self.service.run(self.store.claim_event, PLATFORM, event_id))
            except Exception as exc:
                log.warning("event dedupe store unavailable (%s); deduping in memory", type(exc).__name__)
        return self.seen.claim(event_id)

    async def _allowed(self, user: str) -> bool:
        if self.store is None or not user:
            return True
        try:
            return bool(await self.service.run(self.store.allow_question, PLATFORM, user,
                                               self.settings.rate_limit_per_minute))
        except Exception as exc:
            log.warning("rate limit store unavailable (%s); question allowed", type(exc).__name__)
            return True

    async def on_home_opened(self, event: dict, client: AsyncWebClient) -> None:
        """App Home: what the bot does, example questions, the policies it knows and their version dates."""
        if event.get("tab") != "home" or not event.get("user"):
            return
        policies = []
        if self.service.ready:
            policies = [PolicySummary(d.meta.title, d.meta.version_date, d.meta.review_due)
                        for d in self.service.adviser.index.documents]
        view = render_home(policies, EXAMPLE_QUESTIONS, loading=not self.service.ready)
        await self._slack("views.publish", client.views_publish(user_id=event["user"], view=view))

    async def on_error(self, error: Exception) -> None:
        # The type and traceback only: bolt's default handler would log the request body with it.
        log.error("Slack listener failed: %s", type(error).__name__, exc_info=error)

    # ------------------------------------------------------------------------------------------ commands
    async def on_command(self, ack: Any, command: dict, respond: Any, client: AsyncWebClient,
                         context: dict) -> None:
        """/policy QUESTION: an ephemeral answer with "Share in channel"; no text, help or hello shows help."""
        await ack()
        user, channel = command.get("user_id", ""), command.get("channel_id", "")
        question = question_from_slack(command.get("text", ""), context.get("bot_user_id"))
        if not question and self.service.ready:
            payload = render_help(self.service.adviser.help_answer())
        else:
            payload = await self._answer_payload(user, question, None, ephemeral=True)
        await self.tell_privately(client, respond, channel, user, payload)

    async def on_shortcut(self, ack: Any, shortcut: dict, respond: Any, client: AsyncWebClient,
                          context: dict) -> None:
        """"Check against policy" on a message: the bot answers that message in its thread."""
        await ack()
        message = dict_of(shortcut.get("message"))
        channel = field_of(shortcut, "channel", "id")
        user = field_of(shortcut, "user", "id")
        if not channel or not message.get("ts"):
            return
        where = Where(channel, message.get("thread_ts") or message["ts"], message["ts"])
        posted = await self.answer(client, user, message.get("text", ""), where, context.get("bot_user_id"))
        if not posted:
            notice = render_notice("I could not post in this channel. Invite me first (/invite), then try again.")
            await self.tell_privately(client, respond, channel, user, notice)

    async def tell_privately(self, client: AsyncWebClient, respond: Any, channel: str, user: str, payload: dict,
                             thread_ts: str = "") -> None:
        """An ephemeral message to one user: through the response_url when there is one (it works where the bot is
        not a member, and on ephemeral answers), else chat.postEphemeral."""
        if respond is not None and getattr(respond, "response_url", None):
            result = await self._slack("response_url", respond(
                response_type="ephemeral", replace_original=False, **payload))
            if result is not None and getattr(result, "status_code", 200) < 400:
                return
        if channel and user:
            thread = {"thread_ts": thread_ts} if thread_ts else {}
            await self._slack("chat.postEphemeral", client.chat_postEphemeral(
                channel=channel, user=user, **thread, **payload))

    # ------------------------------------------------------------------------------------------ buttons
    async def on_full_clause(self, ack: Any, action: dict, body: dict, respond: Any,
                             client: AsyncWebClient) -> None:
        """"Show full clause": the whole clause, privately to whoever clicked."""
        await ack()
        data = decode_value(action.get("value"))
        citation = self.find_citation(str(data.get("d", "")), str(data.get("c", "")))
        payload = render_full_clause(citation) if citation else render_notice(
            "I could not find that clause: the policy may have changed since this answer.")
        await self._reply_to_action(client, respond, body, payload)

    def find_citation(self, doc_id: str, number: str) -> Citation | None:
        if not self.service.ready:
            return None
        document = self.service.adviser.index.doc_by_id.get(doc_id)
        clause = document.clause(number) if document else None
        if document is None or clause is None:
            return None
        return Citation(document=document.meta.title, doc_id=doc_id, clause=clause.number,
                        title=clause.section_label, text=clause.text, score=1.0,
                        version_date=document.meta.version_date)

    async def on_feedback(self, ack: Any, action: dict, body: dict, respond: Any, client: AsyncWebClient) -> None:
        """Helpful / not helpful: recorded in the store and acknowledged privately, never publicly."""
        await ack()
        helpful = action.get("action_id") == ACTION_HELPFUL
        question_id = str(action.get("value", ""))
        user = field_of(body, "user", "id")
        if self.store is not None and _QUESTION_ID.match(question_id) and user:
            try:
                await self.service.run(self.store.record_feedback, question_id, PLATFORM, user, helpful)
            except Exception as exc:
                log.warning("could not record Slack feedback: %s", type(exc).__name__)
        await self._reply_to_action(client, respond, body, render_feedback_ack(helpful))

    async def on_share(self, ack: Any, action: dict, body: dict, respond: Any, client: AsyncWebClient) -> None:
        """"Share in channel" on an ephemeral answer: the same answer posted for everyone, labelled with who shared
        it, and the private copy removed."""
        await ack()
        data = decode_value(action.get("value"))
        question = str(data.get("q", ""))
        question_id = str(data.get("i", ""))
        user = field_of(body, "user", "id")
        if not question or not self.service.ready:
            return
        answer = await self.service.ask(question)  # a button value cannot carry the answer itself
        options = RenderOptions(question_id=question_id if _QUESTION_ID.match(question_id) else "",
                                shared_by=user, ask_buttons=self.store is not None)
        payload = render_answer(answer, options)
        if getattr(respond, "response_url", None):
            shared = await self._slack("response_url", respond(
                response_type="in_channel", replace_original=False, **payload))
            if shared is not None and shared.status_code < 400:
                await self._slack("response_url", respond(delete_original=True))
                return
        channel = action_channel(body)
        if channel:
            await self._slack("chat.postMessage", client.chat_postMessage(channel=channel, **payload))

    async def _reply_to_action(self, client: AsyncWebClient, respond: Any, body: dict, payload: dict) -> None:
        message = dict_of(body.get("message"))
        await self.tell_privately(client, respond, action_channel(body), field_of(body, "user", "id"),
                                  payload, thread_ts=str(message.get("thread_ts") or ""))
