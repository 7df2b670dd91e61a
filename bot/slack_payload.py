"""Reading Slack payloads defensively: a signed payload is still parsed without trusting its shapes."""

from __future__ import annotations

PLATFORM = "slack"  # the platform name in the record store, metrics and logs


def text_of(value: object) -> str:
    return value if isinstance(value, str) else ""


def dict_of(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def field_of(payload: object, *path: str) -> str:
    """A string inside nested payload objects ("" when a step is missing or not an object): Slack always sends
    these shapes, but a signed payload is still parsed defensively rather than crash a listener after its ack."""
    for key in path:
        payload = dict_of(payload).get(key)
    return text_of(payload)


def from_a_bot(event: dict, bot_user_id: str | None) -> bool:
    return bool(event.get("bot_id") or event.get("subtype") == "bot_message"
                or (bot_user_id and event.get("user") == bot_user_id))


def action_channel(body: dict) -> str:
    return field_of(body, "channel", "id") or field_of(body, "container", "channel_id")
