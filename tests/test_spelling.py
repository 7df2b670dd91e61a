"""Spelling correction towards the policies' own words, with pyspellchecker's real English dictionary."""

from __future__ import annotations

import re

import pytest

from bot.spelling import Speller

POLICY_WORDS = re.findall(
    r"[A-Za-z]+",
    "Councillors must make clear who they are in the profile of any account. Councillors should not breach the "
    "code on Facebook or with their followers, and should count the cost. Report hacked accounts and threats.",
)


@pytest.fixture(scope="module")
def speller() -> Speller:
    return Speller(POLICY_WORDS + ["insta"])


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("facebok", "facebook"),  # a policy word one edit away
        ("folowers", "followers"),  # the policy's word, not the commoner English "flowers"
        ("breech", "breach"),  # a rare English word next to a much commoner policy word
        ("acount", "account"),  # "count" is one edit away too, but typists keep the first letter
        ("acounts", "accounts"),
        ("hackd", "hacked"),
        ("threts", "threats"),
        ("dress", None),  # a real word is left alone
        ("insta", None),  # slang the synonym table knows is never "corrected"
        ("cllr", None),  # too short to correct safely
    ],
)
def test_suggestions(speller, typed, expected):
    assert speller.suggest(typed) == expected


def test_correct_keeps_everything_but_the_misspelt_words(speller):
    assert speller.correct("my acount got hackd, what now?") == "my account got hacked, what now?"
