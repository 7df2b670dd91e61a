"""Hybrid retrieval: dense (FAISS) and lexical (BM25) scores fused per clause."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index.store import PolicyIndex
from index.tokens import QuestionTokens


@dataclass(frozen=True)
class Ranking:
    """Clauses best first, with each one's fused score and its dense score (the best cosine of its units), and the
    clause the first stage (cosine and BM25) put first: whether to answer at all is judged on its cosine, which the
    abstention thresholds are calibrated for; late interaction only chooses among clauses.

    `fused` is the score the order follows: cosine + BM25 for the first stage; after a late-interaction re-ranking,
    the re-ranking score for the clauses re-ranked (a MaxSim, like a cosine between -1 and 1 and of a similar
    spread) and, for those after them, the first-stage score capped at the lowest of those."""

    order: list[int]
    fused: dict[int, float]
    dense: dict[int, float]
    anchor: int

    @property
    def anchor_dense(self) -> float:
        return self.dense[self.anchor]


def dense_by_clause(index: PolicyIndex, vector: np.ndarray, candidates: int,
                    best_unit: dict[int, int] | None = None) -> dict[int, float]:
    """Each clause's best unit cosine among the `candidates` nearest units (clauses outside them are absent);
    `best_unit`, when given, receives which unit that was."""
    ids, scores = index.nearest_units(vector, candidates)
    # FAISS returns them best first, so each clause's first unit is its best.
    clauses, first = np.unique(index.unit_clause[ids], return_index=True)
    by_score = np.argsort(first)  # keep the clauses best first, as FAISS ranked their units
    clauses, first = clauses[by_score], first[by_score]
    if best_unit is not None:
        best_unit.update(zip(clauses.tolist(), ids[first].tolist(), strict=True))
    return dict(zip(clauses.tolist(), scores[first].tolist(), strict=True))


@dataclass(frozen=True)
class LateInteraction:
    """How the late-interaction score (index.tokens) re-ranks the first stage's best clauses."""

    weight: float = 1.0  # share of the late score in the re-ranking score; the dense cosine has the rest
    lexical_weight: float = 0.0  # weight of the max-normalised BM25 score added to it
    depth: int = 64  # first-stage clauses re-ranked
    idf_power: float = 2.0  # question pieces are weighted by IDF to this power
    backward: float = 0.2  # share of the unit-to-question direction in the late score (TokenVectors.maxsim)
    # Question pieces carrying less than this share of the IDF weight are left out: they hardly move the score
    # (PrivacyQA nDCG@10 0.4506 with all, 0.4511 at 0.02, 0.4519 at 0.04, 0.4456 at 0.06) and each costs a
    # column of the product.
    min_piece_share: float = 0.03
    # No re-ranking when the unit nearest the question is a curated wording at least this close (None: always
    # re-rank). The adviser sets it to its weak abstention threshold, see Adviser._late.
    trust_curated: float | None = None


def single_thread_blas() -> None:
    """Run numpy's (and FAISS's) BLAS on one thread, once per process. Every product a question needs is small (a
    few hundred word pieces by the question's), and a multi-threaded BLAS whose second thread waits for a busy core
    turned a 0.2 ms product into 8 ms on a two-core machine under load; the encoder's threads are torch's own
    (OpenMP) and are not affected."""
    global _BLAS_LIMITED
    if not _BLAS_LIMITED:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _BLAS_LIMITED = True


_BLAS_LIMITED = False


def late_scores(index: PolicyIndex, question: QuestionTokens, clauses: list[int], best_unit: dict[int, int],
                late: LateInteraction) -> np.ndarray:
    """Each clause's late-interaction score (index.tokens.TokenVectors.maxsim): the best of its whole text's (and
    of its sentence blocks', for a clause long enough to be cut at the encoder's limit) and, when the unit nearest
    the question was one of its curated wordings, that wording's. The question's pieces are weighted by
    IDF^`idf_power` over the index's clauses, so rare words decide and "the"/"can"/"my" hardly count; pieces with
    less than `late.min_piece_share` of the weight are left out (the heaviest always stays)."""
    tokens = index.tokens
    idf = tokens.idf(index.unit_clause, len(index.clauses))
    weights = tokens.piece_idf(question.ids, index.unit_clause, len(index.clauses)) ** late.idf_power
    kept = weights >= late.min_piece_share * weights.sum()
    kept[int(np.argmax(weights))] = True
    question = QuestionTokens(question.ids[kept], question.vectors[kept])
    weights = weights[kept]
    units, owners = [], []
    for position, clause in enumerate(clauses):
        for unit in dict.fromkeys((*index.text_units_of_clause(clause), best_unit[clause])):
            if tokens.slots[unit] >= 0:
                units.append(unit)
                owners.append(position)
    best = np.full(len(clauses), -1.0)
    scores = tokens.maxsim(tokens.question(question), weights / weights.sum(), units, idf, late.idf_power,
                           late.backward)
    np.maximum.at(best, owners, scores)
    return best


def hybrid_rank(
    index: PolicyIndex,
    vector: np.ndarray,
    terms: list[str],
    candidates: int = 64,
    lexical_weight: float = 0.25,
    question: QuestionTokens | None = None,
    late: LateInteraction | None = None,
) -> Ranking:
    """Rank clauses by dense cosine plus `lexical_weight` times BM25 normalised by the query's best BM25 score;
    then, when the index keeps word-piece vectors and the question's are given, re-rank the best `late.depth` of
    them by late interaction (`late_scores`) mixed with the cosine and BM25. `Ranking.dense` stays the cosine,
    which abstention is calibrated on.

    A convex-style sum rather than reciprocal-rank fusion: RRF throws away how far apart the scores are, and on
    a short policy the dense scores' gaps carry most of the signal (RRF measured worse on both our gold set and
    PrivacyQA, see docs/benchmarks.md). Only clauses the dense search reached are ranked, so BM25 re-orders the
    semantic candidates rather than surfacing clauses that merely share a word.
    """
    best_unit: dict[int, int] = {}
    dense = dense_by_clause(index, vector, candidates, best_unit)
    lexical = index.lexical.scores(terms)
    top_lexical = float(lexical.max()) if len(lexical) else 0.0
    bm25 = {clause: (lexical[clause] / top_lexical if top_lexical > 0 else 0.0) for clause in dense}
    fused = {clause: score + lexical_weight * bm25[clause] for clause, score in dense.items()}
    order = sorted(fused, key=fused.get, reverse=True)
    first_stage = Ranking(order, fused, dense, order[0] if order else -1)
    if late is None or question is None or index.tokens is None or not order:
        return first_stage
    top_clause = max(dense, key=dense.get)
    trusted = late.trust_curated is not None and dense[top_clause] >= late.trust_curated
    if (trusted and index.units[best_unit[top_clause]].kind == "curated") or not len(question.ids):
        return first_stage
    head, tail = order[: late.depth], order[late.depth:]
    matched = late_scores(index, question, head, best_unit, late)
    rescored = {
        clause: (1 - late.weight) * dense[clause] + late.weight * float(score) + late.lexical_weight * bm25[clause]
        for clause, score in zip(head, matched, strict=True)
    }
    head = sorted(head, key=rescored.get, reverse=True)
    floor = min(rescored.values())  # the clauses not re-ranked stay below those that were
    rescored.update({clause: min(fused[clause], floor) for clause in tail})
    return Ranking(head + tail, rescored, dense, order[0])

