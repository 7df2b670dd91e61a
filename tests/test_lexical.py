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
