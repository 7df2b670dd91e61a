"""BM25 scoring checked against an independent implementation (bm25s) as an oracle."""

from __future__ import annotations

import numpy as np
import pytest

from index.lexical import BM25, tokenize

CORPUS = [
    "Councillors must not use Councillor or Cllr as part of their username on any social media account.",
    "Use of the Council's logo on a personal account or website should only occur with written permission.",
    "The logo should not be used on sites which are unrelated to the Council's official position.",
    "Any Councillor receiving threats, abuse or harassment should report it to the police.",
    "They should use a secure password and never share their password with anyone.",
    "Councillors must not publish or report on meetings which are private or internal.",
]


@pytest.mark.parametrize("query", ["logo on my website", "password", "threats and harassment police",
                                   "private meetings report", "unknownword"])
def test_bm25_matches_bm25s_lucene_scores(query):
    """Our BM25 equals bm25s' Lucene variant up to its constant (k1 + 1) factor, on the same tokens."""
    bm25s = pytest.importorskip("bm25s")
    ours = BM25(CORPUS, k1=1.2, b=0.75)
    oracle = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    oracle.index([tokenize(text) for text in CORPUS], show_progress=False)
    expected = oracle.get_scores(tokenize(query))
    np.testing.assert_allclose(ours.scores(query) / (1.2 + 1), expected, rtol=1e-5, atol=1e-8)


def test_bm25_empty_and_repeated_terms():
    """A query of unknown words scores zero everywhere; repeating a query word does not change the scores."""
    index = BM25(CORPUS)
    assert not index.scores("zzz qqq").any()
    np.testing.assert_allclose(index.scores("logo logo logo"), index.scores("logo"))


def test_tokenize_is_thread_safe():
    """Question workers and a background reload tokenize at once; every thread must get the single-thread stems."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [text + f" running harassment councillors {i}" for i, text in enumerate(CORPUS * 60)]
    expected = [tokenize(t) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(tokenize, texts))
    assert results == expected


def test_bm25_postings_sum_exactly_like_a_sparse_row_sum():
    """Scoring through the postings gives, to the last bit, the scores of a term x document matrix's row-sum
    (what the index used before): a speed change must not move any ranking."""
    from scipy.sparse import csr_matrix

    texts = [f"{text} {CORPUS[(i * 7) % len(CORPUS)]} clause {i % 13}" for i, text in enumerate(CORPUS * 40)]
    index = BM25(texts)
    rows, cols, values = [], [], []
    for i in range(len(index.vocabulary)):
        for k in range(index.offsets[i], index.offsets[i + 1]):
            rows.append(i)
            cols.append(int(index.postings[k]))
            values.append(float(index.weights[k]))
    matrix = csr_matrix((values, (rows, cols)), shape=(len(index.vocabulary), len(texts)))
    for query in ("logo on my website", "password password", "threats police report meetings councillors", "13"):
        ids = sorted({index.vocabulary[t] for t in tokenize(query) if t in index.vocabulary})
        expected = np.asarray(matrix[ids].sum(axis=0)).ravel()
        np.testing.assert_array_equal(index.scores(query), expected)
    # and each weight is the BM25 formula's, so the row-sum reference is not just our own arrays read back
    tf_docs = [tokenize(t) for t in texts]
    average = sum(map(len, tf_docs)) / len(tf_docs)
    term = tokenize("password")[0]
    doc = next(j for j, tokens in enumerate(tf_docs) if term in tokens)
    tf, length = tf_docs[doc].count(term), len(tf_docs[doc])
    weight = index.idf[term] * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / average))
    assert index.scores([term])[doc] == pytest.approx(weight, rel=1e-12)


def test_speller_cache_answers_as_the_uncached_speller_and_stays_bounded(monkeypatch):
    """The speller remembers suggestions per word: the same answers as working each out afresh, in any order,
    and no more than CACHE_SIZE words remembered."""
    from bot.spelling import Speller

    words = ["facebok", "folowers", "breech", "dress", "insta", "councillor", "passwrd", "logo", "lgo", "websit"]
    speller = Speller(" ".join(CORPUS + ["Councillors must not breach the code on Facebook or with followers"]).split())
    fresh = {word: speller._suggest(word) for word in words}
    assert fresh["facebok"] == "facebook" and fresh["dress"] is None  # the fixture exercises both outcomes
    monkeypatch.setattr(Speller, "CACHE_SIZE", 4)
    for word in words + words[::-1] + words:
        assert speller.suggest(word) == fresh[word]
        assert len(speller._cache) <= 4
    assert speller.correct("can I post on facebok") == "can I post on facebook"
