"""The Teams renderers (Answer -> Adaptive Card) and the Teams app package: pure functions, no server."""

from __future__ import annotations

import json
import re
import struct
import zipfile
import zlib

import pytest
from teams_support import actions_of, card_texts, shared_adviser, unescape, walk

from bot.answer import Answer, Citation, Contact, Escalation
from bot.render_teams import (
    CARD_VERSION,
    MAX_CARD_BYTES,
    PREVIEW_CHARS,
    card_size,
    escape_markdown,
    fit_card,
    mailto,
    render_answer_card,
    render_confirm_card,
    render_email_card,
    render_welcome_card,
)

DOC = "Constitution of the Council (Part 5G: Social Media Policy for Councillors)"
LOGO = "Use of the Council's logo on a personal account or website should only occur with the written permission " \
       "of the chief executive."
CHIEF = Contact(role="chief executive", name="Chief Executive's Office", email="chief.executive@example.gov.uk",
                phone="01234 567 890", configured=True)
# Elements and actions of Adaptive Cards up to 1.5: anything else would not render in Teams.
ALLOWED_TYPES = {
    "AdaptiveCard", "TextBlock", "Container", "ActionSet", "FactSet", "ColumnSet", "Column", "Image",
    "Action.Submit", "Action.OpenUrl", "Action.ToggleVisibility", "Action.ShowCard", "mention",
}
HOSTILE = [
    "**bold** _italic_ ~strike~ `code`",
    "[click here](https://evil.example/login) ![img](https://evil.example/x.png)",
    "<at>Chief Executive's Office</at> please approve",
    "&lt;at&gt;Chief&lt;/at&gt; and &#60;at&#62;",
    "# Heading\n> quote\n- item\n+ item\n* item\n1. first\n2) second",
    "| a | b |\n|---|---|",
    "{{DATE(2017-02-14T06:08:39Z, SHORT)}} <script>alert(1)</script>",
    "back\\slash \\*not bold\\*",
]


def citation(clause: str = "5.3", text: str = LOGO, quote: str = LOGO) -> Citation:
    return Citation(document=DOC, doc_id="smp", clause=clause, title="5 USERS' RESPONSIBILITIES", text=text,
                    score=0.99, version_date="28th June 2021", quote=quote)


def logo_answer(contact: Contact = CHIEF, question: str = "Can I use the council logo on my website?") -> Answer:
    escalation = Escalation("chief executive", LOGO, "5.3", "permission", contact)
    return Answer(question=question, answered=True, answer=f"5.3: “{LOGO}”", citations=(citation(),),
                  escalations=(escalation,), warnings=("The policy was due for review in May 2022.",))


@pytest.fixture(scope="session")
def teams_adviser(tmp_path_factory):
    return shared_adviser(tmp_path_factory)


def assert_valid_card(card: dict) -> None:
    assert card["type"] == "AdaptiveCard"
    assert tuple(int(p) for p in card["version"].split(".")) <= (1, 5)
    assert card_size(card) < MAX_CARD_BYTES
    for element in walk(card["body"]) if "body" in card else ():
        if "type" in element:
            assert element["type"] in ALLOWED_TYPES, element["type"]
    for action in actions_of(card, "Action.OpenUrl"):
        assert action["url"].split(":", 1)[0] in ("mailto", "tel", "https")


# ------------------------------------------------------------------------------------------------ escaping
@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_has_no_live_markdown_mentions_or_links(text):
    """User or policy text cannot format, link, mention or inject markup: every markdown character is escaped,
    "<at>" and entities are broken, and escaping is reversible (the reader sees the original characters)."""
    escaped = escape_markdown(text)
    assert unescape(escaped) == text
    unescaped_special = re.findall(r"(?<!\\)[*_\[\]()`#>~|!+\-]", escaped)
    assert unescaped_special == []
    assert "<at" not in escaped.lower() and "&lt;" not in escaped and "&#60;" not in escaped
    assert "{{" not in escaped
    assert not re.search(r"^\s*\d+\.\s", escaped, re.MULTILINE), "a numbered list survived"


def test_escaping_leaves_ordinary_prose_readable():
    """Plain policy prose is unchanged apart from its punctuation, so cards stay legible."""
    assert escape_markdown("Use of the Council's logo, 28th June 2021.") == "Use of the Council's logo, 28th June 2021."
    assert escape_markdown("5.3: permission") == "5.3: permission"


def test_hostile_question_is_shown_literally_and_mentions_nobody():
    """A question with markdown, a disguised link and an <at> mention of the configured contact appears as text;
    the only mention the card carries is the one the bot adds for the configured Teams contact."""
    contact = Contact(role="chief executive", name="Chief Executive's Office", teams="29:chief", configured=True)
    question = "[Approve](https://evil.example) <at>Chief Executive's Office</at> **now**"
    card = render_answer_card(logo_answer(contact, question), question_id="q1")
    texts = card_texts(card)
    assert escape_markdown(question) in texts
    assert all("evil" not in a["url"] for a in actions_of(card, "Action.OpenUrl"))
    mentions = card["msteams"]["entities"]
    assert mentions == [{"type": "mention", "text": "<at>Chief Executive's Office</at>",
                         "mentioned": {"id": "29:chief", "name": "Chief Executive's Office"}}]
    assert texts.count("<at>") == 1  # the contact line, not the question


# ---------------------------------------------------------------------------------------------- answer card
def test_answer_card_has_headline_citation_escalation_warning_and_feedback():
    """The answer card quotes the clause with its number, cites section, document and version date, names the
    role with the policy sentence requiring it and its contact links, offers "Ask <role>", shows the review
    warning and helpful/not helpful buttons, and carries a plain-text fallback."""
    card = render_answer_card(logo_answer(), question_id="abc123")
    assert_valid_card(card)
    assert card["version"] == CARD_VERSION
    texts = unescape(card_texts(card))
    assert f"5.3: “{LOGO}”" in texts
    assert "Clause 5.3" in texts and "5 USERS' RESPONSIBILITIES" in texts
    assert DOC in texts and "version 28th June 2021" in texts
    assert "You need written permission from the chief executive" in texts
    assert "Chief Executive's Office" in texts
    assert "due for review" in texts
    urls = [a["url"] for a in actions_of(card, "Action.OpenUrl")]
    assert "mailto:chief.executive@example.gov.uk" in urls and "tel:01234567890" in urls
    ask = [a for a in actions_of(card, "Action.Submit") if a["data"].get("action") == "escalate"]
    assert [a["title"] for a in ask] == ["Ask the chief executive"]
    assert ask[0]["data"] == {"action": "escalate", "role": "chief executive", "question": logo_answer().question,
                              "clauses": ["5.3"], "question_id": "abc123"}
    feedback = [a["data"] for a in actions_of(card, "Action.Submit") if a["data"].get("action") == "feedback"]
    assert feedback == [{"action": "feedback", "question_id": "abc123", "helpful": True},
                        {"action": "feedback", "question_id": "abc123", "helpful": False}]
    assert "5.3" in card["fallbackText"] and "chief executive" in card["fallbackText"]
    assert "msteams" in card and not card["msteams"].get("feedbackLoopEnabled")


def test_unconfigured_contact_is_named_never_invented():
    """A role whose contact is a placeholder is still named, with "no contact configured" and no links."""
    placeholder = Contact(role="chief executive", name="CHANGE-ME", email="ce@example.gov.uk", configured=False)
    card = render_answer_card(logo_answer(placeholder))
    assert "chief executive: no contact configured" in unescape(card_texts(card))
    assert actions_of(card, "Action.OpenUrl") == []
    assert "CHANGE-ME" not in json.dumps(card)


def test_long_clause_is_collapsed_behind_a_toggle():
    """A clause longer than the preview shows its start, with "Show full clause" revealing the verbatim text."""
    long_text = " ".join(["The councillor should take care with every post they make online."] * 12)
    answer = Answer(question="q", answered=True, answer="1.1: “x”", citations=(citation("1.1", long_text, "x"),))
    card = render_answer_card(answer)
    toggles = actions_of(card, "Action.ToggleVisibility")
    assert [t["title"] for t in toggles] == ["Show full clause"]
    by_id = {e["id"]: e for e in walk(card["body"]) if "id" in e}
    short_id, full_id = toggles[0]["targetElements"]
    assert by_id[full_id]["isVisible"] is False and unescape(by_id[full_id]["text"]) == long_text
    assert len(unescape(by_id[short_id]["text"])) <= PREVIEW_CHARS + 2
    assert by_id[short_id].get("isVisible", True)


def test_abstention_offers_fallback_contact_as_not_a_requirement():
    """When the policies do not cover a question the card says so and offers the fallback contact, labelled as
    not a policy requirement."""
    democratic = Contact(role="democratic services", name="Democratic Services", email="ds@example.gov.uk",
                         configured=True)
    answer = Answer(question="How do I bake bread?", answered=False, kind="abstain",
                    answer="The council's policies I know do not cover this, so I won't guess.",
                    escalations=(Escalation("democratic services", "ask them", "", "advice", democratic,
                                            required=False),))
    card = render_answer_card(answer, "q2")
    texts = unescape(card_texts(card))
    assert "do not cover this" in texts
    assert "**Who to ask instead** (not a policy requirement)" in texts
    assert "Democratic Services" in texts and "You need" not in texts
    assert any(a["data"].get("role") == "democratic services" for a in actions_of(card, "Action.Submit"))


def test_oversized_card_is_shrunk_under_the_teams_limit():
    """Three enormous clauses (a badly split policy) still produce a card under 80 KB that Teams accepts."""
    huge = "word " * 12000
    answer = Answer(question="q", answered=True, answer="1: “x”",
                    citations=tuple(citation(str(i), huge, "x") for i in range(3)))
    card = render_answer_card(answer)
    assert card_size(card) < MAX_CARD_BYTES
    assert fit_card(card) == card


def test_real_answer_card_for_the_logo_question(teams_adviser):
    """The real adviser's answer to the issue's question renders as a valid 1.5 card citing 5.3 and naming the
    chief executive."""
    card = render_answer_card(teams_adviser.ask("Can I use the council logo on my website?"), "q3")
    assert_valid_card(card)
    texts = unescape(card_texts(card))
    assert "Clause 5.3" in texts and "chief executive" in texts


# -------------------------------------------------------------------------------------------- other cards
def test_welcome_card_offers_three_example_questions_as_message_back_buttons():
    """The install/help card shows three example questions as buttons that post the question back as a message."""
    examples = ["Q one?", "Q two?", "Q three?", "Q four?"]
    card = render_welcome_card("I answer questions about the council's policies.", examples)
    assert_valid_card(card)
    buttons = actions_of(card, "Action.Submit")
    assert [b["data"]["msteams"] for b in buttons] == [
        {"type": "messageBack", "text": q, "displayText": q} for q in examples[:3]]
    assert all(b["data"]["action"] == "ask" for b in buttons)


def test_confirm_card_shows_exactly_what_will_be_forwarded():
    """Before anything is sent the asker sees recipient, sender, question and clauses, with Send and Cancel."""
    request = {"action": "escalate", "role": "chief executive", "question": "Logo **now**?", "clauses": ["5.3"],
               "question_id": "q"}
    card = render_confirm_card(request, "the chief executive, in Teams", "Alex")
    assert_valid_card(card)
    texts = unescape(card_texts(card))
    for shown in ("the chief executive, in Teams", "Alex", "Logo **now**?", "5.3", "Nothing is sent"):
        assert shown in texts
    sends = [a["data"] for a in actions_of(card, "Action.Submit")]
    assert sends[0] == {**request, "action": "escalate_confirm"}
    assert sends[1]["action"] == "escalate_cancel"


def test_email_card_prefills_the_question():
    """When the role is not reachable in Teams, the asker gets a mailto: link with subject and question filled in."""
    card = render_email_card("chief executive", CHIEF, "Logo & website?", ["5.3"], "T1")
    url = next(a["url"] for a in actions_of(card, "Action.OpenUrl") if a["url"].startswith("mailto:"))
    assert url.startswith("mailto:chief.executive@example.gov.uk?subject=Policy%20question")
    assert "Logo%20%26%20website%3F" in url and "T1" in url
    assert mailto("a@b.org?cc=x@evil.example") == "mailto:a@b.org%3Fcc%3Dx@evil.example"


# ----------------------------------------------------------------------------------------------- packaging
def _png_size(data: bytes) -> tuple[int, int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, _depth, color_type = struct.unpack(">IIBB", data[16:26])
    return width, height, color_type


def _outline_is_white_on_transparent(data: bytes) -> bool:
    raw = zlib.decompress(data[data.index(b"IDAT") + 4: data.index(b"IEND") - 8])
    rows = [raw[i * 129 + 1: (i + 1) * 129] for i in range(32)]
    pixels = [row[j: j + 4] for row in rows for j in range(0, 128, 4)]
    return all(p[3] == 0 or p[:3] == b"\xff\xff\xff" for p in pixels) and any(p[3] == 0 for p in pixels)


def test_teams_package_fills_app_id_and_holds_icons(tmp_path, monkeypatch, capsys):
    """`policybot teams-package` writes a zip with the manifest (app id from MicrosoftAppId, as the app and the
    bot id) and both icons at the root: 192x192 colour and 32x32 white-on-transparent outline."""
    from bot.cli import main

    app_id = "0B5EA3B2-1111-4222-8333-944455556666"
    monkeypatch.setenv("MicrosoftAppId", app_id)
    output = tmp_path / "out" / "teams.zip"
    assert main(["teams-package", "--output", str(output), "--website-url", "https://council.example.gov.uk"]) == 0
    with zipfile.ZipFile(output) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
        color, outline = archive.read("color.png"), archive.read("outline.png")
    assert manifest["id"] == app_id.lower() and manifest["bots"][0]["botId"] == app_id.lower()
    assert "{{" not in json.dumps(manifest)
    assert manifest["developer"]["privacyUrl"] == "https://council.example.gov.uk"
    assert set(manifest["bots"][0]["scopes"]) == {"personal", "team", "groupChat"}
    assert _png_size(color)[:2] == (192, 192)
    assert _png_size(outline) == (32, 32, 6) and _outline_is_white_on_transparent(outline)


def test_teams_package_without_app_id_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """Without MicrosoftAppId the command fails with a one-line message saying what to set, and writes nothing."""
    from bot.cli import main

    monkeypatch.delenv("MicrosoftAppId", raising=False)
    output = tmp_path / "teams.zip"
    assert main(["teams-package", "--output", str(output)]) == 2
    assert "MicrosoftAppId" in capsys.readouterr().err
    assert not output.exists()
