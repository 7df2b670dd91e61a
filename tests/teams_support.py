"""Shared pieces of the Teams tests: one real Adviser per session, Bot Framework activities, a loopback serviceUrl
that records what the bot sends, card inspection."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.adviser import Adviser
from bot.answer import Contact
from bot.contacts import Contacts
from bot.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO / "policy_text"
LOGO_QUESTION = "Can I use the council logo on my website?"
KEY = b"k" * 32
BOT_ID = "28:policy-adviser-bot"
BOT_NAME = "Policy Adviser"
USER = {"id": "29:alex", "name": "Alex Councillor", "aadObjectId": "6f2c1d0e-0000-4000-8000-00000000a1ec"}

_loaded: dict[str, Adviser] = {}  # the Adviser takes seconds to load; every Teams test module shares one


def shared_adviser(tmp_path_factory: pytest.TempPathFactory) -> Adviser:
    """The real Adviser on the repository's policy_text, loaded once per test session for all Teams modules."""
    if "adviser" not in _loaded:
        settings = Settings(policy_dir=POLICY_DIR, data_dir=tmp_path_factory.mktemp("teams-data"))
        _loaded["adviser"] = Adviser.load(settings)
    return _loaded["adviser"]


def with_contacts(adviser: Adviser, **changes: Contact) -> Adviser:
    """The same loaded adviser (model, index, rules) with some roles' contacts replaced: cheap, no reload."""
    by_role = dict(adviser.contacts.by_role) | {role.replace("_", " "): c for role, c in changes.items()}
    contacts = Contacts(by_role, adviser.contacts.fallback_role)
    return Adviser(adviser.settings, adviser.encoder, adviser.index, adviser.synonyms, contacts, adviser.rules)


def message(text: str | None, service_url: str, conversation_type: str = "personal",
            conversation_id: str = "a:personal-alex", mention: bool = False, value: dict | None = None,
            activity_id: str | None = None) -> dict:
    """A Bot Framework message activity as Teams sends it (JSON), optionally @mentioning the bot."""
    activity = {
        "type": "message",
        "id": activity_id or uuid.uuid4().hex[:12],
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": USER,
        "recipient": {"id": BOT_ID, "name": BOT_NAME},
        "conversation": {"id": conversation_id, "conversationType": conversation_type, "tenantId": "tenant-1"},
        "text": text,
        "textFormat": "plain",
        "locale": "en-GB",
    }
    if mention:
        activity["text"] = f"<at>{BOT_NAME}</at> {text}"
        activity["entities"] = [{"type": "mention", "text": f"<at>{BOT_NAME}</at>",
                                 "mentioned": {"id": BOT_ID, "name": BOT_NAME}}]
    if value is not None:
        activity["value"] = value
    return activity


class ServiceUrlRecorder:
    """Plays the Bot Framework connector service: records every POST the bot makes to its serviceUrl."""

    def __init__(self) -> None:
        self.posts: list[dict] = []

    async def record(self, request: web.Request) -> web.Response:
        self.posts.append({"path": request.path, "json": await request.json(),
                           "authorization": request.headers.get("Authorization", "")})
        return web.json_response({"id": f"sent-{len(self.posts)}"})

    def messages(self) -> list[dict]:
        return [p for p in self.posts if p["json"].get("type") == "message"]

    def app(self) -> web.Application:
        """The connector's activity routes (send to a conversation, reply to an activity), recorded here; serve it
        and its base URL + "/" is the serviceUrl."""
        app = web.Application()
        app.router.add_post("/v3/conversations/{conversation}/activities", self.record)
        app.router.add_post("/v3/conversations/{conversation}/activities/{activity}", self.record)
        return app


def walk(element: object) -> Iterator[dict]:
    """Every dict inside a card (elements, actions, facts), depth first."""
    if isinstance(element, dict):
        yield element
        for key, value in element.items():
            if key != "data":  # a button's payload is not part of the card's layout
                yield from walk(value)
    elif isinstance(element, list):
        for value in element:
            yield from walk(value)


def card_texts(card: dict) -> str:
    """All TextBlock texts and FactSet values of a card, joined: what a reader sees."""
    parts = []
    for element in walk(card.get("body", [])):
        if element.get("type") == "TextBlock":
            parts.append(element["text"])
        if "title" in element and "value" in element and isinstance(element["value"], str):
            parts.append(element["value"])
    return "\n".join(parts)


def actions_of(card: dict, kind: str | None = None) -> list[dict]:
    found = [e for e in walk(card) if isinstance(e.get("type"), str) and e["type"].startswith("Action.")]
    return [a for a in found if kind is None or a["type"] == kind]


def unescape(text: str) -> str:
    """Undo escape_markdown for comparisons with the original text."""
    import re

    return re.sub(r"\\(.)", r"\1", text).replace("\u200b", "")
