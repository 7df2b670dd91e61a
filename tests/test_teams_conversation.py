"""The Teams conversation logic in process: the real PolicyBot (ActivityHandler) driven by botbuilder's TestAdapter,
with the real Adviser and a real record store on SQLite."""

from __future__ import annotations

import dataclasses

import pytest
from botbuilder.core.adapters import TestAdapter
from botbuilder.schema import Activity, ActivityTypes, ChannelAccount, ConversationAccount
from sqlalchemy import select
from teams_support import (
    BOT_ID,
    BOT_NAME,
    KEY,
    LOGO_QUESTION,
    USER,
    actions_of,
    card_texts,
    message,
    shared_adviser,
    unescape,
    with_contacts,
)

from bot.answer import Contact
from bot.render_teams import CARD_CONTENT_TYPE
from bot.service import AdviserService
from bot.store import Store, feedback, questions
from bot.teams_bot import PolicyBot

SERVICE_URL = "https://smba.trafficmanager.net/uk/"
CE_CHANNEL = "19:chief-exec-office@thread.tacv2"


@pytest.fixture(scope="session")
def teams_adviser(tmp_path_factory):
    return shared_adviser(tmp_path_factory)


@pytest.fixture
def store(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'records.sqlite3'}", KEY)
    yield store
    store.close()


def make_service(adviser, **settings_changes) -> AdviserService:
    settings = dataclasses.replace(adviser.settings, **settings_changes)
    return AdviserService(settings, adviser)


@pytest.fixture
def service(teams_adviser):
    service = make_service(teams_adviser)
    yield service
    service.close()


def adapter_for(bot: PolicyBot, conversation_type: str = "personal", conversation_id: str = "a:personal-alex",
                user: dict = USER) -> TestAdapter:
    template = Activity(
        channel_id="msteams", service_url=SERVICE_URL,
        from_property=ChannelAccount(id=user["id"], name=user["name"], aad_object_id=user.get("aadObjectId")),
        recipient=ChannelAccount(id=BOT_ID, name=BOT_NAME),
        conversation=ConversationAccount(id=conversation_id, conversation_type=conversation_type, tenant_id="t1"),
    )
    return TestAdapter(bot.on_turn, template)


def incoming(text: str | None = None, **kwargs) -> Activity:
    """A Teams message as it arrives over HTTP (deserialized JSON), so mentions have Teams' real shape."""
    conversation = kwargs.pop("conversation", None)
    data = message(text, SERVICE_URL, **kwargs)
    if conversation:
        data["conversation"] = conversation
    return Activity().deserialize(data)


def replies(adapter: TestAdapter) -> list[Activity]:
    sent = list(adapter.activity_buffer)
    adapter.activity_buffer.clear()
    return sent


def cards(activities: list[Activity]) -> list[dict]:
    found = []
    for activity in activities:
        for attachment in activity.attachments or ():
            assert attachment.content_type == CARD_CONTENT_TYPE
            found.append(attachment.content)
    return found


def only_card(activities: list[Activity]) -> dict:
    messages = [a for a in activities if a.type == ActivityTypes.message]
    assert len(messages) == 1, [card_texts(c) for c in cards(messages)]
    return cards(messages)[0]


def headline(card: dict) -> str:
    return unescape(next(b["text"] for b in card["body"] if b.get("size") == "Medium"))


def submit_data(card: dict, action: str) -> list[dict]:
    return [a["data"] for a in actions_of(card, "Action.Submit") if a["data"].get("action") == action]


def question_rows(store: Store) -> list:
    with store.engine.connect() as conn:
        return list(conn.execute(select(questions)).mappings())


# --------------------------------------------------------------------------------------------- questions
async def test_personal_chat_answers_with_typing_then_a_cited_card(service, store):
    """In a personal chat every message is a question: the bot shows typing first, then an Adaptive Card citing
    5.3 and naming the chief executive, and logs the question (pseudonymised) with its top clause."""
    adapter = adapter_for(PolicyBot(service, store))
    await adapter.send(incoming(LOGO_QUESTION))
    sent = replies(adapter)
    assert sent[0].type == ActivityTypes.typing
    card = only_card(sent[1:])
    assert headline(card).startswith("5.3: “") and "chief executive" in unescape(card_texts(card))
    assert not sent[1].text, "Teams would show `text` above the card, repeating it"
    assert "5.3" in sent[1].summary
    [row] = question_rows(store)
    assert (row["platform"], row["answered"], row["top_clause"]) == ("teams", True, "5.3")
    assert USER["id"] not in row["asker"] and USER["aadObjectId"] not in row["asker"]
    assert submit_data(card, "feedback")[0]["question_id"] == row["id"]


async def test_follow_up_is_answered_with_the_previous_question_as_context(service, store):
    """"what about Instagram?" after the logo question is about the logo (5.3); the same words opening a new
    conversation are not, so the history is what makes the difference."""
    bot = PolicyBot(service, store)
    adapter = adapter_for(bot)
    await adapter.send(incoming(LOGO_QUESTION))
    replies(adapter)
    await adapter.send(incoming("what about Instagram?"))
    assert headline(only_card(replies(adapter))).startswith("5.3: ")
    fresh = adapter_for(bot, conversation_id="a:personal-other")
    await fresh.send(incoming("what about Instagram?", conversation_id="a:personal-other"))
    assert not headline(only_card(replies(fresh))).startswith("5.3: ")


async def test_follow_up_memory_is_bounded(service):
    """The per-conversation memory keeps a few questions for a bounded number of conversations."""
    bot = PolicyBot(service)
    for n in range(bot.memory.max_conversations + 5):
        bot.memory.remember(f"c{n}", "q")
    for n in range(10):
        bot.memory.remember("busy", f"q{n}")
    assert len(bot.memory._questions) == bot.memory.max_conversations
    assert bot.memory.history("c0") == ()
    assert bot.memory.history("busy") == ("q7", "q8", "q9")


@pytest.mark.parametrize("conversation_type", ["channel", "groupChat"])
async def test_channel_answers_only_when_mentioned_and_strips_the_mention(service, store, conversation_type):
    """In channels and group chats a message without an @mention of the bot gets no reply; with one, the bot
    answers the question with its own mention removed."""
    conversation_id = "19:general@thread.tacv2;messageid=1" if conversation_type == "channel" else "19:group@v2"
    adapter = adapter_for(PolicyBot(service, store), conversation_type, conversation_id)
    await adapter.send(incoming(LOGO_QUESTION, conversation_type=conversation_type,
                                conversation_id=conversation_id))
    assert replies(adapter) == []
    await adapter.send(incoming(LOGO_QUESTION, conversation_type=conversation_type,
                                conversation_id=conversation_id, mention=True))
    card = only_card(replies(adapter))
    assert f"You asked: {LOGO_QUESTION}" in unescape(card_texts(card))
    assert BOT_NAME not in card_texts(card)
    assert question_rows(store)[0]["question"] == LOGO_QUESTION


async def test_mention_of_someone_else_is_not_a_question_for_the_bot(service):
    """@mentioning another person in a channel does not wake the bot."""
    adapter = adapter_for(PolicyBot(service), "channel", "19:general@thread.tacv2")
    activity = incoming("<at>Sam</at> " + LOGO_QUESTION, conversation_type="channel",
                        conversation_id="19:general@thread.tacv2")
    activity.entities = Activity().deserialize({"type": "message", "entities": [
        {"type": "mention", "text": "<at>Sam</at>", "mentioned": {"id": "29:sam", "name": "Sam"}}]}).entities
    await adapter.send(activity)
    assert replies(adapter) == []


async def test_hostile_question_is_escaped_and_mentions_nobody(service):
    """Markdown, a disguised link and an <at> tag in a question are shown literally; the card mentions nobody."""
    adapter = adapter_for(PolicyBot(service))
    hostile = "[Approve here](https://evil.example) **logo** <at>Chief Executive</at> on my website?"
    await adapter.send(incoming(hostile))
    card = only_card(replies(adapter))
    texts = card_texts(card)
    assert "[Approve here](https://evil.example)" not in texts and "<at>" not in texts
    assert "\\[Approve here\\]\\(https://evil.example\\)" in texts
    assert not card["msteams"].get("entities")


# ----------------------------------------------------------------------------------------- welcome, help
async def test_bot_added_to_a_conversation_sends_the_welcome_card(service):
    """conversationUpdate adding the bot gets a welcome card with three example questions as messageBack
    buttons; a person joining does not."""
    adapter = adapter_for(PolicyBot(service), "channel", "19:general@thread.tacv2")
    await adapter.send(Activity(type=ActivityTypes.conversation_update,
                                members_added=[ChannelAccount(id="29:newcomer")]))
    assert replies(adapter) == []
    await adapter.send(Activity(type=ActivityTypes.conversation_update,
                                members_added=[ChannelAccount(id=BOT_ID, name=BOT_NAME)]))
    card = only_card(replies(adapter))
    buttons = submit_data(card, "ask")
    assert len(buttons) == 3 and all(b["msteams"]["type"] == "messageBack" for b in buttons)
    assert "Social Media Policy" in unescape(card_texts(card))


@pytest.mark.parametrize("text", ["help", "hello", "Hi there!"])
async def test_help_and_greetings_get_the_same_guidance(service, store, text):
    """"help" or a greeting is answered with the welcome guidance, and is not logged as a policy question."""
    adapter = adapter_for(PolicyBot(service, store))
    await adapter.send(incoming(text))
    card = only_card(replies(adapter))
    assert len(submit_data(card, "ask")) == 3
    assert question_rows(store) == []


async def test_example_button_in_a_channel_is_answered_without_a_mention(service):
    """Pressing an example-question button (messageBack value) in a channel is a question for the bot."""
    adapter = adapter_for(PolicyBot(service), "channel", "19:general@thread.tacv2")
    await adapter.send(incoming(LOGO_QUESTION, conversation_type="channel",
                                conversation_id="19:general@thread.tacv2",
                                value={"action": "ask", "question": LOGO_QUESTION}))
    assert headline(only_card(replies(adapter))).startswith("5.3: ")


# ---------------------------------------------------------------------------------- feedback, limits
async def test_feedback_buttons_are_recorded_in_the_store(service, store):
    """The "Not helpful" button records feedback for that question in the store, and the user is thanked."""
    adapter = adapter_for(PolicyBot(service, store))
    await adapter.send(incoming(LOGO_QUESTION))
    not_helpful = submit_data(only_card(replies(adapter)), "feedback")[1]
    await adapter.send(incoming(None, value=not_helpful))
    assert "Thanks for your feedback" in card_texts(only_card(replies(adapter)))
    with store.engine.connect() as conn:
        [row] = conn.execute(select(feedback)).mappings()
    assert row["question_id"] == question_rows(store)[0]["id"] and row["helpful"] is False


async def test_rate_limit_refuses_politely(teams_adviser, store):
    """Beyond the per-minute limit the user is asked to wait, and the question is not answered."""
    service = make_service(teams_adviser, rate_limit_per_minute=2)
    adapter = adapter_for(PolicyBot(service, store))
    for _ in range(2):
        await adapter.send(incoming(LOGO_QUESTION))
        assert headline(only_card(replies(adapter))).startswith("5.3")
    await adapter.send(incoming(LOGO_QUESTION))
    assert "asked a lot of questions" in card_texts(only_card(replies(adapter)))
    service.close()


async def test_redelivered_activity_is_answered_once(service, store):
    """The same activity delivered twice (a Bot Framework retry) is answered once."""
    adapter = adapter_for(PolicyBot(service, store))
    await adapter.send(incoming(LOGO_QUESTION, activity_id="act-1"))
    assert len(cards(replies(adapter))) == 1
    await adapter.send(incoming(LOGO_QUESTION, activity_id="act-1"))
    assert replies(adapter) == []


async def test_while_loading_the_bot_says_so(teams_adviser):
    """Before the adviser has loaded, a question gets "still loading", not an error."""
    service = AdviserService(teams_adviser.settings)
    adapter = adapter_for(PolicyBot(service))
    await adapter.send(incoming(LOGO_QUESTION))
    assert "still loading" in card_texts(only_card(replies(adapter)))
    service.close()


# --------------------------------------------------------------------------------------- Ask <role>
async def test_ask_role_confirms_forwards_to_the_known_channel_and_resolves(teams_adviser, store):
    """"Ask the chief executive" first shows what will be sent and records nothing; Send opens a ticket and posts
    the question to the chief executive's configured Teams channel; only that channel can mark it resolved,
    and the asker is then told."""
    chief = Contact(role="chief executive", name="Chief Executive's Office", email="ce@example.gov.uk",
                    teams=CE_CHANNEL, configured=True)
    service = make_service(with_contacts(teams_adviser, chief_executive=chief))
    bot = PolicyBot(service, store)
    office = adapter_for(bot, "channel", CE_CHANNEL, user={"id": "29:ce", "name": "CE Office"})
    await office.send(Activity(type=ActivityTypes.conversation_update, members_added=[ChannelAccount(id=BOT_ID)]))
    replies(office)  # the welcome card; the bot now knows the channel

    asker = adapter_for(bot)
    await asker.send(incoming(LOGO_QUESTION))
    [ask] = submit_data(only_card(replies(asker)), "escalate")
    await asker.send(incoming(None, value=ask))
    confirm = only_card(replies(asker))
    assert LOGO_QUESTION in unescape(card_texts(confirm)) and "in Teams" in card_texts(confirm)
    assert store.open_tickets() == []

    await asker.send(incoming(None, value=submit_data(confirm, "escalate_confirm")[0]))
    sent = replies(asker)
    forwarded = [a for a in sent if a.conversation.id == CE_CHANNEL]
    assert len(forwarded) == 1 and not forwarded[0].reply_to_id
    forward_card = cards(forwarded)[0]
    assert LOGO_QUESTION in unescape(card_texts(forward_card)) and USER["name"] in card_texts(forward_card)
    assert "Sent to the chief executive" in card_texts(only_card([a for a in sent if a not in forwarded]))
    [ticket] = store.open_tickets()
    assert (ticket.role, ticket.destination, ticket.clauses[0]) == ("chief executive", f"teams:{CE_CHANNEL}", "5.3")

    resolve = submit_data(forward_card, "resolve")[0]
    await asker.send(incoming(None, value=resolve))  # a forged button in the asker's own chat
    assert "can't find that request" in card_texts(only_card(replies(asker)))
    assert store.get_ticket(ticket.id).status == "open"

    await office.send(incoming(None, value=resolve, conversation_type="channel", conversation_id=CE_CHANNEL))
    sent = replies(office)
    told = [a for a in sent if a.conversation.id == "a:personal-alex"]
    assert "marked your request resolved" in card_texts(cards(told)[0])
    assert store.get_ticket(ticket.id).status == "resolved"
    service.close()


async def test_ask_role_not_in_teams_gives_the_contacts_email(teams_adviser, store):
    """A role with an email but no Teams conversation the bot knows: on Send a ticket is recorded and the asker
    gets a mailto: link with the question filled in; nothing is posted anywhere else."""
    chief = Contact(role="chief executive", name="Chief Executive's Office", email="ce@example.gov.uk",
                    teams=CE_CHANNEL, configured=True)
    service = make_service(with_contacts(teams_adviser, chief_executive=chief))
    asker = adapter_for(PolicyBot(service, store))
    await asker.send(incoming(LOGO_QUESTION))
    [ask] = submit_data(only_card(replies(asker)), "escalate")
    await asker.send(incoming(None, value={**ask, "action": "escalate_confirm"}))
    sent = replies(asker)
    assert all(a.conversation.id == "a:personal-alex" for a in sent)
    url = next(a["url"] for a in actions_of(only_card(sent), "Action.OpenUrl"))
    assert url.startswith("mailto:ce@example.gov.uk?subject=") and "logo" in url
    [ticket] = store.open_tickets()
    assert ticket.destination == "email:ce@example.gov.uk"
    service.close()


async def test_forged_escalation_for_an_unknown_role_is_ignored(service, store):
    """Button data is the client's word: a role no policy or contact names is ignored, nothing recorded."""
    adapter = adapter_for(PolicyBot(service, store))
    forged = {"action": "escalate_confirm", "role": "head of everything", "question": "x", "clauses": ["5.3"]}
    await adapter.send(incoming(None, value=forged))
    assert replies(adapter) == [] and store.open_tickets() == []
