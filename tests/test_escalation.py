"""Escalation rules read from the policy text, overrides, contacts and their validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bot.adviser import _ASKS_WHO
from bot.contacts import load_contacts, validate_contacts
from bot.escalation import OverrideError, apply_overrides, derive_rules
from index.parse import parse_document
from index.readers import load_documents
from tests.conftest import BENCH_POLICIES, POLICY_DIR, REPO


@pytest.fixture(scope="module")
def seed_rules():
    return derive_rules(load_documents(POLICY_DIR))


def test_seed_rules_cover_exactly_the_policy_escalations(seed_rules):
    """5.3, 5.4, 5.5, 7.2 and 11.1 yield rules with the right roles and actions, and nothing else does."""
    found = {(r.clause, r.roles, r.action) for r in seed_rules}
    assert found == {
        ("5.3", ("chief executive",), "permission"),
        ("5.4", ("chief executive",), "advice"),
        ("5.5", ("ICT Manager",), "consult"),
        ("7.2", ("political group leader", "democratic services", "police"), "report"),
        ("11.1", ("Monitoring Officer",), "complaint"),
    }


def test_rules_govern_the_sentence_not_the_clause(seed_rules):
    """5.3's rule governs only its logo sentence; 5.5's governs the security exception and its own sentence."""
    by_clause = {r.clause: r for r in seed_rules}
    assert by_clause["5.3"].segments == (1,)
    assert by_clause["5.3"].sentence.startswith("Use of the Council's logo")
    assert by_clause["5.5"].segments == (1, 2)
    assert by_clause["5.4"].segments == (0, 1)


@pytest.mark.parametrize(
    ("file", "clause", "roles"),
    [
        ("mscc_code_of_conduct.txt", "6(1)(c)", ("monitoring officer",)),
        ("wyevalleycc_code_of_conduct.txt", "6(1)(c)", ("Public Services Ombudsman", "monitoring officer")),
        ("mscc_online_policy.txt", "1 para 3", ("full Council",)),
        ("mscc_online_strategy.txt", "Responsibilities para 2", ("Clerk",)),
    ],
)
def test_rules_from_other_councils_documents(file, clause, roles):
    """The same derivation finds the Clerk, the Monitoring Officer and the full Council in other documents."""
    path = BENCH_POLICIES / file
    if not path.exists():
        pytest.skip("bench documents not available")
    rules = derive_rules([parse_document(path.read_text(encoding="utf-8"), path.stem)])
    assert any(r.clause == clause and r.roles == roles for r in rules), [(r.clause, r.roles) for r in rules]


def test_no_spurious_rules_from_consent_of_others():
    """"without their prior written consent" (customers, suppliers) is not an escalation to a council role."""
    doc = parse_document("1 INFO\n\n- 1.1 They should not cite suppliers without their prior written consent.\n", "d")
    assert derive_rules([doc]) == []


def test_overrides_add_correct_and_silence(seed_rules, tmp_path):
    """An officer's override file can silence a role, correct a rule's roles and add a rule."""
    path = tmp_path / "escalation_overrides.toml"
    path.write_text(
        '[[silence]]\nclause = "7.2"\nrole = "police"\n\n'
        '[[rule]]\nclause = "11.1"\nroles = ["Monitoring Officer", "Deputy Monitoring Officer"]\n\n'
        '[[rule]]\nclause = "8.5"\nroles = ["democratic services"]\naction = "advice"\n'
        'sentence = "Councillors must not publish or report on meetings which are private or internal."\n',
        encoding="utf-8",
    )
    rules = {r.clause: r for r in apply_overrides(seed_rules, path)}
    assert rules["7.2"].roles == ("political group leader", "democratic services")
    assert rules["11.1"].roles == ("Monitoring Officer", "Deputy Monitoring Officer")
    assert rules["11.1"].source == "override"
    assert rules["8.5"].roles == ("democratic services",)


def test_broken_override_file_is_reported(seed_rules, tmp_path):
    """A rule without roles is an error naming the file, not a silent no-op."""
    path = tmp_path / "escalation_overrides.toml"
    path.write_text('[[rule]]\nclause = "5.1"\n', encoding="utf-8")
    with pytest.raises(OverrideError, match="escalation_overrides.toml"):
        apply_overrides(seed_rules, path)


def test_contacts_placeholders_are_not_contacts():
    """Shipped placeholder contacts are named but reported as not configured; unknown roles too."""
    contacts = load_contacts(POLICY_DIR / "contacts.toml")
    assert not contacts.lookup("chief executive").configured
    assert contacts.lookup("chief executive").describe() == "no contact configured"
    assert contacts.lookup("Lord Mayor").describe() == "no contact configured"
    assert contacts.lookup("police").configured


def test_contacts_validation_reports_file_and_line(tmp_path):
    """Unknown keys and malformed emails are reported with the file and line."""
    path = tmp_path / "contacts.toml"
    path.write_text('[roles."chief executive"]\nname = "Pat"\nemial = "x"\nemail = "not-an-email"\n',
                    encoding="utf-8")
    problems = validate_contacts(path)
    assert "contacts.toml:3: unknown key 'emial' for role 'chief executive'" in problems
    assert any(p.startswith("contacts.toml:4: malformed email") for p in problems)


def test_abstention_offers_fallback_labelled_not_required(adviser):
    """An unanswered question offers democratic services and the policy owner, marked as not required."""
    answer = adviser.ask("what is the weather tomorrow")
    roles = {e.role: e for e in answer.escalations}
    assert set(roles) == {"democratic services", "policy owner"}
    assert all(not e.required for e in answer.escalations)
    assert roles["policy owner"].contact.name == "Angela Wakefield"


def test_escalation_precision_within_a_clause(adviser):
    """Logo question escalates to the chief executive; the bio disclaimer in the same clause does not;
    the security exception of 5.5 goes to the ICT Manager while saying who you are does not."""
    logo = adviser.ask("can I put the council logo on my personal website?")
    assert "chief executive" in {e.role for e in logo.escalations if e.required}
    disclaimer = adviser.ask("does my twitter bio need to say my views are not the council's views?")
    assert not [e for e in disclaimer.escalations if e.required]
    security = adviser.ask("I fear for my personal security, can I keep my identity off my profile?")
    assert [e.role for e in security.escalations if e.required] == ["ICT Manager"]
    profile = adviser.ask("should I make clear in my profile whether I represent the council?")
    assert not [e for e in profile.escalations if e.required]


def test_exception_named_in_the_question_escalates_even_when_the_rule_sentence_is_closer(adviser):
    """A question phrased like 5.5's rule ("must a councillor still identify themselves") but conditioned on its
    exception ("a threat to my personal security") answers with the exception too, so the ICT Manager is named."""
    answer = adviser.ask("If there is a threat to my personal security, do I still have to say who I am in my profile?")
    assert answer.citations[0].clause == "5.5"
    assert "personal security" in answer.citations[0].quote
    assert [e.role for e in answer.escalations if e.required] == ["ICT Manager"]
    plain = adviser.ask("do I have to say who I am in my profile")
    assert plain.citations[0].clause == "5.5"
    assert not [e for e in plain.escalations if e.required]


def test_who_do_i_tell_gets_the_people_of_every_cited_clause(adviser):
    """Asking for a person collects the roles of all cited clauses, not only those of the first one."""
    question = "been doxxed and now getting nasty messages, who should i contact"
    answer = adviser.ask(question)
    cited = [c.clause for c in answer.citations]
    assert "7.2" in cited and cited[0] != "7.2"  # the case this rule exists for: 7.2 is cited second
    roles = {e.role.lower() for e in answer.escalations if e.required}
    assert {"political group leader", "democratic services", "police"} <= roles


@pytest.mark.parametrize(
    ("question", "asks"),
    [
        ("who should i contact", True),
        ("who do I tell about this", True),
        ("who to report it to?", True),
        ("I need to report this, tell who?", True),
        ("who's responsible for what I post", False),  # asks whose responsibility it is (5.6), not for a contact
        ("who can help me with trolls", True),
        ("who can see my posts", False),
        ("who are my followers", False),
        ("can I block people who abuse me", False),
    ],
)
def test_asking_for_a_person(question, asks):
    assert bool(_ASKS_WHO.search(question)) is asks


def test_filler_words_and_abuse_slang_do_not_make_a_threat_question_unanswered(adviser):
    """"now" and "horrible" are words the policy never uses; neither may push a report-abuse question into
    an abstention."""
    answer = adviser.ask("my address was posted online and now people are sending me horrible messages, who do I tell?")
    assert answer.answered and answer.citations[0].clause == "7.2"
    assert "police" in {e.role.lower() for e in answer.escalations if e.required}


def test_report_shows_unanswered_question_asked_through_cli(tmp_path):
    """`policybot report` lists a question that `policybot ask` could not answer (the issue's done-when)."""
    env = {**os.environ, "POLICYBOT_DATA_DIR": str(tmp_path / "data"), "POLICYBOT_POLICY_DIR": str(POLICY_DIR),
           "HF_HUB_OFFLINE": "1"}
    asked = subprocess.run([sys.executable, "-m", "bot.cli", "ask", "where do I park my bicycle at county hall"],
                           env=env, cwd=REPO, capture_output=True, timeout=300)
    assert asked.returncode == 0, asked.stderr.decode()
    report = subprocess.run([sys.executable, "-m", "bot.cli", "report", "--json"], env=env, cwd=REPO,
                            capture_output=True, timeout=120)
    assert report.returncode == 0, report.stderr.decode()
    data = json.loads(report.stdout)
    texts = json.dumps(data["unanswered"])
    assert "where do I park my bicycle at county hall" in texts
