"""Hostile questions to the real adviser (packaged MiniLM, real FAISS and BM25): whatever arrives, an Answer comes
back, and every renderer can show it."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from live_server import examples

from bot.adviser import Adviser, clean_question
from bot.answer import Answer
from bot.render_slack import render_answer
from bot.render_teams import MAX_CARD_BYTES, render_answer_card
from bot.render_text import render_text

EXAMPLES = 300  # reported in docs/reliability.md
KINDS = {"policy", "clause", "abstain", "help", "empty"}
LONG_NOTE = "Your question was long"

# Pieces of chat markup and awkward text that users, clients or attackers put into messages.
MARKUP = [
    "<@U0ASKER>", "<@UBOTPOLICY|policybot>", "<!channel>", "<!here>", "<!subteam^S123>", "<#C0GENERAL|general>",
    "<https://evil.example|click here>", "<mailto:a@b.c|mail>", "&lt;", "&gt;", "&amp;", "*bold*", "_it_", "~s~",
    "`code`", "```block```", "> quote", "<at>Policy Adviser</at>", "<at>", "</at>", "**bold**", "[x](http://e.x)",
    "<script>alert(1)</script>", "<b>", "{{template}}", "${jndi:ldap://x}", "%s%n", "\\u0000", "5.3", "7.2(a)",
    "1.1.1.1.1", "hello", "help", "and what about", "logo", "facebook", "trolling", "\u202e", "\u200b", "\u2028",
    "\ufeff", "\ufdfa", "\u0000", "\x1b[31m", "\r\n", "\t", "😀", "e\u0301", "ﬁ", "İ", "ß",
]
control_text = st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=200)
markup_text = st.lists(st.one_of(st.sampled_from(MARKUP), st.text(max_size=12)), max_size=30).map(" ".join)
ascii_words = st.lists(st.text(alphabet=string.ascii_letters, min_size=1, max_size=15), max_size=60).map(" ".join)
questions = st.one_of(st.text(), st.text(min_size=200, max_size=1500), control_text, markup_text, ascii_words)


def check_answer(adviser: Adviser, raw: str, answer: Answer) -> None:
    """The invariants every answer keeps, whatever the question."""
    limit = adviser.settings.max_question_chars
    assert isinstance(answer, Answer)
    assert answer.kind in KINDS
    assert len(answer.question) <= limit
    assert answer.answered == (answer.kind in ("policy", "clause"))
    assert bool(answer.citations) == answer.answered
    for citation in answer.citations:
        assert citation.quote in citation.text  # quotes are verbatim, never a paraphrase
    if answer.kind != "help":
        assert answer.notes == tuple(clean_question(raw, limit)[1])  # truncation is never silent
    json.dumps(answer.to_json(), ensure_ascii=False).encode("utf-8")
    slack = render_answer(answer)
    assert len(slack["blocks"]) <= 50
    json.dumps(slack, ensure_ascii=False).encode("utf-8")
    card = render_answer_card(answer, "0" * 32)
    assert len(json.dumps(card).encode()) <= MAX_CARD_BYTES
    assert isinstance(render_text(answer), str)


@settings(max_examples=examples(EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(question=questions, history=st.lists(st.one_of(st.text(max_size=80), markup_text), max_size=3))
@example(question="", history=[])
@example(question="\x00" * 5000, history=[])
@example(question="<@UBOTPOLICY> <!channel> what about <https://evil|instagram>?", history=["can I use the logo?"])
@example(question="\ufdfa" * 3000, history=[])  # NFKC expands each to 18 characters
@example(question="5.3 " * 400, history=[])
def test_any_question_gets_an_answer_every_renderer_can_show(adviser: Adviser, question: str,
                                                             history: list[str]) -> None:
    """Any unicode text (control and format characters, Slack and Teams markup, lone clause numbers, greetings,
    empty), with any history, gets an Answer (never an exception) whose question is capped, whose truncation is
    noted, whose quotes are verbatim, and which the Slack, Teams and text renderers all render within their
    platforms' limits."""
    answer = adviser.ask(question, history)
    check_answer(adviser, question, answer)


@pytest.mark.parametrize("name, question", [
    ("1 MB of one letter", "a" * 1_000_000),
    ("1 MB of words", "can I use the council logo on my website " * 25_000),
    ("1 MB of control characters", "\x07\x1b\x00\u200b" * 250_000),
    ("1 MB of markup", "<@U1> <!channel> *x* " * 50_000),
])
def test_a_megabyte_question_is_answered_from_its_capped_beginning(adviser: Adviser, name: str, question: str) -> None:
    """A 1 MB question is neither refused nor allowed to run away: it is answered from its first
    max_question_chars characters, with a note saying so (unless nothing printable was left to answer)."""
    answer = adviser.ask(question)
    check_answer(adviser, question, answer)
    if answer.question:
        assert any(LONG_NOTE in note for note in answer.notes)


def test_non_string_input_is_answered_not_raised(adviser: Adviser) -> None:
    """Bytes (even invalid UTF-8) and other non-strings passed by an adapter are read as text, not raised on."""
    for question in (b"can I use the logo? \xff\xfe", 42, None):
        answer = adviser.ask(question)  # type: ignore[arg-type]
        assert isinstance(answer, Answer)
