"""A small Okapi BM25 index (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond")."""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterable

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


def bm25_idf(n, df):  # noqa: ANN001, ANN201 - numbers or numpy arrays alike
    """BM25's "+1" IDF of a term found in `df` of `n` documents: never negative, largest for the rarest."""
    return np.log(1 + (n - df + 0.5) / (df + 0.5)) if isinstance(df, np.ndarray) else math.log(
        1 + (n - df + 0.5) / (df + 0.5))


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
    on the query, so it is computed once into postings: for each term, the documents containing it (ascending) and
    their weights, laid end to end in two flat arrays with `offsets` marking where each term's run starts. A query
    concatenates its terms' runs (in vocabulary order) and sums them per document with one np.bincount, which adds
    each document's weights in the same order a sparse row-sum would, so the scores are the same to the last bit.
    """

    def __init__(self, texts: Iterable[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        docs = [Counter(tokenize(t)) for t in texts]
        lengths = np.fromiter((sum(d.values()) for d in docs), dtype=np.float64, count=len(docs))
        avg_length = float(lengths.mean()) if len(docs) else 0.0
        frequency: Counter[str] = Counter()
        for doc in docs:
            frequency.update(doc.keys())
        n = len(docs)
        # The "+1" form of IDF (Lucene's) keeps every weight positive, so a very common term never subtracts.
        self.idf = {term: bm25_idf(n, df) for term, df in frequency.items()}
        self.vocabulary = {term: i for i, term in enumerate(sorted(frequency))}
        # Counting sort into the postings: each term's run gets its slot from the running document frequency.
        counts = np.zeros(len(self.vocabulary) + 1, dtype=np.int64)
        for term, df in frequency.items():
            counts[self.vocabulary[term] + 1] = df
        self.offsets = np.cumsum(counts)
        fill = self.offsets[:-1].copy()
        self.postings = np.empty(int(self.offsets[-1]), dtype=np.int32)
        self.weights = np.empty(int(self.offsets[-1]), dtype=np.float64)
        for j, doc in enumerate(docs):
            norm = k1 * (1 - b + b * lengths[j] / (avg_length or 1.0))
            for term, tf in doc.items():
                i = self.vocabulary[term]
                slot = fill[i]
                fill[i] = slot + 1
                self.postings[slot] = j
                self.weights[slot] = self.idf[term] * tf * (k1 + 1) / (tf + norm)
        self.size = n

    def scores(self, query: str | list[str]) -> np.ndarray:
        terms = tokenize(query) if isinstance(query, str) else query
        ids = sorted({self.vocabulary[t] for t in terms if t in self.vocabulary})
        if not ids:
            return np.zeros(self.size)
        offsets = self.offsets
        if len(ids) == 1:
            runs = slice(offsets[ids[0]], offsets[ids[0] + 1])
            return np.bincount(self.postings[runs], weights=self.weights[runs], minlength=self.size)
        picked = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in ids])
        return np.bincount(self.postings[picked], weights=self.weights[picked], minlength=self.size)

    def known(self, term: str) -> bool:
        return term in self.idf
