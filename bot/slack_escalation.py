"""Slack's "Ask <role>" flow: confirm what is forwarded, open a ticket, forward it, "Mark resolved", tell the asker.

A mixin of SlackListeners (bot/slack_handlers.py), which provides `service`, `store`, `_slack` and
`_reply_to_action`."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.render_slack import (
    AskRequest,
    decode_value,
    render_ask_modal,
    render_ask_sent,
    render_asker_resolved,
    render_notice,
    render_ticket,
    render_ticket_resolved,
    slack_destination,
)
from bot.slack_payload import PLATFORM, action_channel, dict_of, field_of

log = logging.getLogger(__name__)


class AskAPersonListeners:
    """The listeners and helpers of the escalation action; see the module docstring."""

    async def on_ask_role(self, ack: Any, action: dict, body: dict, respond: Any, client: AsyncWebClient) -> None:
        """"Ask <role>": open the confirmation showing exactly what would be forwarded, and to whom."""
        await ack()
        data = decode_value(action.get("value"))
        role, question = str(data.get("r", "")), str(data.get("q", ""))
        if not role or not self.service.ready:
            return
        contact = self.service.adviser.contacts.lookup(role)
        if not slack_destination(contact):
            notice = render_notice(f"{role} has no Slack contact configured. Contact them directly: "
                                   f"{contact.describe()}.")
            await self._reply_to_action(client, respond, body, notice)
            return
        container = dict_of(body.get("container"))
        message = dict_of(body.get("message"))
        request = AskRequest(
            role=role, question=question,
            clauses=tuple(str(c) for c in data.get("c") or [] if isinstance(c, str)),
            channel=action_channel(body), thread_ts=str(message.get("thread_ts") or ""),
            message_ts=str(container.get("message_ts") or message.get("ts") or ""),
            ephemeral=bool(container.get("is_ephemeral")),
        )
        await self._slack("views.open", client.views_open(trigger_id=body.get("trigger_id", ""),
                                                          view=render_ask_modal(request, contact)))

    async def on_ask_confirm(self, ack: Any, body: dict, view: dict, client: AsyncWebClient) -> None:
        """The asker pressed Send: open a ticket, forward it to the role's Slack user or channel with "Mark
        resolved", and tell the asker where it went."""
        await ack()
        request = AskRequest.from_metadata(view.get("private_metadata"))
        user = field_of(body, "user", "id")
        if request is None or not user or self.store is None or not self.service.ready:
            return
        contact = self.service.adviser.contacts.lookup(request.role)
        destination = slack_destination(contact)
        link = await self._permalink(client, request)
        notify = await self._notify_ref(client, request, user)
        try:
            ticket = await self.service.run(self.store.create_ticket, PLATFORM, user, request.role,
                                            request.question, list(request.clauses), link, destination, notify)
        except Exception as exc:
            log.warning("could not open an escalation ticket: %s", type(exc).__name__)
            await self._tell_asker(client, notify, render_ask_sent(request.role, False, contact))
            return
        self.service.observe_escalation_request(PLATFORM, request.role)
        delivered = None
        if destination:
            forward = render_ticket(ticket.id, request.role, request.question, request.clauses, user, link)
            delivered = await self._slack("chat.postMessage", client.chat_postMessage(
                channel=destination, unfurl_links=False, **forward))
        await self._tell_asker(client, notify, render_ask_sent(request.role, delivered is not None, contact))

    async def on_resolve(self, ack: Any, action: dict, body: dict, respond: Any, client: AsyncWebClient) -> None:
        """"Mark resolved": close the ticket, update the contact's copy, and tell the asker (once)."""
        await ack()
        user = field_of(body, "user", "id")
        if self.store is None or not user:
            return
        try:
            ticket, changed = await self.service.run(self.store.resolve_ticket_once, str(action.get("value", "")),
                                                     PLATFORM, user)
        except Exception as exc:
            log.warning("could not resolve an escalation ticket: %s", type(exc).__name__)
            return
        if ticket is None:
            await self._reply_to_action(client, respond, body, render_notice("I could not find that ticket."))
            return
        container = dict_of(body.get("container"))
        if container.get("channel_id") and container.get("message_ts"):
            await self._slack("chat.update", client.chat_update(
                channel=container["channel_id"], ts=container["message_ts"],
                **render_ticket_resolved(ticket.role, ticket.question, user)))
        if changed:
            await self._tell_asker(client, ticket.notify, render_asker_resolved(ticket.role))

    async def _permalink(self, client: AsyncWebClient, request: AskRequest) -> str:
        ts = request.thread_ts or request.message_ts
        if request.ephemeral or not request.channel or not ts:
            return ""
        result = await self._slack("chat.getPermalink", client.chat_getPermalink(channel=request.channel,
                                                                                  message_ts=ts))
        return str(result.get("permalink") or "") if result is not None else ""

    async def _notify_ref(self, client: AsyncWebClient, request: AskRequest, user: str) -> str:
        """Where to tell the asker of progress: their thread, or (for a private answer) their DM with the bot.
        A conversation reference, never the user id, is what the store keeps."""
        if request.channel and not request.ephemeral:
            thread = request.thread_ts
            return f"{PLATFORM}:{request.channel}" + (f":{thread}" if thread else "")
        opened = await self._slack("conversations.open", client.conversations_open(users=user))
        channel = (opened.get("channel") or {}).get("id", "") if opened is not None else ""
        return f"{PLATFORM}:{channel}" if channel else ""

    async def _tell_asker(self, client: AsyncWebClient, notify: str, payload: dict) -> None:
        parts = notify.split(":")
        if len(parts) < 2 or parts[0] != PLATFORM or not parts[1]:
            return
        thread = {"thread_ts": parts[2]} if len(parts) > 2 and parts[2] else {}
        await self._slack("chat.postMessage", client.chat_postMessage(channel=parts[1], **thread, **payload))
