"""Render Answers and the other Teams messages as Adaptive Cards (v1.5) and plain text: pure functions."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from urllib.parse import quote

from bot.answer import Answer, Citation, Contact, Escalation
from bot.render_text import render_text

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.5"  # Teams renders 1.5; later features would silently fall back or fail
MAX_CARD_BYTES = 80_000  # Teams rejects activities near 100 KB; keep the card well under with room for the envelope
PREVIEW_CHARS = 320  # longer clauses show this much, with a "Show full clause" toggle for the rest
MAX_TITLE_CHARS = 60  # button titles are truncated by Teams anyway; keep them readable

# Characters with meaning in Adaptive Card (Teams) markdown: emphasis, links, images, code, headings, quotes,
# lists, strikethrough and tables. A backslash makes each literal.
_MARKDOWN_SPECIAL = re.compile(r"([\\*_\[\]()`#>\-+!~|])")
_ORDERED_LIST = re.compile(r"^(\s*\d+)\.(?=\s|$)", re.MULTILINE)
_LEADING_MARKER = re.compile(r"^(\s*)([=])", re.MULTILINE)
# "<at>" is how Teams writes a mention and "<" starts HTML; "&lt;at&gt;" is the same thing entity-encoded; "{{"
# starts an Adaptive Card DATE()/TIME() function. A zero-width space breaks each without changing what is shown.
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#\d+;|#[xX][0-9a-fA-F]+;|[A-Za-z]+;)")
_ZWSP = "\u200b"


def escape_markdown(text: str) -> str:
    """Make user or policy text literal in a TextBlock: no formatting, links, images, lists, mentions or HTML.

    Backslash-escapes every markdown punctuation character Teams interprets, escapes the dot of a leading
    "1." so a line cannot become a numbered list, and breaks "<at>"/"<tag" and HTML entities with a zero-width
    space so that nobody can be mentioned and no markup survives. Bare URLs stay visible as what they are.
    """
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    text = _ORDERED_LIST.sub(r"\1\\.", text)
    text = _LEADING_MARKER.sub(r"\1\\\2", text)
    text = _TAG_START.sub("<" + _ZWSP, text)
    text = _ENTITY.sub("&" + _ZWSP, text)
    return text.replace("{{", "{" + _ZWSP + "{")


def plain(text: str) -> str:
    """Strip characters that let a name or address break out of an attribute or mention tag."""
    return re.sub(r"[<>\r\n\t]", " ", text).strip()


def card_attachment(card: dict) -> dict:
    """The attachment dict (contentType + content) that carries a card in a Bot Framework activity."""
    return {"contentType": CARD_CONTENT_TYPE, "content": card}


def card_size(card: dict) -> int:
    return len(json.dumps(card, ensure_ascii=False).encode("utf-8"))


# --------------------------------------------------------------------------------------------- building blocks
def _text(text: str, **props: object) -> dict:
    return {"type": "TextBlock", "text": text, "wrap": True, **props}


def _card(body: list[dict], actions: list[dict] | None = None, fallback: str = "",
          entities: list[dict] | None = None) -> dict:
    card: dict = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
    }
    if actions:
        card["actions"] = actions
    if fallback:
        card["fallbackText"] = fallback
    msteams: dict = {"width": "Full"}
    if entities:
        msteams["entities"] = entities
    card["msteams"] = msteams
    return card


def _submit(title: str, data: dict, style: str | None = None) -> dict:
    action = {"type": "Action.Submit", "title": _short(title), "data": data}
    if style:
        action["style"] = style
    return action


def _short(title: str) -> str:
    title = plain(title)
    return title if len(title) <= MAX_TITLE_CHARS else title[: MAX_TITLE_CHARS - 1].rstrip() + "…"


def _preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(" ,;:") + " …"


def role_phrase(role: str) -> str:
    """ "chief executive" -> "the chief executive"; a role already carrying a determiner keeps it."""
    role = plain(role)
    if re.match(r"(?:the|your|their|a|an)\s", role, re.IGNORECASE):
        return role
    return f"the {role}"


_ACTION_LEAD = {
    "permission": "You need written permission from {who}",
    "report": "Report it to {who}",
    "complaint": "Complaints go to {who}",
    "consult": "The policy says to consult {who}",
    "approval": "This needs the approval of {who}",
    "advice": "The policy says to contact {who}",
}


# ------------------------------------------------------------------------------------------------ contacts
def teams_user_id(contact: Contact) -> str:
    """The contact's Teams user id if one is configured (29:... or an Entra object id), else ""."""
    value = contact.teams.strip() if contact.configured else ""
    if value.startswith("29:") or re.fullmatch(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", value):
        return value
    return ""


def mention_entity(contact: Contact) -> dict | None:
    """A Teams mention of the configured contact, or None. The only mentions a card ever carries."""
    user_id = teams_user_id(contact)
    if not user_id:
        return None
    name = plain(contact.name or contact.role) or "contact"
    return {"type": "mention", "text": f"<at>{name}</at>", "mentioned": {"id": user_id, "name": name}}


def _contact_lines(contact: Contact) -> tuple[str, list[dict], dict | None]:
    """Markdown line, link actions and mention entity for one contact; unconfigured roles are named, never invented."""
    if not contact.configured:
        return f"{escape_markdown(contact.role)}: no contact configured", [], None
    mention = mention_entity(contact)
    who = mention["text"] if mention else escape_markdown(contact.name or contact.role)
    details = [escape_markdown(d) for d in (contact.email, contact.phone) if d]
    line = who + (" · " + " · ".join(details) if details else "")
    actions = []
    if contact.email:
        actions.append({"type": "Action.OpenUrl", "title": _short(f"Email {contact.email}"),
                        "url": mailto(contact.email)})
    if contact.phone and re.sub(r"[^\d+]", "", contact.phone):
        actions.append({"type": "Action.OpenUrl", "title": _short(f"Call {contact.phone}"),
                        "url": "tel:" + re.sub(r"[^\d+]", "", contact.phone)})
    return line, actions, mention


def mailto(email: str, subject: str = "", body: str = "") -> str:
    """A mailto: URL with the address and any prefilled subject and body percent-encoded."""
    url = "mailto:" + quote(email.strip(), safe="@.+-_")
    params = [f"{k}={quote(v, safe='')}" for k, v in (("subject", subject), ("body", body)) if v]
    return url + ("?" + "&".join(params) if params else "")


# ------------------------------------------------------------------------------------------------ the answer
def escalation_request(answer: Answer, escalation: Escalation, question_id: str = "") -> dict:
    """The data an "Ask <role>" button posts back: enough to show the confirmation without server state."""
    clauses = [c.clause for c in answer.citations] or ([escalation.clause] if escalation.clause else [])
    return {"action": "escalate", "role": escalation.role, "question": answer.question,
            "clauses": clauses[:5], "question_id": question_id}


def _citation_items(citation: Citation, position: int) -> list[dict]:
    heading = f"**Clause {escape_markdown(citation.clause)}**"
    if citation.title:
        heading += f" · {escape_markdown(citation.title)}"
    items = [_text(heading, spacing="Medium")]
    if len(citation.text) <= PREVIEW_CHARS:
        items.append(_text(escape_markdown(citation.text)))
    else:
        short_id, full_id = f"clause-{position}-short", f"clause-{position}-full"
        items.append(_text(escape_markdown(_preview(citation.text)), id=short_id))
        items.append(_text(escape_markdown(citation.text), id=full_id, isVisible=False))
        items.append({"type": "ActionSet", "actions": [{
            "type": "Action.ToggleVisibility", "title": "Show full clause", "targetElements": [short_id, full_id],
        }]})
    source = escape_markdown(citation.document)
    if citation.version_date:
        source += f" · version {escape_markdown(citation.version_date)}"
    items.append(_text(source, isSubtle=True, size="Small", spacing="Small"))
    return items


def _escalation_container(answer: Answer, escalation: Escalation, question_id: str) -> tuple[dict, dict | None]:
    who = role_phrase(escalation.role)
    items = []
    if escalation.required:
        lead = _ACTION_LEAD.get(escalation.action, _ACTION_LEAD["advice"]).format(who=escape_markdown(who))
        items.append(_text(f"**{lead}**"))
        clause = f"Clause {escape_markdown(escalation.clause)}: " if escalation.clause else ""
        items.append(_text(f"{clause}“{escape_markdown(escalation.reason)}”", isSubtle=True))
    else:
        items.append(_text(f"**{escape_markdown(who[0].upper() + who[1:])}**"))
    line, link_actions, mention = _contact_lines(escalation.contact)
    items.append(_text(line, spacing="Small"))
    actions = list(link_actions)
    if _can_ask(escalation):
        actions.append(_submit(f"Ask {who}", escalation_request(answer, escalation, question_id)))
    if actions:
        items.append({"type": "ActionSet", "actions": actions})
    style = "warning" if escalation.required else "emphasis"
    return {"type": "Container", "style": style, "separator": True, "items": items}, mention


def _can_ask(escalation: Escalation) -> bool:
    """Every escalation the policy requires gets "Ask <role>" (even unconfigured: the request is still recorded
    and the asker told who to approach); a fallback only when its contact can actually be reached."""
    contact = escalation.contact
    return escalation.required or (contact.configured and bool(contact.email or contact.teams))


def feedback_actions(question_id: str) -> list[dict]:
    """Helpful / not helpful buttons; they post {action: "feedback"} back to the bot, which records it."""
    return [
        _submit("👍 Helpful", {"action": "feedback", "question_id": question_id, "helpful": True}),
        _submit("👎 Not helpful", {"action": "feedback", "question_id": question_id, "helpful": False}),
    ]


def render_plain_text(answer: Answer) -> str:
    """The answer as plain text: the card's fallback for clients that cannot render Adaptive Cards."""
    return render_text(answer)


def render_answer_card(answer: Answer, question_id: str = "") -> dict:
    """An Adaptive Card (v1.5, under MAX_CARD_BYTES) for an Answer: headline quote with clause numbers, each
    citation (clause, section, verbatim text with long clauses collapsed, document and version date), the
    escalations with their policy sentence, contact and "Ask <role>" button, warnings, and feedback buttons when
    the question was recorded (`question_id`)."""
    body: list[dict] = [_text(escape_markdown(note), isSubtle=True, size="Small") for note in answer.notes]
    if answer.question:
        body.append(_text(f"You asked: {escape_markdown(answer.question)}", isSubtle=True, size="Small"))
    # The headline: the quoted sentence(s) with their clause number, or why there is no answer.
    body.append(_text(escape_markdown(answer.answer), size="Medium"))
    for position, citation in enumerate(answer.citations):
        body.append({"type": "Container", "separator": True, "items": _citation_items(citation, position)})
    entities = []
    required = [e for e in answer.escalations if e.required]
    optional = [e for e in answer.escalations if not e.required]
    if optional:
        body.append(_text("**Who to ask instead** (not a policy requirement)", separator=True))
    for escalation in required + optional:
        container, mention = _escalation_container(answer, escalation, question_id)
        body.append(container)
        if mention and mention not in entities:
            entities.append(mention)
    for warning in answer.warnings:
        body.append(_text(f"⚠ {escape_markdown(warning)}", color="Warning", size="Small", separator=True))
    actions = feedback_actions(question_id) if question_id else []
    card = _card(body, actions, render_plain_text(answer), entities)
    return fit_card(card)


def fit_card(card: dict, limit: int = MAX_CARD_BYTES) -> dict:
    """Shrink a card that would exceed `limit` bytes: drop hidden full-clause texts and their toggles first, then
    the fallback text, then trim the longest text blocks. Policy text is short, so this is a safety net."""
    if card_size(card) <= limit:
        return card
    card = json.loads(json.dumps(card))
    for block in _walk(card["body"]):
        items = block.get("items")
        if isinstance(items, list):
            block["items"] = [i for i in items if i.get("isVisible", True) and not _is_toggle_set(i)]
    if card_size(card) > limit:
        card["fallbackText"] = card.get("fallbackText", "")[:1000]
    while card_size(card) > limit:
        longest = max((b for b in _walk(card["body"]) if b.get("type") == "TextBlock"),
                      key=lambda b: len(b["text"]), default=None)
        if longest is None or len(longest["text"]) < 200:
            break
        longest["text"] = _preview(longest["text"], len(longest["text"]) // 2)
    return card


def _is_toggle_set(item: dict) -> bool:
    actions = item.get("actions") if item.get("type") == "ActionSet" else None
    return bool(actions) and all(a.get("type") == "Action.ToggleVisibility" for a in actions)


def _walk(items: list[dict]):  # noqa: ANN202 - yields every element, depth first
    for item in items:
        yield item
        yield from _walk(item.get("items", []))


# ---------------------------------------------------------------------------------------- other messages
def ask_action(question: str) -> dict:
    """A button that asks `question` as if the user had typed it (messageBack shows it in the chat)."""
    return _submit(question, {"msteams": {"type": "messageBack", "text": question, "displayText": question},
                              "action": "ask", "question": question})


def render_welcome_card(intro: str, examples: Sequence[str]) -> dict:
    """The install and help card: what the bot does, how to ask, and example questions as buttons."""
    body = [
        _text("Council Policy Adviser", size="Large", weight="Bolder"),
        _text(escape_markdown(intro)),
        _text("Ask me in this chat, or mention me in a channel with your question. I quote the policy with its "
              "clause numbers and tell you who to contact when the policy says so.", isSubtle=True),
        _text("**Try one of these:**", spacing="Medium"),
        {"type": "ActionSet", "actions": [ask_action(q) for q in examples[:3]]},
    ]
    fallback = intro + "\n" + "\n".join(f"• {q}" for q in examples[:3])
    return _card(body, fallback=fallback)


def help_intro(help_text: str) -> str:
    """The adviser's help text without its own list of examples (the welcome card shows them as buttons)."""
    first = help_text.split("\n", 1)[0].strip()
    return re.sub(r"\s*Try:\s*$", "", first)


def render_notice_card(title: str, lines: Sequence[str] = (), actions: Sequence[dict] = ()) -> dict:
    """A small card: a bold title and lines of (already escaped) markdown, with optional actions."""
    body = [_text(f"**{title}**")] + [_text(line) for line in lines]
    return _card(body, list(actions), fallback=title)


def render_confirm_card(request: dict, destination: str, asker: str) -> dict:
    """Show exactly what "Ask <role>" will forward, with Send and Cancel; nothing is sent before Send."""
    who = role_phrase(request["role"])
    facts = [
        {"title": "To", "value": escape_markdown(destination)},
        {"title": "From", "value": escape_markdown(asker or "you")},
        {"title": "Question", "value": escape_markdown(request["question"])},
        {"title": "Clauses", "value": escape_markdown(", ".join(request["clauses"]) or "none")},
    ]
    body = [
        _text(f"**Ask {escape_markdown(who)}?**"),
        _text("This is what will be sent:"),
        {"type": "FactSet", "facts": facts},
        _text("Nothing is sent until you choose Send.", isSubtle=True, size="Small"),
    ]
    actions = [
        _submit(f"Send to {who}", {**request, "action": "escalate_confirm"}, style="positive"),
        _submit("Cancel", {"action": "escalate_cancel", "role": request["role"]}),
    ]
    return _card(body, actions, fallback=f"Ask {who}? Question: {request['question']}")


def render_forward_card(ticket_id: str, role: str, question: str, clauses: Sequence[str], asker: str) -> dict:
    """The message the role's Teams conversation receives, with a "Mark resolved" button."""
    who = role_phrase(role)
    body = [
        _text(f"**A question for {escape_markdown(who)}** from the Council Policy Adviser"),
        {"type": "FactSet", "facts": [
            {"title": "From", "value": escape_markdown(asker or "a councillor")},
            {"title": "Question", "value": escape_markdown(question)},
            {"title": "Clauses", "value": escape_markdown(", ".join(clauses) or "none")},
            {"title": "Ticket", "value": escape_markdown(ticket_id)},
        ]},
        _text("Please reply to the person directly, then mark the ticket resolved.", isSubtle=True, size="Small"),
    ]
    actions = [_submit("Mark resolved", {"action": "resolve", "ticket_id": ticket_id}, style="positive")]
    return _card(body, actions, fallback=f"Question for {who}: {question} (ticket {ticket_id})")


def render_email_card(role: str, contact: Contact, question: str, clauses: Sequence[str], ticket_id: str) -> dict:
    """When the role cannot be reached in Teams: its contact details, with a prefilled email if it has an address."""
    who = role_phrase(role)
    line, link_actions, _ = _contact_lines(contact)
    if contact.configured and contact.email:
        # Replace the bare mailto: with one that carries the question, so the email needs no retyping.
        body = f"Question: {question}\nPolicy clauses: {', '.join(clauses) or 'none'}\nReference: {ticket_id}"
        prefilled = {"type": "Action.OpenUrl", "title": _short(f"Email {contact.email}"),
                     "url": mailto(contact.email, f"Policy question for {plain(who)}", body)}
        link_actions = [prefilled] + [a for a in link_actions if not a["url"].startswith("mailto:")]
    lines = [f"I can't reach {escape_markdown(who)} in Teams, so please contact them directly:", line]
    if ticket_id:
        lines.append(f"Your request is recorded (reference {escape_markdown(ticket_id)}).")
    return render_notice_card(f"Ask {escape_markdown(who)}", lines, link_actions)
