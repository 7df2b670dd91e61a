"""Late interaction: the word-piece vectors kept beside the index, their scoring, and when they are (not) used."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bot.adviser import Adviser
from index import tokens as token_module
from index.search import LateInteraction, dense_by_clause, hybrid_rank
from index.store import load_index, load_or_build
from index.tokens import TokenBudgetError, encode_question, project, word_piece_mask

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture
def built(policy_copy, tmp_path, encoder):
    return load_or_build(policy_copy, tmp_path / "idx", encoder, MODEL)


def test_stored_pieces_are_the_encoders_own_for_each_clause(built, encoder):
    """Each clause's stored pieces are the word pieces of its whole-clause text (no [CLS], [SEP] or punctuation),
    with the vectors a fresh encode of that text gives, and the build wrote the scratch files into the build."""
    tokens = built.tokens
    assert tokens is not None and built.manifest["token_pieces"] == len(tokens.ids) > 0
    mask = word_piece_mask(encoder.tokenizer)
    for clause in (0, len(built.clauses) // 2, len(built.clauses) - 1):
        unit = built.units_of_clause(clause)[0]
        assert built.units[unit].kind == "clause"
        start, end = tokens.span(unit)
        _, fresh = encode_question(encoder, built.units[unit].text)
        assert np.array_equal(tokens.ids[start:end], fresh.ids)
        assert mask[tokens.ids[start:end]].all()
        stored = tokens.vectors[start:end]
        agreement = np.sum(stored * project(fresh.vectors, tokens.projection), axis=1)
        assert agreement.min() > 0.99  # the build may encode in bfloat16
    sentence_units = [u for u, unit in enumerate(built.units) if unit.kind == "sentence"]
    assert sentence_units and all(tokens.slots[u] == -1 for u in sentence_units)
    assert not list(tokens.folder.parent.glob(".tokens-*"))


def test_maxsim_matches_a_direct_computation(built, encoder):
    """TokenVectors.maxsim against the definition, written out with loops: forward (each question piece's best
    cosine in the unit, IDF-weighted) mixed with backward (each unit piece's best cosine in the question)."""
    tokens = built.tokens
    _, question = encode_question(encoder, "can I put the council crest on my facebook page")
    idf = tokens.idf(built.unit_clause, len(built.clauses))
    weights = idf[question.ids] ** 2
    weights = weights / weights.sum()
    units = [built.units_of_clause(c)[0] for c in range(0, len(built.clauses), 7)]
    got = tokens.maxsim(tokens.question(question), weights, units, idf, 2.0, 0.2)
    q = project(question.vectors, tokens.projection)
    for unit, score in zip(units, got, strict=True):
        start, end = tokens.span(unit)
        doc = tokens.vectors[start:end]
        forward = sum(w * max(float(d @ qi) for d in doc) for qi, w in zip(q, weights, strict=True))
        own = idf[tokens.ids[start:end]] ** 2
        backward = sum(o * max(float(d @ qi) for qi in q) for d, o in zip(doc, own, strict=True)) / own.sum()
        assert score == pytest.approx(0.8 * forward + 0.2 * backward, abs=1e-4)


def test_reranking_changes_order_not_whether_to_answer(built, encoder):
    """The re-ranked Ranking keeps the first stage's best clause as its anchor (abstention is judged on its
    cosine), ranks every first-stage clause once, and puts the re-ranked head before the rest."""
    vector, question = encode_question(encoder, "do i need permission to share photos of people at events")
    first = hybrid_rank(built, vector, ["photos"], 64, 0.25)
    late = hybrid_rank(built, vector, ["photos"], 64, 0.25, question, LateInteraction(depth=8))
    assert late.anchor == first.order[0]
    assert sorted(late.order) == sorted(first.order)
    assert set(late.order[:8]) == set(first.order[:8])
    assert late.order[8:] == first.order[8:]
    head = [late.fused[c] for c in late.order[:8]]
    assert head == sorted(head, reverse=True)
    assert max(late.fused[c] for c in late.order[8:]) <= min(head)


def test_a_close_curated_wording_is_trusted_without_reranking(built, encoder):
    """A question matching an officer's curated wording at least as closely as `trust_curated` keeps the first
    stage's order; below it, the same question is re-ranked."""
    wording = next(u for u in built.units if u.kind == "curated")
    vector, question = encode_question(encoder, wording.text)
    best: dict[int, int] = {}
    dense = dense_by_clause(built, vector, 64, best)
    top = max(dense, key=dense.get)
    assert built.units[best[top]].kind == "curated" and dense[top] > 0.95
    first = hybrid_rank(built, vector, [], 64, 0.25)
    trusted = hybrid_rank(built, vector, [], 64, 0.25, question, LateInteraction(trust_curated=0.9))
    assert trusted.order == first.order and trusted.fused == first.fused
    untrusted = hybrid_rank(built, vector, [], 64, 0.25, question, LateInteraction(trust_curated=None))
    assert untrusted.fused != first.fused


def test_no_budget_keeps_no_pieces_and_the_adviser_still_answers(policy_copy, tmp_path, encoder, settings,
                                                                  monkeypatch):
    """POLICYBOT_TOKEN_VECTORS_MB=0 (or an index over the budget) stores no word pieces; ranking falls back to the
    cosine and BM25, and answers still come."""
    monkeypatch.setenv("POLICYBOT_TOKEN_VECTORS_MB", "0")
    index = load_or_build(policy_copy, tmp_path / "idx", encoder, MODEL)
    assert index.tokens is None and index.manifest["token_pieces"] == 0
    assert not list((tmp_path / "idx" / "builds").glob("*/token_vectors.npy"))
    assert load_index(tmp_path / "idx").tokens is None
    local = dataclasses.replace(settings, policy_dir=policy_copy, data_dir=tmp_path)
    answer = Adviser.from_index(local, encoder, index).ask("can I put the council logo on my facebook page?")
    assert answer.answered and answer.citations[0].clause in ("5.3", "5.4")


@pytest.mark.parametrize("value", ["lots", "-5", "nan"])
def test_a_bad_budget_is_a_clear_error(value, monkeypatch):
    monkeypatch.setenv("POLICYBOT_TOKEN_VECTORS_MB", value)
    with pytest.raises(TokenBudgetError, match="POLICYBOT_TOKEN_VECTORS_MB"):
        token_module.token_budget_bytes()


def test_principal_directions_keep_cosines_of_vectors_in_their_span(monkeypatch):
    """For a large index the stored vectors are PCA-projected: vectors that live in a subspace of fewer
    dimensions than are kept lose nothing (cosines between centred vectors are unchanged); a small index keeps
    every dimension (the identity)."""
    rng = np.random.default_rng(7)
    basis = np.linalg.qr(rng.normal(size=(384, 40)))[0]
    data = (rng.normal(size=(25000, 40)) @ basis.T).astype(np.float32)
    projection = token_module._principal_directions(data, len(data))
    assert projection.shape == (384, 1 + token_module.PROJECTED_DIMENSIONS)
    centred = data - projection[:, 0]
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    projected = project(data, projection)
    pairs = rng.integers(0, len(data), size=(200, 2))
    before = np.sum(centred[pairs[:, 0]] * centred[pairs[:, 1]], axis=1)
    after = np.sum(projected[pairs[:, 0]] * projected[pairs[:, 1]], axis=1)
    assert np.allclose(before, after, atol=1e-4)
    small = token_module._principal_directions(data[:100], 100)
    assert np.allclose(project(data[:5], small), data[:5] / np.linalg.norm(data[:5], axis=1, keepdims=True),
                       atol=1e-6)
