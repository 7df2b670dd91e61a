"""Render Answers and the Slack app's other messages as Block Kit: pure functions, every outside text escaped."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.answer import Answer, Citation, Contact, Escalation

# Block Kit limits (https://docs.slack.dev/reference/block-kit): beyond them Slack rejects the whole message.
MAX_SECTION = 3000
MAX_CONTEXT = 2000
MAX_HEADER = 150
MAX_BLOCKS = 50
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_FALLBACK = 3000  # `text` may be longer, but it is only the notification and screen-reader fallback
MAX_MODAL_TITLE = 24
MAX_METADATA = 3000
CLAUSE_TRIM = 2900  # a longer clause is cut here (leaving room for its heading) with a "Show full clause" button

# Action ids: listeners in bot/slack_handlers.py match these. A suffix keeps ids unique within one message.
ACTION_FULL_CLAUSE = "show_full_clause"
ACTION_ASK_ROLE = "ask_role"
ACTION_HELPFUL = "feedback_helpful"
ACTION_UNHELPFUL = "feedback_unhelpful"
ACTION_SHARE = "share_in_channel"
ACTION_RESOLVE = "ticket_resolve"
CALLBACK_ASK_CONFIRM = "ask_role_confirm"
CALLBACK_SHORTCUT = "check_against_policy"

PROGRESS_REACTION = "hourglass_flowing_sand"

_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_SLACK_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{2,20}$")
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


# ---------------------------------------------------------------------------------------------- text and limits
def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to, so `<!channel>`, `<@U123>` and
    `<https://x|label>` in a question or a policy show literally and ping or link nobody."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit_mrkdwn(text: str, limit: int) -> str:
    """Escape `text` and cut it to at most `limit` characters, ending in "…" when cut; never inside an entity."""
    escaped = escape_mrkdwn(text)
    if len(escaped) <= limit:
        return escaped
    cut = _PARTIAL_ENTITY.sub("", escaped[: limit - 1])
    return cut + "…"


def fit_plain(text: str, limit: int) -> str:
    """Cut plain_text (shown literally by Slack, so not escaped) to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote_lines(escaped: str) -> str:
    """A mrkdwn block quote: Slack quotes only the line that starts with ">", so every line gets one."""
    return "\n".join(f">{line}" for line in escaped.splitlines() or [""])


def split_for_sections(text: str, limit: int = MAX_SECTION) -> list[str]:
    """Escape `text` and split it, at spaces where possible, into pieces of at most `limit` escaped characters, so a
    clause of any length can be shown in full over several section blocks."""
    pieces: list[str] = []
    rest = text
    while rest:
        count = size = 0
        for char in rest:
            width = len(escape_mrkdwn(char))
            if size + width > limit:
                break
            size += width
            count += 1
        if count < len(rest):
            space = rest.rfind(" ", 0, count)
            if space > count // 2:  # break at a word unless that wastes half the section
                count = space + 1
        pieces.append(escape_mrkdwn(rest[:count]).rstrip() or "…")
        rest = rest[count:]
    return pieces or [""]


def slack_mention(slack_id: str) -> str:
    """`<@U…>` for a well-formed user id, `<#C…>` for a channel id, "" otherwise: a malformed id from the contacts
    file must not become a broadcast or a link."""
    if _SLACK_USER_ID.match(slack_id):
        return f"<@{slack_id}>"
    if _SLACK_CHANNEL_ID.match(slack_id):
        return f"<#{slack_id}>"
    return ""


def slack_destination(contact: Contact) -> str:
    """The user or channel id to forward an escalation to, or "" when the role has none configured."""
    if contact.configured and (_SLACK_USER_ID.match(contact.slack) or _SLACK_CHANNEL_ID.match(contact.slack)):
        return contact.slack
    return ""


def describe_contact(contact: Contact) -> str:
    """The contact as mrkdwn: a Slack mention when configured, then name, email and phone (escaped)."""
    mention = slack_mention(contact.slack) if contact.configured else ""
    details = escape_mrkdwn(contact.describe())
    if mention and details == escape_mrkdwn("no contact configured"):
        return mention
    return f"{mention} ({details})" if mention else details


# ---------------------------------------------------------------------------------------------- block builders
def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str, limit: int) -> dict:
    return {"type": "plain_text", "text": fit_plain(text, limit) or "…", "emoji": True}


def section(text: str, accessory: dict | None = None) -> dict:
    """A section from already-escaped mrkdwn; cut at the limit as a last guard."""
    if len(text) > MAX_SECTION:
        text = _PARTIAL_ENTITY.sub("", text[: MAX_SECTION - 1]) + "…"
    block = {"type": "section", "text": _mrkdwn(text if text.strip() else "…")}  # Slack rejects blank text
    if accessory is not None:
        block["accessory"] = accessory
    return block


def context(*texts: str) -> dict:
    """A context block from already-escaped mrkdwn pieces (at most 10 elements, each within the limit)."""
    elements = []
    for text in texts[:10]:
        if len(text) > MAX_CONTEXT:
            text = _PARTIAL_ENTITY.sub("", text[: MAX_CONTEXT - 1]) + "…"
        elements.append(_mrkdwn(text if text.strip() else "…"))
    return {"type": "context", "elements": elements}


def header(text: str) -> dict:
    return {"type": "header", "text": _plain(text, MAX_HEADER)}


def divider() -> dict:
    return {"type": "divider"}


def button(text: str, action_id: str, value: str = "", style: str = "") -> dict:
    element = {"type": "button", "text": _plain(text, MAX_BUTTON_TEXT), "action_id": action_id}
    if value:
        if len(value) > MAX_BUTTON_VALUE:
            raise ValueError(f"button value of {len(value)} characters exceeds Slack's {MAX_BUTTON_VALUE}")
        element["value"] = value
    if style:
        element["style"] = style
    return element


def actions(*elements: dict) -> dict:
    return {"type": "actions", "elements": list(elements[:25])}


def message(text: str, blocks: Sequence[dict]) -> dict:
    """A message payload: blocks capped at Slack's 50, and the escaped plain `text` Slack uses for notifications."""
    return {"text": fallback_text(text), "blocks": cap_blocks(list(blocks))}


def fallback_text(text: str) -> str:
    """The message's `text`: escaped (Slack parses it as mrkdwn in notifications too), cut, never blank."""
    return fit_mrkdwn(text, MAX_FALLBACK) if text.strip() else "An answer from the Policy Adviser."


def cap_blocks(blocks: list[dict], tail: int = 0) -> list[dict]:
    """Keep at most MAX_BLOCKS blocks. The last `tail` blocks (the buttons) are always kept; the middle is cut and
    says so."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    keep_tail = blocks[len(blocks) - tail:] if tail else []
    head = blocks[: MAX_BLOCKS - len(keep_tail) - 1]
    return head + [context("_Some of this answer was left out to fit in one Slack message._")] + keep_tail


# ---------------------------------------------------------------------------------------------- button values
def encode_value(data: dict, shrink: str = "") -> str:
    """JSON for a button value or private_metadata. When too long, the string field `shrink` (the question) is
    shortened until it fits, so a long question never makes Slack reject the message."""
    value = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    while len(value) > MAX_BUTTON_VALUE and shrink and data.get(shrink):
        over = len(value) - MAX_BUTTON_VALUE
        data = {**data, shrink: data[shrink][: max(0, len(data[shrink]) - over - 1)]}
        value = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return value


def decode_value(value: str | None) -> dict:
    """Parse a value written by encode_value; anything else (a forged or truncated payload) gives {}."""
    try:
        data = json.loads(value or "")
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------------- the answer
@dataclass(frozen=True)
class RenderOptions:
    """How an answer is shown: `question_id` enables the feedback buttons; `ephemeral` adds "Share in channel";
    `shared_by` (a Slack user id) labels an answer someone shared; `ask_buttons` offers "Ask <role>"."""

    question_id: str = ""
    ephemeral: bool = False
    shared_by: str = ""
    ask_buttons: bool = True


def render_answer(answer: Answer, options: RenderOptions | None = None) -> dict:
    """The answer message: headline quote, citations, escalations, warnings, notes and buttons, as
    {"text": fallback, "blocks": [...]}. Help and empty answers get `render_help`."""
    options = options or RenderOptions()
    if answer.kind in ("help", "empty"):
        return render_help(answer)
    body: list[dict] = []
    if answer.answered:
        body += _answered_blocks(answer)
    else:
        body += _abstain_blocks(answer)
    body += _escalation_blocks(answer, options)
    footer = [context(f":warning: {fit_mrkdwn(w, MAX_CONTEXT - 10)}") for w in answer.warnings]
    footer += [context(fit_mrkdwn(n, MAX_CONTEXT)) for n in answer.notes]
    if options.shared_by and slack_mention(options.shared_by):
        footer.append(context(f"Shared by {slack_mention(options.shared_by)}"))
    tail = _answer_buttons(answer, options)
    blocks = cap_blocks(body + footer + tail, tail=len(tail))
    return {"text": fallback_text(_fallback_text(answer)), "blocks": blocks}


def _answered_blocks(answer: Answer) -> list[dict]:
    blocks = [header("What the policy says")]
    if answer.citations:
        top = answer.citations[0]
        quote = top.quote or top.text
        headline = f"*{escape_mrkdwn(top.clause)}*  “{escape_mrkdwn(quote)}”"
    else:
        headline = escape_mrkdwn(answer.answer)
    blocks.append(section(quote_lines(_trim_escaped(headline, MAX_SECTION - 200))))
    blocks.append(context(f"*Question:* {fit_mrkdwn(answer.question, MAX_CONTEXT - 20)}"))
    for number, citation in enumerate(answer.citations):
        blocks.append(divider())
        blocks += citation_blocks(citation, number)
    return blocks


def citation_blocks(citation: Citation, number: int = 0) -> list[dict]:
    """One cited clause: number, section title, verbatim text (trimmed, with "Show full clause"), document and
    version date."""
    heading = f"*{escape_mrkdwn(citation.clause)}*"
    if citation.title:
        heading += f"  ·  {escape_mrkdwn(citation.title)}"
    heading = _trim_escaped(heading, 400)
    text = escape_mrkdwn(citation.text)
    accessory = None
    room = CLAUSE_TRIM - len(heading) - 2 - text.count("\n")  # quote_lines adds one ">" per line
    if len(text) > room:
        text = _trim_escaped(text, room)
        value = encode_value({"d": citation.doc_id[:300], "c": citation.clause[:300]})
        accessory = button("Show full clause", f"{ACTION_FULL_CLAUSE}:{number}", value)
    blocks = [section(f"{heading}\n{quote_lines(text)}", accessory)]
    source = f"_{escape_mrkdwn(citation.document)}_" if citation.document else ""
    if citation.version_date:
        source += f"  ·  version of {escape_mrkdwn(citation.version_date)}"
    if source:
        blocks.append(context(source))
    return blocks


def _abstain_blocks(answer: Answer) -> list[dict]:
    return [
        header("Not covered by the policy"),
        section(escape_mrkdwn(answer.answer)),
        context(f"*Question:* {fit_mrkdwn(answer.question, MAX_CONTEXT - 20)}"),
    ]


def _escalation_blocks(answer: Answer, options: RenderOptions) -> list[dict]:
    required = [e for e in answer.escalations if e.required]
    fallback = [e for e in answer.escalations if not e.required]
    blocks: list[dict] = []
    if required:
        blocks += [divider(), section("*The policy says to contact:*")]
        for number, escalation in enumerate(required):
            blocks.append(escalation_block(escalation, answer, number, options.ask_buttons))
    if fallback:
        blocks += [divider(), section("*Who to ask instead* (not a policy requirement):")]
        for number, escalation in enumerate(fallback, start=len(required)):
            blocks.append(escalation_block(escalation, answer, number, options.ask_buttons))
    return blocks


def escalation_block(escalation: Escalation, answer: Answer, number: int, ask_button: bool = True) -> dict:
    """One escalation: role, why (the policy sentence), contact, and "Ask <role>" when the role has a Slack id."""
    title = f"*{escape_mrkdwn(_capitalise(escalation.role))}*"
    if escalation.required:
        title += f"  ({escape_mrkdwn(escalation.action)}, clause {escape_mrkdwn(escalation.clause)})"
        why = quote_lines(_trim_escaped(escape_mrkdwn(f"“{escalation.reason}”"), 1800))
        text = f"{title}\n{why}\nContact: {describe_contact(escalation.contact)}"
    else:
        text = f"{title}: {describe_contact(escalation.contact)}"
    accessory = None
    if ask_button and slack_destination(escalation.contact):
        accessory = button(f"Ask {escalation.role}", f"{ACTION_ASK_ROLE}:{number}", ask_value(escalation, answer))
    return section(text, accessory)


def ask_value(escalation: Escalation, answer: Answer) -> str:
    """What the "Ask <role>" button carries to the confirmation step: role, question and cited clauses."""
    clauses = [c.clause for c in answer.citations] or ([escalation.clause] if escalation.clause else [])
    # Role and clause labels are bounded so that shortening the question alone always makes the value fit.
    data = {"r": escalation.role[:200], "c": [c[:100] for c in clauses[:5]], "q": answer.question}
    return encode_value(data, shrink="q")


def _answer_buttons(answer: Answer, options: RenderOptions) -> list[dict]:
    elements = []
    if options.question_id:
        elements += [
            button("Helpful", ACTION_HELPFUL, options.question_id),
            button("Not helpful", ACTION_UNHELPFUL, options.question_id),
        ]
    if options.ephemeral:
        value = encode_value({"q": answer.question, "i": options.question_id}, shrink="q")
        elements.append(button("Share in channel", ACTION_SHARE, value, style="primary"))
    return [actions(*elements)] if elements else []


def _fallback_text(answer: Answer) -> str:
    text = answer.answer
    required = [e for e in answer.escalations if e.required]
    if required:
        text += " Contact: " + "; ".join(f"{e.role} ({e.contact.describe()})" for e in required)
    return text


def _trim_escaped(escaped: str, limit: int) -> str:
    if len(escaped) <= limit:
        return escaped
    return _PARTIAL_ENTITY.sub("", escaped[: limit - 1]) + "…"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------- other messages
def render_help(answer: Answer) -> dict:
    """Help, a greeting or an empty question: what the bot does and example questions."""
    blocks = [section(escape_mrkdwn(answer.answer))]
    blocks.append(context("Mention me in a channel, message me directly, or type `/policy` and your question."))
    return message(answer.answer, blocks)


def render_notice(text: str) -> dict:
    """A short message of the app's own (rate limit, still loading, delivery failed), escaped like any other."""
    return message(text, [section(escape_mrkdwn(text))])


def render_full_clause(citation: Citation) -> dict:
    """The whole text of one clause, over as many sections as it needs (posted privately to whoever asked)."""
    heading = f"*{escape_mrkdwn(citation.clause)}*"
    if citation.title:
        heading += f"  ·  {escape_mrkdwn(citation.title)}"
    blocks = [section(_trim_escaped(heading, MAX_SECTION))]
    blocks += [section(piece) for piece in split_for_sections(citation.text)]
    if citation.document:
        blocks.append(context(f"_{escape_mrkdwn(citation.document)}_"
                              + (f"  ·  version of {escape_mrkdwn(citation.version_date)}"
                                 if citation.version_date else "")))
    return message(f"{citation.clause}: {citation.text}", blocks)


def render_feedback_ack(helpful: bool) -> dict:
    text = ("Thanks, glad it helped." if helpful else
            "Thanks for telling me. The policy owner reviews answers marked unhelpful.")
    return render_notice(text)


@dataclass(frozen=True)
class PolicySummary:
    title: str
    version_date: str = ""
    review_due: str = ""


def render_home(policies: Iterable[PolicySummary], examples: Sequence[str], loading: bool = False) -> dict:
    """The App Home tab: what the bot does, how to ask, example questions, and the policies it knows."""
    blocks = [
        header("Council Policy Adviser"),
        section("I answer questions about the council's policies by *quoting them*, with clause numbers, and I tell "
                "you who to contact when a policy says so. I never guess: if the policies do not cover something, "
                "I say so and tell you who to ask."),
        section("*How to ask*\n• Mention me in a channel: I answer in the thread.\n• Send me a direct message.\n"
                "• Type `/policy` and your question: only you see the answer, and you can share it.\n"
                "• On any message, choose *More actions → Check against policy*."),
        section("*Try asking*\n" + "\n".join(f"• {escape_mrkdwn(q)}" for q in examples)),
        divider(),
        header("Policies I know"),
    ]
    if loading:
        blocks.append(section("_I am still loading the policies; this page updates when you next open it._"))
    for policy in policies:
        detail = []
        if policy.version_date:
            detail.append(f"version of {escape_mrkdwn(policy.version_date)}")
        if policy.review_due:
            detail.append(f"review due {escape_mrkdwn(policy.review_due)}")
        text = f"*{escape_mrkdwn(policy.title)}*" + (f"\n{'  ·  '.join(detail)}" if detail else "")
        blocks.append(section(_trim_escaped(text, MAX_SECTION)))
    return {"type": "home", "blocks": cap_blocks(blocks)}


@dataclass(frozen=True)
class AskRequest:
    """What the asker confirms before anything is forwarded (kept in the modal's private_metadata)."""

    role: str
    question: str
    clauses: tuple[str, ...]
    channel: str = ""
    thread_ts: str = ""
    message_ts: str = ""
    ephemeral: bool = False

    def to_metadata(self) -> str:
        data = {"r": self.role, "q": self.question, "c": list(self.clauses), "ch": self.channel,
                "th": self.thread_ts, "m": self.message_ts, "e": self.ephemeral}
        value = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        while len(value) > MAX_METADATA and data["q"]:
            data["q"] = data["q"][: max(0, len(data["q"]) - (len(value) - MAX_METADATA) - 1)]
            value = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return value

    @classmethod
    def from_metadata(cls, metadata: str | None) -> AskRequest | None:
        data = decode_value(metadata)
        role, question = data.get("r"), data.get("q")
        if not isinstance(role, str) or not isinstance(question, str) or not role:
            return None
        clauses = tuple(str(c) for c in data.get("c") or [] if isinstance(c, str | int | float))
        return cls(role, question, clauses, str(data.get("ch") or ""), str(data.get("th") or ""),
                   str(data.get("m") or ""), bool(data.get("e")))


def render_ask_modal(request: AskRequest, contact: Contact) -> dict:
    """The confirmation step: exactly what will be forwarded, and to whom. Nothing is sent until "Send"."""
    clauses = ", ".join(request.clauses) or "none"
    return {
        "type": "modal",
        "callback_id": CALLBACK_ASK_CONFIRM,
        "title": _plain("Ask a person", MAX_MODAL_TITLE),
        "submit": _plain("Send", MAX_MODAL_TITLE),
        "close": _plain("Cancel", MAX_MODAL_TITLE),
        "private_metadata": request.to_metadata(),
        "blocks": [
            section(f"This will send your question to *{escape_mrkdwn(request.role)}*: "
                    f"{describe_contact(contact)}"),
            section(quote_lines(fit_mrkdwn(request.question, MAX_SECTION - 100))),
            context(f"Clauses cited: {fit_mrkdwn(clauses, 500)}. A link back to this conversation is included."),
            context("Nothing is sent until you press *Send*. You will be told here when they mark it resolved."),
        ],
    }


def render_ticket(ticket_id: str, role: str, question: str, clauses: Sequence[str], asker: str, link: str) -> dict:
    """The message the role's contact receives, with a "Mark resolved" button carrying the ticket id."""
    asker_text = slack_mention(asker) or "a councillor"
    lines = [f"Clauses cited: {fit_mrkdwn(', '.join(clauses) or 'none', 500)}"]
    if link.startswith("https://") and not re.search(r"[\s<>|]", link):
        lines.append(f"<{link}|View the conversation>")
    blocks = [
        header(f"Question for {role}"),
        section(f"From {asker_text}, via the Policy Adviser:\n"
                f"{quote_lines(fit_mrkdwn(question, MAX_SECTION - 100))}"),
        context(*lines),
        actions(button("Mark resolved", ACTION_RESOLVE, ticket_id, style="primary")),
    ]
    return message(f"Question for {role}: {question}", blocks)


def render_ticket_resolved(role: str, question: str, resolver: str) -> dict:
    """The contact's copy once resolved: the button is replaced by who resolved it."""
    who = slack_mention(resolver) or "someone"
    blocks = [
        header(f"Question for {role}"),
        section(quote_lines(fit_mrkdwn(question, MAX_SECTION - 100))),
        context(f":white_check_mark: Marked resolved by {who}."),
    ]
    return message(f"Resolved: question for {role}", blocks)


def render_ask_sent(role: str, delivered: bool, contact: Contact) -> dict:
    """Tell the asker their question was forwarded (or, if delivery failed, how to reach the role instead)."""
    if delivered:
        return render_notice(f"I have sent your question to {role}. I will tell you here when they mark it "
                             "resolved.")
    return render_notice(f"I could not deliver your question to {role} in Slack. Please contact them directly: "
                         f"{contact.describe()}.")


def render_asker_resolved(role: str) -> dict:
    return render_notice(f"{_capitalise(role)} has marked your question resolved.")
