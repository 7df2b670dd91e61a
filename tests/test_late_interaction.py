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


def test_principal_directions_keep_cosines_of_vectors_in_their_span():
    """For a large index the stored vectors are PCA-projected: vectors that live in a subspace of fewer
    dimensions than are kept lose nothing (cosines between centred vectors are unchanged); a small index keeps
    every dimension (the identity projection only rescales to unit length)."""
    rng = np.random.default_rng(7)
    basis = np.linalg.qr(rng.normal(size=(384, 40)))[0]
    data = (rng.normal(size=(25000, 40)) @ basis.T).astype(np.float32)
    projection = token_module._principal_directions(data)
    assert projection.shape == (384, 1 + token_module.PROJECTED_DIMENSIONS)
    centred = data - projection[:, 0]
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    projected = project(data, projection)
    pairs = rng.integers(0, len(data), size=(200, 2))
    before = np.sum(centred[pairs[:, 0]] * centred[pairs[:, 1]], axis=1)
    after = np.sum(projected[pairs[:, 0]] * projected[pairs[:, 1]], axis=1)
    assert np.allclose(before, after, atol=1e-4)
    identity = token_module.identity_projection(384)
    assert np.allclose(project(data[:5], identity), data[:5] / np.linalg.norm(data[:5], axis=1, keepdims=True),
                       atol=1e-6)


def test_a_question_of_many_rare_words_keeps_its_heaviest_piece(built, encoder):
    """However the IDF weight spreads (60 words no policy uses, each under the cut-off share), the heaviest piece
    stays, so the re-ranked clauses get real late-interaction scores, not the -1 of a clause with nothing to
    match."""
    words = " ".join(f"zorblax{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(60)) + " logo"
    vector, question = encode_question(encoder, words)
    ranking = hybrid_rank(built, vector, [], 64, 0.25, question, LateInteraction(depth=8))
    head = [ranking.fused[c] for c in ranking.order[:8]]
    assert min(head) > -1.0 and len(set(head)) > 1


def test_a_long_clause_keeps_its_sentence_blocks_for_late_interaction(policy_copy, tmp_path, encoder):
    """A clause long enough to be cut at the encoder's 256-piece limit keeps its sentence blocks' pieces too, so a
    detail near its end still reaches the re-ranking; a short clause keeps only its whole text."""
    sentences = " ".join(f"Councillors must record gift number {n} in the register within 28 days." for n in range(40))
    (policy_copy / "gifts.md").write_text(
        "# Gifts Policy\n\n1 GIFTS\n\n- 1.1 " + sentences + " Hospitality from suppliers needs the Monitoring "
        "Officer's approval.\n- 1.2 Keep it short.\n", encoding="utf-8")
    index = load_or_build(policy_copy, tmp_path / "idx", encoder, MODEL)
    long_clause = next(i for i, c in enumerate(index.clauses) if c.number == "1.1" and "gift" in c.text)
    blocks = [u for u in index.units_of_clause(long_clause) if index.units[u].kind == "sentence"]
    assert blocks and all(index.tokens.slots[u] >= 0 for u in blocks)
    whole = index.units_of_clause(long_clause)[0]
    start, end = index.tokens.span(whole)
    assert end - start < 256  # the whole clause was cut ...
    tail = blocks[-1]
    assert "Monitoring" in index.units[tail].text and index.tokens.span(tail)[1] > index.tokens.span(tail)[0]


def test_changing_the_budget_rebuilds_only_when_it_changes_the_decision(policy_copy, tmp_path, encoder,
                                                                        monkeypatch):
    """Pieces kept, then POLICYBOT_TOKEN_VECTORS_MB=0: rebuilt without them; back to the default: rebuilt with
    them; an unchanged budget loads the saved build."""
    index_dir = tmp_path / "idx"
    first = load_or_build(policy_copy, index_dir, encoder, MODEL)
    assert first.tokens is not None
    assert load_or_build(policy_copy, index_dir, encoder, MODEL).manifest["built_at"] == first.manifest["built_at"]
    monkeypatch.setenv("POLICYBOT_TOKEN_VECTORS_MB", "0")
    assert load_or_build(policy_copy, index_dir, encoder, MODEL).tokens is None
    monkeypatch.delenv("POLICYBOT_TOKEN_VECTORS_MB")
    again = load_or_build(policy_copy, index_dir, encoder, MODEL)
    assert again.tokens is not None and load_index(index_dir).tokens is not None


def test_saving_a_loaded_index_again_leaves_its_build_whole(policy_copy, tmp_path, encoder):
    """save_index moves a fresh build's scratch files but copies those of an index loaded from a build, so the
    build it came from still verifies."""
    from index.store import save_index

    load_or_build(policy_copy, tmp_path / "idx", encoder, MODEL)
    loaded = load_index(tmp_path / "idx")
    source = loaded.tokens.folder
    save_index(loaded, tmp_path / "copy")
    assert all((source / name).exists() for name in token_module.FILES)
    assert load_index(tmp_path / "copy").tokens is not None
    assert load_index(tmp_path / "idx").tokens is not None


def test_a_large_index_stores_projected_pieces_that_match_a_fresh_encode(policy_copy, tmp_path, encoder,
                                                                         monkeypatch):
    """Past the piece count for projecting (lowered here so the seed policy passes it), the stored pieces have 96
    dimensions, written row by row and projected by the build, and equal a fresh encode projected the same way."""
    monkeypatch.setattr(token_module, "_PCA_MIN_PIECES", 1000)
    index = load_or_build(policy_copy, tmp_path / "idx", encoder, MODEL)
    tokens = index.tokens
    assert tokens.vectors.shape == (len(tokens.ids), token_module.PROJECTED_DIMENSIONS)
    assert tokens.projection.shape == (384, token_module.PROJECTED_DIMENSIONS + 1)
    unit = index.units_of_clause(len(index.clauses) // 2)[0]
    start, end = tokens.span(unit)
    _, fresh = encode_question(encoder, index.units[unit].text)
    agreement = np.sum(tokens.vectors[start:end] * project(fresh.vectors, tokens.projection), axis=1)
    assert agreement.min() > 0.98
    assert not (tokens.folder / token_module._RAW_FILE).exists()
