"""Spelling correction for questions, biased towards the policies' own vocabulary ("facebok" -> "facebook")."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from threading import Lock

_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")


class Speller:
    """Corrects words that are neither English (pyspellchecker's dictionary) nor the policies' or synonym table's
    own words, at edit distance 1 only: cheap enough to run on every question, and conservative, so slang the
    synonym table knows ("insta", "cllr") and real words ("dress") are never "corrected"."""

    CACHE_SIZE = 20_000  # words remembered with their suggestion; questions reuse a small vocabulary

    def __init__(self, vocabulary: Iterable[str]) -> None:
        from spellchecker import SpellChecker

        self._checker = SpellChecker(distance=1)
        self._own = {w.lower() for w in vocabulary if w.isalpha() and len(w) > 2}
        # suggest() is a pure function of the word for this instance: remember its answers (least recently used
        # dropped first). Question workers share the speller, hence the lock around the bookkeeping.
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._cache_lock = Lock()

    def _frequency(self, word: str) -> int:
        return self._checker.word_frequency[word] if word in self._checker else 0

    def suggest(self, word: str) -> str | None:
        """The correction for one lower-case word, or None to leave it alone (remembered per word; see
        `_suggest`)."""
        with self._cache_lock:
            if word in self._cache:
                self._cache.move_to_end(word)
                return self._cache[word]
        suggestion = self._suggest(word)
        with self._cache_lock:
            self._cache[word] = suggestion
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return suggestion

    def _suggest(self, word: str) -> str | None:
        """The correction for one lower-case word, or None to leave it alone.

        An unknown word becomes its closest policy word if there is one (the policies' words outrank general
        English: "folowers" -> "followers", not "flowers"), else the commonest English word one edit away, a
        candidate that keeps the word's first letter always preferred ("acount" -> "account", not "count"). A rare
        English word becomes a policy word one edit away that is ten times commoner ("breech" -> "breach")."""
        if len(word) < 4 or "'" in word or word in self._own:
            return None
        frequency = self._frequency(word)
        if frequency >= 2000:
            return None
        edits = self._checker.edit_distance_1(word)

        def likelihood(candidate: str) -> tuple[bool, int]:
            # People rarely mistype a word's first letter ("acount" is "account", not "count"), so a candidate
            # that keeps it comes first; among those, the commonest.
            return candidate[0] == word[0], self._frequency(candidate)

        own = sorted((c for c in edits if c in self._own), key=likelihood, reverse=True)
        if frequency:
            if own and frequency < 2000 and self._frequency(own[0]) >= 10 * frequency:
                return own[0]
            return None
        if own:
            return own[0]
        english = [c for c in edits if c in self._checker]
        return max(english, key=likelihood) if english else None

    def correct(self, text: str) -> str:
        def fix(match: re.Match[str]) -> str:
            word = match.group(0)
            suggestion = self.suggest(word.lower().replace("’", "'"))
            return suggestion or word

        return _WORD.sub(fix, text)
