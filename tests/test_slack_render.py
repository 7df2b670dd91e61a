"""Block Kit rendering: every outside text escaped for mrkdwn, and Slack's size limits always respected."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.answer import Answer, Citation, Contact, Escalation
from bot.render_slack import (
    ACTION_ASK_ROLE,
    ACTION_FULL_CLAUSE,
    ACTION_HELPFUL,
    ACTION_SHARE,
    MAX_BLOCKS,
    MAX_BUTTON_TEXT,
    MAX_BUTTON_VALUE,
    MAX_HEADER,
    MAX_METADATA,
    MAX_SECTION,
    AskRequest,
    PolicySummary,
    RenderOptions,
    decode_value,
    escape_mrkdwn,
    render_answer,
    render_ask_modal,
    render_full_clause,
    render_home,
    render_ticket,
)
from bot.slack_handlers import question_from_slack

HOSTILE = "<!channel> <!here> <@U123> <https://evil.example|click here> & <#C999>"
CHIEF = Contact(role="chief executive", name="Chief Executive's Office", email="ce@example.gov.uk",
                slack="U0CHIEFEX", configured=True)


def citation(clause: str = "5.3", text: str = "Use of the Council's logo needs permission.", **kw: Any) -> Citation:
    fields = dict(document="Social Media Policy", doc_id="smp", clause=clause, title="5 USERS' RESPONSIBILITIES",
                  text=text, score=0.9, version_date="28th June 2021", quote=text)
    return Citation(**(fields | kw))


def escalation(role: str = "chief executive", contact: Contact = CHIEF, required: bool = True) -> Escalation:
    return Escalation(role=role, reason="Use of the logo needs the written permission of the chief executive.",
                      clause="5.3", action="permission", contact=contact, required=required)


def answer(**kw: Any) -> Answer:
    fields = dict(question="can I use the logo?", answered=True, answer="5.3: “Use of the logo…”",
                  citations=(citation(),), escalations=(escalation(),), warnings=(), kind="policy")
    return Answer(**(fields | kw))


def mrkdwn_texts(payload: Any) -> list[str]:
    """Every string Slack parses as mrkdwn: text objects of type mrkdwn, and the message's fallback `text`."""
    found = []
    if isinstance(payload, dict):
        if payload.get("type") == "mrkdwn" or ("blocks" in payload and isinstance(payload.get("text"), str)):
            found.append(payload["text"])
        for value in payload.values():
            found += mrkdwn_texts(value)
    elif isinstance(payload, list):
        for value in payload:
            found += mrkdwn_texts(value)
    return found


def controls(payload: Any, allowed: tuple[str, ...] = ()) -> list[str]:
    """The Slack control sequences (<...>) in the payload's mrkdwn other than the `allowed` ones: each is a
    mention, broadcast or link Slack would act on."""
    sequences = []
    for text in mrkdwn_texts(payload):
        sequences += [s for s in re.findall(r"<[^>]*>?", text) if s not in allowed]
    return sequences


def assert_within_limits(blocks: list[dict]) -> None:
    assert len(blocks) <= MAX_BLOCKS
    for block in blocks:
        if block["type"] == "section":
            assert 0 < len(block["text"]["text"].strip()) and len(block["text"]["text"]) <= MAX_SECTION
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= MAX_HEADER
        if block["type"] == "context":
            assert len(block["elements"]) <= 10
            assert all(0 < len(e["text"].strip()) and len(e["text"]) <= MAX_SECTION for e in block["elements"])
        for element in list(block.get("elements") or []) + [block.get("accessory") or {}]:
            if element.get("type") == "button":
                assert 0 < len(element["text"]["text"].strip()) and len(element["text"]["text"]) <= MAX_BUTTON_TEXT
                assert len(element.get("value", "")) <= MAX_BUTTON_VALUE


# ---------------------------------------------------------------------------------------------- escaping
@given(st.text())
def test_escaping_leaves_no_control_characters_and_round_trips(text: str) -> None:
    """Escaped text has no < or > for Slack to act on, and Slack's decoding gives back exactly what was typed."""
    escaped = escape_mrkdwn(text)
    assert "<" not in escaped and ">" not in escaped
    assert question_from_slack(escaped, None) == " ".join(text.split())


def test_hostile_text_in_every_field_pings_and_links_nobody() -> None:
    """<!channel>, <@U…> and <url|label> in the question, the policy text, titles, contacts, warnings and notes
    are shown literally; the only control sequence left is the configured contact's own mention."""
    contact = Contact(role=HOSTILE, name=HOSTILE, email=HOSTILE, phone=HOSTILE, slack="U0CHIEFEX", configured=True)
    hostile = answer(
        question=HOSTILE, answer=HOSTILE,
        citations=(citation(clause=HOSTILE, text=HOSTILE * 200, title=HOSTILE, document=HOSTILE, quote=HOSTILE,
                            version_date=HOSTILE),),
        escalations=(Escalation(role=HOSTILE, reason=HOSTILE, clause=HOSTILE, action=HOSTILE, contact=contact),
                     escalation(role=HOSTILE, contact=contact, required=False)),
        warnings=(HOSTILE,), notes=(HOSTILE,),
    )
    for options in (RenderOptions(), RenderOptions(question_id="a" * 32, ephemeral=True, shared_by="U0SHARER")):
        rendered = render_answer(hostile, options)
        assert controls(rendered, allowed=("<@U0CHIEFEX>", "<@U0SHARER>")) == []
        assert "&lt;!channel&gt;" in rendered["text"]
    full = render_full_clause(hostile.citations[0])
    assert controls(full) == []


@given(st.text(max_size=300), st.text(max_size=300))
@settings(max_examples=60, deadline=None)
def test_any_question_and_clause_text_render_without_control_sequences(question: str, text: str) -> None:
    """Whatever the question or clause says, the rendered answer contains no control sequence of its own."""
    rendered = render_answer(answer(question=question, answer=text, citations=(citation(text=text, quote=text),),
                                    escalations=()), RenderOptions(question_id="b" * 32))
    assert controls(rendered) == []


def test_a_malformed_slack_id_in_the_contacts_file_is_not_turned_into_a_mention() -> None:
    """Only well-formed user (U…) or channel (C…) ids become mentions; anything else is shown as escaped text."""
    odd = Contact(role="chief executive", name="Office", slack="U1>|<!channel", configured=True)
    rendered = render_answer(answer(escalations=(escalation(contact=odd),)))
    assert controls(rendered) == []
    assert find_ids(rendered["blocks"], ACTION_ASK_ROLE) == []  # nowhere to forward to


# ---------------------------------------------------------------------------------------------- limits
@given(
    question=st.text(min_size=0, max_size=6000),
    clause_text=st.text(min_size=0, max_size=12000),
    citations=st.integers(1, 5),
    escalations=st.integers(0, 60),
)
@settings(max_examples=40, deadline=None)
def test_any_answer_fits_slacks_block_kit_limits(question: str, clause_text: str, citations: int,
                                                 escalations: int) -> None:
    """However long the question and clauses and however many escalations, the message stays within 50 blocks,
    3000-character sections, 150-character headers, 75-character button labels and 2000-character values."""
    big = answer(
        question=question, answer=clause_text,
        citations=tuple(citation(clause=f"{i}.1", text=clause_text, quote=clause_text) for i in range(citations)),
        escalations=tuple(escalation(role=f"role {i} " + "x" * 200) for i in range(escalations)),
        warnings=(clause_text,), notes=(question,),
    )
    rendered = render_answer(big, RenderOptions(question_id="c" * 32, ephemeral=True))
    assert_within_limits(rendered["blocks"])
    assert rendered["text"].strip()
    assert rendered["blocks"][-1]["type"] == "actions"  # the buttons survive any cut


def test_a_long_clause_is_trimmed_with_a_show_full_clause_button_and_shown_whole_on_request() -> None:
    """A clause too long for one section is trimmed with "Show full clause" (naming the document and clause);
    the full-clause message carries every word, over several sections."""
    words = " ".join(f"word{i}" for i in range(1500))  # about 12,000 characters
    long = citation(clause="9.9", text=words, quote="word1")
    rendered = render_answer(answer(citations=(long,)))
    [button] = find_ids(rendered["blocks"], ACTION_FULL_CLAUSE)
    assert decode_value(button["value"]) == {"d": "smp", "c": "9.9"}
    full = render_full_clause(long)
    assert_within_limits(full["blocks"])
    shown = " ".join(b["text"]["text"] for b in full["blocks"][1:] if b["type"] == "section")
    assert shown.split() == words.split()


def test_short_clauses_have_no_show_full_clause_button() -> None:
    """The button appears only when text was cut."""
    assert find_ids(render_answer(answer())["blocks"], ACTION_FULL_CLAUSE) == []


def test_ask_button_value_fits_even_for_a_very_long_question() -> None:
    """The "Ask <role>" value carries role, clauses and question, shortened to fit Slack's 2000 characters."""
    rendered = render_answer(answer(question="é" * 5000))
    [ask] = find_ids(rendered["blocks"], ACTION_ASK_ROLE)
    assert len(ask["value"]) <= MAX_BUTTON_VALUE
    data = decode_value(ask["value"])
    assert data["r"] == "chief executive" and data["c"] == ["5.3"] and data["q"].startswith("é")


def test_ask_modal_metadata_fits_and_round_trips() -> None:
    """The confirmation modal keeps what will be forwarded in private_metadata (3000 characters at most)."""
    request = AskRequest("chief executive", "q" * 5000, ("5.3", "5.4"), "C0GENERAL", "1.2", "1.3")
    modal = render_ask_modal(request, CHIEF)
    assert len(modal["private_metadata"]) <= MAX_METADATA
    assert len(modal["title"]["text"]) <= 24
    back = AskRequest.from_metadata(modal["private_metadata"])
    assert back is not None and back.role == "chief executive" and back.clauses == ("5.3", "5.4")
    assert back.channel == "C0GENERAL" and back.thread_ts == "1.2"
    assert AskRequest.from_metadata("not json") is None
    assert AskRequest.from_metadata('{"q": "no role"}') is None


# ---------------------------------------------------------------------------------------------- content
def test_answer_shows_headline_citation_escalation_and_buttons() -> None:
    """The answer quotes the clause with its number, cites document and version date, names the role with the
    policy sentence and a Slack mention of the contact, and offers Ask and feedback buttons."""
    rendered = render_answer(answer(warnings=("Past its review date.",)), RenderOptions(question_id="d" * 32))
    text = "\n".join(mrkdwn_texts(rendered))
    assert "*5.3*" in text and "Use of the Council's logo needs permission." in text
    assert "Social Media Policy" in text and "28th June 2021" in text
    assert "written permission of the chief executive" in text
    assert "<@U0CHIEFEX>" in text
    assert ":warning: Past its review date." in text
    [ask] = find_ids(rendered["blocks"], ACTION_ASK_ROLE)
    assert ask["text"]["text"] == "Ask chief executive"
    assert [b["value"] for b in find_ids(rendered["blocks"], ACTION_HELPFUL)] == ["d" * 32]
    assert find_ids(rendered["blocks"], ACTION_SHARE) == []


def test_contact_without_slack_id_is_named_with_email_and_no_ask_button() -> None:
    """Without a Slack id the contact's name and email are shown, and there is nothing to forward to."""
    contact = Contact(role="chief executive", name="CE Office", email="ce@example.gov.uk", configured=True)
    rendered = render_answer(answer(escalations=(escalation(contact=contact),)))
    assert "CE Office, ce@example.gov.uk" in "\n".join(mrkdwn_texts(rendered))
    assert find_ids(rendered["blocks"], ACTION_ASK_ROLE) == []
    unconfigured = render_answer(answer(escalations=(escalation(contact=Contact(role="chief executive")),)))
    assert "no contact configured" in "\n".join(mrkdwn_texts(unconfigured))


def test_abstention_says_not_covered_and_offers_the_fallback_as_optional() -> None:
    """An abstention says the policy does not cover it and offers the fallback contact, not as a requirement."""
    fallback = escalation(role="democratic services", required=False,
                          contact=Contact(role="democratic services", name="Democratic Services",
                                          email="ds@example.gov.uk", configured=True))
    rendered = render_answer(Answer(question="weather?", answered=False, kind="abstain",
                                    answer="The council's policies I know do not cover this.",
                                    escalations=(fallback,)))
    text = "\n".join(mrkdwn_texts(rendered))
    assert rendered["blocks"][0]["text"]["text"] == "Not covered by the policy"
    assert "do not cover this" in text
    assert "not a policy requirement" in text and "Democratic Services, ds@example.gov.uk" in text
    assert "The policy says to contact" not in text


def test_ephemeral_answer_offers_share_in_channel() -> None:
    """A private (/policy) answer has "Share in channel" carrying the question."""
    rendered = render_answer(answer(), RenderOptions(question_id="e" * 32, ephemeral=True))
    [share] = find_ids(rendered["blocks"], ACTION_SHARE)
    assert decode_value(share["value"]) == {"q": "can I use the logo?", "i": "e" * 32}


def test_home_tab_lists_policies_with_version_and_review_dates() -> None:
    """The App Home view names each policy with its version and review dates, and example questions."""
    view = render_home([PolicySummary(HOSTILE, "28th June 2021", "May 2022")], ["Can I use the logo?"])
    assert view["type"] == "home"
    text = "\n".join(mrkdwn_texts(view))
    assert "28th June 2021" in text and "May 2022" in text and "Can I use the logo?" in text
    assert controls(view) == []


def test_ticket_message_mentions_the_asker_and_links_back_only_to_https() -> None:
    """The forwarded question names the asker and links to the conversation; a link that is not a plain https
    URL is dropped rather than rendered."""
    good = render_ticket("t1", "chief executive", HOSTILE, ["5.3"], "U0ASKER", "https://council.slack.com/p1")
    assert controls(good, allowed=("<@U0ASKER>", "<https://council.slack.com/p1|View the conversation>")) == []
    assert "<https://council.slack.com/p1|View the conversation>" in "\n".join(mrkdwn_texts(good))
    bad = render_ticket("t1", "chief executive", "q", ["5.3"], "U0ASKER", "https://x|<!channel>")
    assert controls(bad, allowed=("<@U0ASKER>",)) == []


def find_ids(blocks: list[dict], prefix: str) -> list[dict]:
    found = []
    for block in blocks:
        elements = list(block.get("elements") or []) + ([block["accessory"]] if "accessory" in block else [])
        found += [e for e in elements if e.get("type") == "button" and e["action_id"].startswith(prefix)]
    return found
