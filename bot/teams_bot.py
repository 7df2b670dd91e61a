"""The Teams conversation as a botbuilder ActivityHandler: questions, follow-ups, welcome, feedback and "Ask <role>"."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from copy import copy
from typing import Any

from botbuilder.core import ActivityHandler, TurnContext
from botbuilder.schema import Activity, ActivityTypes, Attachment, ChannelAccount, ConversationReference

from bot.adviser import EXAMPLE_QUESTIONS
from bot.answer import Answer, Contact
from bot.render_teams import (
    CARD_CONTENT_TYPE,
    escape_markdown,
    help_intro,
    render_answer_card,
    render_confirm_card,
    render_email_card,
    render_forward_card,
    render_notice_card,
    render_plain_text,
    render_welcome_card,
    role_phrase,
)
from bot.service import AdviserService
from bot.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "teams"
TYPING_INTERVAL_S = 3.0  # Teams shows "typing" for about three seconds per indicator
GROUP_CONVERSATIONS = ("channel", "groupChat")
LOGGED_KINDS = ("policy", "clause", "abstain")  # greetings and empty messages are not questions
_MAX_CLAUSES = 5
_MAX_ID_CHARS = 64
_MENTION_TAG = re.compile(r"</?at[^>]*>", re.IGNORECASE)
LOADING = "I'm still loading the council's policies. Please ask again in a minute."
NOT_STARTED = ("I couldn't load the council's policies, so I can't answer yet. Please tell whoever runs the "
               "Policy Adviser (the reason is in its log and at /healthz).")
DEFAULT_INTRO = "I answer questions about the council's policies by quoting them, with clause numbers."


class ConversationMemory:
    """The last few questions of each conversation, oldest first: the `history` the adviser uses to read a short
    follow-up ("what about Instagram?") in the light of the question before it. Bounded in conversations (least
    recently used dropped first) and in questions per conversation; in memory, so a restart forgets it. Used when
    there is no record store (or it cannot be reached); with one, its conversation turns serve every instance."""

    def __init__(self, max_conversations: int = 1000, max_questions: int = 3) -> None:
        self._questions: OrderedDict[str, deque[str]] = OrderedDict()
        self.max_conversations = max_conversations
        self.max_questions = max_questions

    def history(self, conversation_id: str) -> tuple[str, ...]:
        return tuple(self._questions.get(conversation_id, ()))

    def remember(self, conversation_id: str, question: str) -> None:
        questions = self._questions.pop(conversation_id, None) or deque(maxlen=self.max_questions)
        questions.append(question)
        self._questions[conversation_id] = questions
        while len(self._questions) > self.max_conversations:
            self._questions.popitem(last=False)


def conversation_root(conversation_id: str) -> str:
    """A channel thread's id is the channel's id plus ";messageid=..."; the root is the channel itself."""
    return conversation_id.split(";", 1)[0]


class KnownConversations:
    """Conversation references the bot has received activities from (so they were authenticated, or loopback in
    anonymous mode). Used to post to a role's configured Teams conversation and to tell an asker their request
    was resolved; the bot never posts to a conversation it has not heard from. Bounded, in memory."""

    def __init__(self, limit: int = 2000) -> None:
        self._references: OrderedDict[str, ConversationReference] = OrderedDict()
        self.limit = limit

    def remember(self, reference: ConversationReference) -> None:
        conversation_id = reference.conversation.id if reference.conversation else ""
        if not conversation_id or not reference.service_url:
            return
        self._references.pop(conversation_id, None)
        self._references[conversation_id] = reference
        while len(self._references) > self.limit:
            self._references.popitem(last=False)

    def find(self, teams_id: str) -> ConversationReference | None:
        """A reference to post a new message to `teams_id`: a conversation or channel id the bot has seen, or the
        personal chat of a user with that id."""
        teams_id = teams_id.strip()
        if not teams_id:
            return None
        for conversation_id, reference in reversed(self._references.items()):
            user = reference.user or ChannelAccount()
            if conversation_root(conversation_id) == teams_id or (
                _is_personal(reference) and teams_id in (user.id, user.aad_object_id)
            ):
                target = copy(reference)
                target.conversation = copy(reference.conversation)
                if conversation_root(conversation_id) == teams_id:
                    target.conversation.id = teams_id  # a new post in the channel, not a reply in an old thread
                target.activity_id = None
                return target
        return None


def _is_personal(reference: ConversationReference) -> bool:
    conversation_type = getattr(reference.conversation, "conversation_type", None) or "personal"
    return conversation_type == "personal"


def card_activity(card: dict, summary: str = "") -> Activity:
    """A message carrying one Adaptive Card. `summary` is the Bot Framework's text for channels that cannot render
    cards; `text` stays empty because Teams would show it above the card, repeating the answer."""
    return Activity(
        type=ActivityTypes.message,
        attachments=[Attachment(content_type=CARD_CONTENT_TYPE, content=card)],
        summary=summary or card.get("fallbackText", ""),
    )


class PolicyBot(ActivityHandler):
    """The adviser in Teams. Personal chats: every message is a question. Channels and group chats: only messages
    that @mention the bot, with the mention removed. Card buttons post back {action: ...} values."""

    def __init__(
        self,
        service: AdviserService,
        store: Any = None,  # bot.store.Store, or None when no record store is configured
        settings: Settings | None = None,
        memory: ConversationMemory | None = None,
        known: KnownConversations | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.settings = settings or service.settings
        self.memory = memory or ConversationMemory()
        self.known = known or KnownConversations()
        self._actions: dict[str, Callable[[TurnContext, dict], Awaitable[None]]] = {
            "ask": self._on_ask_button,
            "feedback": self._on_feedback,
            "escalate": self._on_escalate,
            "escalate_confirm": self._on_escalate_confirm,
            "escalate_cancel": self._on_escalate_cancel,
            "resolve": self._on_resolve,
        }

    async def on_turn(self, turn_context: TurnContext) -> None:
        self.known.remember(TurnContext.get_conversation_reference(turn_context.activity))
        turn_context.on_send_activities(self._count_send_errors)
        await super().on_turn(turn_context)

    async def _count_send_errors(self, turn_context: TurnContext, activities: list[Activity],
                                 send: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await send()
        except Exception:
            self.service.observe_api_error(PLATFORM, "send_activity")
            raise

    # ---------------------------------------------------------------------------------------------- messages
    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        value = activity.value if isinstance(activity.value, dict) else None
        if value and isinstance(value.get("action"), str):
            # A card button: addressed to the bot whatever the conversation, so no mention is needed.
            handler = self._actions.get(value["action"])
            if handler is not None:
                await handler(turn_context, value)
            return
        if not self._addressed_to_bot(activity):
            return
        await self._answer(turn_context, question_text(activity))

    async def on_members_added_activity(self, members_added: list[ChannelAccount], turn_context: TurnContext) -> None:
        bot_id = turn_context.activity.recipient.id if turn_context.activity.recipient else None
        if any(member is not None and member.id == bot_id for member in members_added or ()):
            await self._send_welcome(turn_context)

    def _addressed_to_bot(self, activity: Activity) -> bool:
        conversation_type = getattr(activity.conversation, "conversation_type", None)
        if conversation_type not in GROUP_CONVERSATIONS:
            return True
        return mentions_recipient(activity)

    async def _answer(self, turn_context: TurnContext, question: str) -> None:
        activity = turn_context.activity
        if not self.service.ready:  # "ask again in a minute" would be untrue once loading has failed
            await self._notice(turn_context, NOT_STARTED if self.service.load_error else LOADING)
            return
        if not await self._first_delivery(activity):
            return  # the Bot Framework redelivered an activity we already answered
        user_id = user_key(activity)
        allowed = await self._store_call("allow_question", PLATFORM, user_id, self.settings.rate_limit_per_minute)
        if allowed is False:
            await self._notice(turn_context, "You've asked a lot of questions in the last minute. Please wait a "
                                             "moment and ask again.")
            return
        conversation_id = activity.conversation.id
        async with typing_indicator(turn_context):
            started = time.perf_counter()
            try:
                answer = await self.service.ask(question, await self._history(conversation_id))
            except Exception as exc:
                log.exception("the adviser failed on a Teams question")
                self.service.observe_question(PLATFORM, user_id, None, None, error=exc)
                await self._notice(turn_context, "Sorry, I couldn't answer that just now. Please try again.")
                return
            latency_ms = (time.perf_counter() - started) * 1000
        if answer.kind == "help":
            self.service.observe_question(PLATFORM, user_id, answer, latency_ms)
            await self._send_welcome(turn_context)
            return
        question_id = ""
        if answer.kind in LOGGED_KINDS:
            question_id = await self._store_call("log_question", PLATFORM, user_id, answer.question,
                                                 answer.answered, answer.top_clause, latency_ms) or ""
            self.memory.remember(conversation_id, answer.question)
            await self._store_call("remember_turn", PLATFORM, conversation_id, user_id, answer.question)
        self.service.observe_question(PLATFORM, user_id, answer, latency_ms, question_id)
        await self._send_answer(turn_context, answer, question_id)

    async def _send_answer(self, turn_context: TurnContext, answer: Answer, question_id: str) -> None:
        card = render_answer_card(answer, question_id)
        await turn_context.send_activity(card_activity(card, render_plain_text(answer)))

    async def _send_welcome(self, turn_context: TurnContext) -> None:
        intro = help_intro(self.service.adviser.help_answer().answer) if self.service.ready else DEFAULT_INTRO
        await turn_context.send_activity(card_activity(render_welcome_card(intro, EXAMPLE_QUESTIONS)))

    async def _notice(self, turn_context: TurnContext, title: str, lines: list[str] | None = None,
                      actions: list[dict] | None = None) -> None:
        await turn_context.send_activity(card_activity(render_notice_card(title, lines or [], actions or [])))

    async def _first_delivery(self, activity: Activity) -> bool:
        """Claim the activity in the store so a redelivery (or a second server instance) does not answer twice."""
        if not activity.id:
            return True
        claimed = await self._store_call("claim_event", PLATFORM, f"{activity.conversation.id}|{activity.id}")
        return claimed is not False

    async def _history(self, conversation_id: str) -> tuple[str, ...]:
        """The conversation's earlier questions: from the store, which all instances share, else from memory."""
        shared = await self._store_call("conversation_history", PLATFORM, conversation_id, self.memory.max_questions)
        return tuple(shared) if shared is not None else self.memory.history(conversation_id)

    async def _store_call(self, method: str, *args: Any) -> Any:
        """Call a store method off the event loop; None when there is no store or it fails (the answer matters
        more than its record, so a store fault never stops one)."""
        if self.store is None:
            return None
        try:
            return await self.service.run(getattr(self.store, method), *args)
        except Exception as exc:
            log.warning("record store %s failed: %s", method, type(exc).__name__)
            return None

    # ------------------------------------------------------------------------------------------ card buttons
    async def _on_ask_button(self, turn_context: TurnContext, value: dict) -> None:
        question = value.get("question")
        if isinstance(question, str) and question.strip():
            await self._answer(turn_context, question)

    async def _on_feedback(self, turn_context: TurnContext, value: dict) -> None:
        question_id, helpful = value.get("question_id"), value.get("helpful")
        if not _is_id(question_id) or not isinstance(helpful, bool):
            return
        if self.store is None:
            await self._notice(turn_context, "Thanks. (Feedback is not being recorded on this server.)")
            return
        await self._store_call("record_feedback", question_id, PLATFORM, user_key(turn_context.activity), helpful)
        await self._notice(turn_context, "Thanks for your feedback.")

    async def _on_escalate(self, turn_context: TurnContext, value: dict) -> None:
        request = self._escalation_request(value)
        if request is None:
            return
        contact = self._contact(request["role"])
        asker = turn_context.activity.from_property.name if turn_context.activity.from_property else ""
        card = render_confirm_card(request, self._destination_label(request["role"], contact), asker or "")
        await turn_context.send_activity(card_activity(card))

    async def _on_escalate_cancel(self, turn_context: TurnContext, value: dict) -> None:
        await self._notice(turn_context, "Cancelled: nothing was sent.")

    async def _on_escalate_confirm(self, turn_context: TurnContext, value: dict) -> None:
        request = self._escalation_request(value)
        if request is None:
            return
        activity = turn_context.activity
        role, contact = request["role"], self._contact(request["role"])
        target = self.known.find(contact.teams) if contact.configured and contact.teams else None
        if target is not None:
            destination = f"{PLATFORM}:{target.conversation.id}"
        else:
            destination = f"email:{contact.email}" if contact.configured and contact.email else ""
        ticket = await self._store_call(
            "create_ticket", PLATFORM, user_key(activity), role, request["question"], request["clauses"], "",
            destination, f"{PLATFORM}:{activity.conversation.id}",
        )
        ticket_id = ticket.id if ticket is not None else ""
        self.service.observe_escalation_request(PLATFORM, role)
        asker = activity.from_property.name if activity.from_property else ""
        if target is not None and ticket_id:
            card = render_forward_card(ticket_id, role, request["question"], request["clauses"], asker or "")
            if await self._post(turn_context, target, card_activity(card)):
                await self._notice(turn_context, f"Sent to {escape_markdown(role_phrase(role))}.", [
                    "I'll tell you here when they mark it resolved.", f"Reference: {escape_markdown(ticket_id)}"])
                return
        card = render_email_card(role, contact, request["question"], request["clauses"], ticket_id)
        await turn_context.send_activity(card_activity(card))

    async def _on_resolve(self, turn_context: TurnContext, value: dict) -> None:
        ticket_id = value.get("ticket_id")
        if not _is_id(ticket_id) or self.store is None:
            return
        activity = turn_context.activity
        ticket = await self._store_call("get_ticket", ticket_id)
        sent_to = ticket.destination.removeprefix(f"{PLATFORM}:") if ticket is not None else ""
        if ticket is None or not ticket.destination.startswith(f"{PLATFORM}:") or (
            conversation_root(sent_to) != conversation_root(activity.conversation.id)
        ):
            # Only the conversation the request was sent to may resolve it, not a forged button elsewhere.
            await self._notice(turn_context, "I can't find that request here.")
            return
        result = await self._store_call("resolve_ticket_once", ticket_id, PLATFORM, user_key(activity))
        if not result or result[0] is None:
            await self._notice(turn_context, "I couldn't record that just now. Please try again.")
            return
        ticket, changed = result
        if not changed:
            await self._notice(turn_context, "That request was already marked resolved.")
            return
        await self._notice(turn_context, f"Marked resolved (reference {escape_markdown(ticket_id)}).")
        await self._tell_asker(turn_context, ticket)

    async def _tell_asker(self, turn_context: TurnContext, ticket: Any) -> None:
        notify = ticket.notify or ""
        target = self.known.find(notify.split(":", 1)[1]) if notify.startswith(f"{PLATFORM}:") else None
        if target is None:
            log.info("ticket %s resolved; the asker's conversation is not known since a restart", ticket.id)
            return
        card = render_notice_card(
            f"{escape_markdown(role_phrase(ticket.role)).capitalize()} has marked your request resolved",
            [f"You asked: {escape_markdown(ticket.question)}", f"Reference: {escape_markdown(ticket.id)}"],
        )
        await self._post(turn_context, target, card_activity(card))

    async def _post(self, turn_context: TurnContext, reference: ConversationReference, activity: Activity) -> bool:
        """Send a message to another conversation the bot knows (proactive message); False if it fails."""

        async def send(context: TurnContext) -> None:
            # botbuilder gives the continuation a random id and would send a "reply" to it; a new post is meant.
            context.activity.id = None
            await context.send_activity(activity)

        try:
            await turn_context.adapter.continue_conversation(reference, send, self.settings.teams_app_id)
            return True
        except Exception as exc:
            log.warning("could not post to a Teams conversation: %s", type(exc).__name__)
            self.service.observe_api_error(PLATFORM, "continue_conversation")
            return False

    # --------------------------------------------------------------------------------------------- helpers
    def _escalation_request(self, value: dict) -> dict | None:
        """Validate an "Ask <role>" button's data: it comes from the client, so only roles the policies or the
        contacts file name are accepted, and where anything is sent is decided here, never by the data."""
        role, question, clauses = value.get("role"), value.get("question"), value.get("clauses", [])
        question_id = value.get("question_id") or ""
        if not isinstance(role, str) or not isinstance(question, str) or not isinstance(clauses, list):
            return None
        if role.strip().lower() not in self._known_roles() or not question.strip():
            return None
        clauses = [c for c in clauses if isinstance(c, str) and 0 < len(c) <= 60][:_MAX_CLAUSES]
        return {"action": "escalate", "role": role.strip(), "question": question.strip()[: self._max_question()],
                "clauses": clauses, "question_id": question_id if _is_id(question_id) else ""}

    def _known_roles(self) -> set[str]:
        if not self.service.ready:
            return set()
        adviser = self.service.adviser
        roles = {role.lower() for rule in adviser.rules for role in rule.roles}
        return roles | set(adviser.contacts.by_role) | {adviser.contacts.fallback_role.lower()}

    def _contact(self, role: str) -> Contact:
        return self.service.adviser.contacts.lookup(role)

    def _max_question(self) -> int:
        return self.settings.max_question_chars

    def _destination_label(self, role: str, contact: Contact) -> str:
        who = role_phrase(role)
        if contact.configured and contact.teams and self.known.find(contact.teams):
            return f"{who}, in Teams"
        if contact.configured and contact.email:
            return f"{who}: I'll give you their email address, with your question filled in"
        return f"{who} (no contact configured: I'll record your request)"


def mentions_recipient(activity: Activity) -> bool:
    """Does the message @mention this bot (not just someone else)?"""
    recipient_id = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or ():
        if entity is None or (entity.type or "").lower() != "mention":  # JSON allows null entries
            continue
        if recipient_id and _mentioned_id(entity) == recipient_id:
            return True
    return False


def _mentioned_id(entity: object) -> str | None:
    # A deserialized activity holds mentions as generic Entities (fields in additional_properties); code that
    # builds activities uses botbuilder's Mention class. Accept both.
    mentioned = getattr(entity, "mentioned", None) or (getattr(entity, "additional_properties", None) or {}).get(
        "mentioned")
    if isinstance(mentioned, dict):
        return mentioned.get("id")
    return getattr(mentioned, "id", None)


def question_text(activity: Activity) -> str:
    """The message text with the bot's own mention removed and any other mention tags reduced to their names."""
    text = activity.text or ""
    if mentions_recipient(activity):
        with suppress(Exception):  # a malformed mention entity must not lose the question
            text = TurnContext.remove_recipient_mention(activity) or ""
        for entity in filter(None, activity.entities or ()):  # mention shapes botbuilder's helper does not read
            mention_text = getattr(entity, "text", None) or (entity.additional_properties or {}).get("text")
            if _mentioned_id(entity) == activity.recipient.id and isinstance(mention_text, str) and mention_text:
                text = text.replace(mention_text, " ")
    return " ".join(_MENTION_TAG.sub("", text).split())


def user_key(activity: Activity) -> str:
    """The sender's stable id: the Entra object id when Teams gives it, else the channel account id."""
    sender = activity.from_property
    if sender is None:
        return "unknown"
    return sender.aad_object_id or sender.id or "unknown"


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS and value.replace("-", "").isalnum()


@asynccontextmanager
async def typing_indicator(turn_context: TurnContext) -> AsyncIterator[None]:
    """Show "typing" now and every few seconds until the block ends; a failed indicator never fails the answer."""

    async def send_typing() -> None:
        with suppress(Exception):
            await turn_context.send_activity(Activity(type=ActivityTypes.typing))

    await send_typing()  # sent before the work starts, so it always precedes the answer

    async def keep_typing() -> None:
        while True:
            await asyncio.sleep(TYPING_INTERVAL_S)
            await send_typing()

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
