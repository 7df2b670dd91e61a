"""A small Okapi BM25 index (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond")."""

from __future__ import annotations

import math
import re
from collections import Counter

import snowballstemmer

_STEMMER = snowballstemmer.stemmer("english")
_TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not of off on once
    only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves im ive id dont cant can't whats s t
    allowed ok okay please thanks hi hey us get got also may might must shall""".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-case word stems without stopwords ("Councillors' postings" -> ["councillor", "post"])."""
    words = _TOKEN.findall(text.lower().replace("’", "'").replace("'", ""))
    return _STEMMER.stemWords([w for w in words if w not in STOPWORDS])


class BM25:
    """Okapi BM25 over a fixed list of texts; `scores(query)` returns one score per text."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self.docs = [Counter(tokenize(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg_length = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        frequency: Counter[str] = Counter()
        for doc in self.docs:
            frequency.update(doc.keys())
        n = len(self.docs)
        # The "+1" form of IDF (Lucene's) keeps every weight positive, so a very common term never subtracts.
        self.idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for i, doc in enumerate(self.docs):
            for term, tf in doc.items():
                self.postings.setdefault(term, []).append((i, tf))

    def scores(self, query: str | list[str]) -> list[float]:
        terms = tokenize(query) if isinstance(query, str) else query
        result = [0.0] * len(self.docs)
        for term in set(terms):
            idf = self.idf.get(term)
            if idf is None:
                continue
            for i, tf in self.postings[term]:
                norm = self.k1 * (1 - self.b + self.b * self.lengths[i] / (self.avg_length or 1))
                result[i] += idf * tf * (self.k1 + 1) / (tf + norm)
        return result

    def known(self, term: str) -> bool:
        return term in self.idf
