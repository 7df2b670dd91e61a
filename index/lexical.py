"""A small Okapi BM25 index (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond")."""

from __future__ import annotations

import math
import re
import threading
from collections import Counter

import numpy as np
import snowballstemmer


class _ThreadStemmer(threading.local):
    """One Snowball stemmer per thread: a stemmer keeps the word it is working on in the object, so one shared by
    the question workers and a background reload stems wrongly or raises IndexError."""

    def __init__(self) -> None:
        self.stemmer = snowballstemmer.stemmer("english")


_STEMMERS = _ThreadStemmer()
# Stems by word: the same few thousand words recur in every clause and question, and a dict lookup is far
# cheaper than the Snowball algorithm. Plain dict reads and writes are atomic, so threads may share it.
_STEM_CACHE: dict[str, str] = {}
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
    stems = []
    for word in words:
        if word in STOPWORDS:
            continue
        stem = _STEM_CACHE.get(word)
        if stem is None:
            stem = _STEMMERS.stemmer.stemWord(word)
            if len(_STEM_CACHE) < 200_000:
                _STEM_CACHE[word] = stem
        stems.append(stem)
    return stems


class BM25:
    """Okapi BM25 over a fixed list of texts; `scores(query)` returns one score per text.

    A document's weight for a term, idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len)), does not depend
    on the query, so it is computed once into a sparse term x document matrix; a query is then one sparse
    row-sum, which keeps scoring 10,000 clauses well under a millisecond.
    """

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        from scipy.sparse import csr_matrix

        self.k1 = k1
        self.b = b
        docs = [Counter(tokenize(t)) for t in texts]
        lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
        avg_length = float(lengths.mean()) if len(docs) else 0.0
        frequency: Counter[str] = Counter()
        for doc in docs:
            frequency.update(doc.keys())
        n = len(docs)
        # The "+1" form of IDF (Lucene's) keeps every weight positive, so a very common term never subtracts.
        self.idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}
        self.vocabulary = {term: i for i, term in enumerate(sorted(frequency))}
        rows, cols, values = [], [], []
        for j, doc in enumerate(docs):
            norm = k1 * (1 - b + b * lengths[j] / (avg_length or 1.0))
            for term, tf in doc.items():
                rows.append(self.vocabulary[term])
                cols.append(j)
                values.append(self.idf[term] * tf * (k1 + 1) / (tf + norm))
        self.size = n
        self.matrix = csr_matrix((values, (rows, cols)), shape=(len(self.vocabulary), n), dtype=np.float64)

    def scores(self, query: str | list[str]) -> np.ndarray:
        terms = tokenize(query) if isinstance(query, str) else query
        ids = sorted({self.vocabulary[t] for t in terms if t in self.vocabulary})
        if not ids:
            return np.zeros(self.size)
        return np.asarray(self.matrix[ids].sum(axis=0)).ravel()

    def known(self, term: str) -> bool:
        return term in self.idf
