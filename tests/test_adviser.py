"""The adviser's behaviour on single questions: citations, quotes, escalations, warnings, abstention, bad input."""

from __future__ import annotations

from datetime import date

import pytest

from bot.policy_dates import parse_review_date


def test_logo_question_cites_5_3_quotes_permission_and_escalates(adviser):
    """The product's headline example: cites 5.3 first, quotes the sentence that answers, names the chief
    executive as a required escalation, and warns that the policy is past its review date."""
    answer = adviser.ask("Can I use the council logo on my website?")
    assert answer.answered
    assert answer.citations[0].clause in ("5.3", "5.4")
    assert "written permission of the chief executive" in answer.answer
    assert [e.role for e in answer.escalations if e.required] == ["chief executive"]
    assert any("May 2022" in w for w in answer.warnings)


def test_headline_quotes_are_verbatim(adviser):
    """Every quote and citation text is a verbatim part of the clause: the bot never paraphrases policy."""
    for question in ("someone is trolling me on twitter", "can I post about a closed committee meeting",
                     "what password should I use"):
        answer = adviser.ask(question)
        for citation in answer.citations:
            assert citation.quote in citation.text
            clause = next(c for c in adviser.index.clauses if c.number == citation.clause)
            assert citation.text == clause.text


def test_disclaimer_question_does_not_escalate(adviser):
    """5.3's first sentence (say the views are your own) needs no one's permission: no escalation."""
    answer = adviser.ask("do I need to say in my bio that my views are my own and not the council's?")
    assert answer.citations[0].clause == "5.3"
    assert not [e for e in answer.escalations if e.required]


@pytest.mark.parametrize(
    "question", ["what's the weather like tomorrow", "where can I park my car at the civic centre",
                 "how do I claim my expenses", "what time is the bin collection on Tuesday",
                 # off-topic questions with a circumstance attached: no part of them is covered on its own
                 "how much is the basic allowance, because my payslip looks wrong",
                 "who do i speak to about a leaking roof in a council house, it's urgent"],
)
def test_out_of_scope_questions_abstain_with_fallback_contact(adviser, question):
    """Questions the policy does not cover get a plain "not covered" and a fallback contact, not a guess."""
    answer = adviser.ask(question)
    assert not answer.answered
    assert answer.kind == "abstain"
    assert not answer.citations
    assert answer.escalations and all(not e.required for e in answer.escalations)
    assert "do not cover" in answer.answer


def test_a_circumstance_the_policy_has_no_words_for_does_not_hide_the_question(adviser):
    """"because of my vote on the bypass" is context; the question is about harassment (7.2). Without it the
    question is answered with the police among the contacts, and with it too."""
    for question in ("someone is harassing me on instagram",
                     "someone is harassing me on instagram because of my vote on the bypass"):
        answer = adviser.ask(question)
        assert answer.answered, question
        assert answer.citations[0].clause == "7.2"
        assert "police" in {e.role.lower() for e in answer.escalations if e.required}
    whole = adviser._search("someone is harassing me on instagram because of my vote on the bypass")[3]
    strong, weak = adviser.abstention_thresholds
    assert weak <= whole.dense[whole.order[0]] < strong  # the middle band, where the parts are consulted


def test_named_clause_returns_that_clause(adviser):
    """"what does 5.3 say?" returns clause 5.3 itself, not a search result."""
    answer = adviser.ask("what does 5.3 say?")
    assert answer.kind == "clause"
    assert answer.citations[0].clause == "5.3"
    assert answer.citations[0].text.startswith("In any biography")


@pytest.mark.parametrize("greeting", ["hi", "Hello!", "help", "what can you do?"])
def test_greetings_get_help_with_examples(adviser, greeting):
    """Greetings and "help" get an explanation with example questions, not a retrieval result."""
    answer = adviser.ask(greeting)
    assert answer.kind == "help"
    assert "council logo" in answer.answer
    assert not answer.citations


@pytest.mark.parametrize("question", ["", "   ", "\x00\x01\x02", "???!!!", "\u200b\u200b"])
def test_empty_or_unreadable_questions_get_a_clear_message(adviser, question):
    """Empty, whitespace-only or control-character questions get a prompt to ask something, never an error."""
    answer = adviser.ask(question)
    assert not answer.answered
    assert answer.kind in ("empty", "help")


def test_enormous_question_is_truncated_with_a_note(adviser):
    """A megabyte question is cut to the configured length with a note saying so; it is still answered."""
    answer = adviser.ask("can I use the council logo on my website? " + "blah " * 200_000)
    assert any("first" in note for note in answer.notes)
    assert len(answer.question) <= adviser.settings.max_question_chars


def test_markup_in_question_is_treated_as_text(adviser):
    """Slack/Teams markup in a question is just text to the adviser; the question is echoed unchanged."""
    question = "<!channel> <@U123> can I use the *council logo* on my <https://evil.example|website>?"
    answer = adviser.ask(question)
    assert answer.question == question
    assert answer.answered


def test_follow_up_uses_history(adviser):
    """A short follow-up is searched with the previous question, so it stays on the same topic."""
    follow = adviser.ask("what about on my personal page?", history=["can I use the council logo on my site?"])
    assert follow.answered
    assert follow.citations[0].clause in ("5.3", "5.4")


def test_json_contract_keys(adviser):
    """The JSON answer has at least the documented keys."""
    data = adviser.ask("Can I use the council logo on my website?").to_json()
    assert {"question", "answered", "answer", "citations", "escalations", "warnings"} <= set(data)
    assert {"document", "clause", "title", "text", "score"} <= set(data["citations"][0])
    assert {"role", "reason", "clause", "contact"} <= set(data["escalations"][0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("May 2022", date(2022, 5, 31)), ("1st March 2023", date(2023, 3, 1)), ("31/12/2024", date(2024, 12, 31)),
     ("228th June 2021", None), ("soon", None), ("", None)],
)
def test_review_dates_are_read_leniently(text, expected):
    """Review dates are read in the forms councils write them; typos give None rather than an exception."""
    assert parse_review_date(text) == expected
