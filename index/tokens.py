"""Word-piece token vectors for late interaction: each clause's own MiniLM token vectors, kept beside the index.

A mean-pooled sentence vector blurs a long clause into its average topic, so a question about one detail of it (a
camera, a retention period, a logo) can miss. Late interaction (ColBERT-style MaxSim) keeps the detail: every word
piece of the question is matched to its most similar word piece of a clause. The model is not trained for this, but
its last-layer token vectors still do it well (docs/benchmarks.md, PrivacyQA). index.search decides how the score
is used; this module stores the vectors and computes the matches.

The vectors are written during the build's own forward passes (no second encode), straight into a memory-mapped
float32 file (float32 because numpy's float16 conversion cost more per question than all the rest of the scoring),
and memory-mapped again when an index is loaded: a question touches only its candidates' pages, so they hardly
count against the process's memory. They cost disk: 1,536 bytes per word piece with this model (3 MB for the seed
policy), 384 once an index has enough pieces to project them onto 96 principal directions. An index whose vectors
would exceed POLICYBOT_TOKEN_VECTORS_MB keeps none and ranks on its sentence vectors and BM25 alone.

Which units are kept: each clause's whole-clause unit (its text with section title and list lead-in; its sentence
blocks hold no piece it does not) and the curated wordings (index.store.embed_documents).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

TOKEN_BUDGET_ENV = "POLICYBOT_TOKEN_VECTORS_MB"
DEFAULT_TOKEN_BUDGET_MB = 128
VECTORS_FILE = "token_vectors.npy"
IDS_FILE = "token_ids.npy"
SPANS_FILE = "token_spans.npy"
UNIT_SLOTS_FILE = "unit_slots.npy"
PROJECTION_FILE = "token_projection.npy"
FILES = (VECTORS_FILE, IDS_FILE, SPANS_FILE, UNIT_SLOTS_FILE, PROJECTION_FILE)
_RAW_FILE = "token_vectors_full.npy"  # the encoder's full-width vectors, during the build only
# The stored vectors are projected onto the index's own top principal directions of its word pieces (PCA), this
# many, and made unit length again: a question's products cost a quarter, and on PrivacyQA 96 dimensions scored as
# well as all 384 (48 did too; 32 lost 0.015 of nDCG@10). An index with fewer pieces than _PCA_MIN_PIECES keeps
# all dimensions: too few to estimate the directions from, and cheap anyway.
PROJECTED_DIMENSIONS = 96
_PCA_MIN_PIECES = 20000
_PCA_SAMPLE = 20000
_CHARS_PER_PIECE = 4.0  # English text in this tokenizer's word pieces, roughly: the cheap first estimate
_PLAN_CHUNK = 256  # texts tokenized at a time while planning

_PIECE_MASKS: dict[int, np.ndarray] = {}


class TokenBudgetError(ValueError):
    """POLICYBOT_TOKEN_VECTORS_MB is not a number of megabytes."""


def token_budget_bytes() -> int:
    """The most disk an index's token vectors may take (POLICYBOT_TOKEN_VECTORS_MB; 0 turns them off)."""
    configured = os.environ.get(TOKEN_BUDGET_ENV, "").strip()
    if not configured:
        return DEFAULT_TOKEN_BUDGET_MB << 20
    try:
        megabytes = float(configured)
    except ValueError as exc:
        raise TokenBudgetError(f"{TOKEN_BUDGET_ENV}={configured!r} is not a number of megabytes") from exc
    if megabytes < 0 or megabytes != megabytes:
        raise TokenBudgetError(f"{TOKEN_BUDGET_ENV}={configured!r} must be 0 or more")
    return int(megabytes * (1 << 20))


def word_piece_mask(tokenizer) -> np.ndarray:  # noqa: ANN001
    """True for vocabulary entries that are words or word pieces (starting with a letter or digit); False for
    punctuation and the special tokens ([CLS], [SEP], [PAD]), which carry no detail to match."""
    mask = _PIECE_MASKS.get(id(tokenizer))
    if mask is None:
        vocab = tokenizer.get_vocab()
        mask = np.zeros(max(vocab.values()) + 1, dtype=bool)
        for piece, i in vocab.items():
            mask[i] = bool(re.match(r"(?:##)?[^\W_]", piece))
        _PIECE_MASKS[id(tokenizer)] = mask
    return mask


def _kept(mask: np.ndarray, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
    return attention.astype(bool) & mask[np.minimum(ids, len(mask) - 1)]


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


class QuestionTokens:
    """A question's word pieces: vocabulary ids and unit-length float32 vectors, row for row. Taken from the
    encoder's output only when first read: most questions never need them (a close curated wording is trusted)."""

    def __init__(self, ids: np.ndarray | None = None, vectors: np.ndarray | None = None, output: dict | None = None,
                 mask: np.ndarray | None = None) -> None:
        self._ids, self._vectors, self._output, self._mask = ids, vectors, output, mask

    def _extract(self) -> None:
        output = self._output
        ids = output["input_ids"].numpy()
        keep = _kept(self._mask, ids, output["attention_mask"].numpy())
        self._ids = ids[keep].astype(np.int32)
        self._vectors = _unit_rows(output["token_embeddings"].float().numpy()[keep])
        self._output = None

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._extract()
        return self._ids

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._extract()
        return self._vectors


def encode_question(encoder, text: str) -> tuple[np.ndarray, QuestionTokens]:  # noqa: ANN001
    """One forward pass giving the question's unit-length sentence vector (as `encode(normalize_embeddings=True)`)
    and its word pieces (read lazily)."""
    output = encoder.encode([text], output_value=None, normalize_embeddings=True)[0]
    vector = output["sentence_embedding"].float().numpy().astype(np.float32)
    return vector, QuestionTokens(output=output, mask=word_piece_mask(encoder.tokenizer))


class TokenWriter:
    """Receives each build batch's forward pass (index.embedder.encode_texts) and writes the kept texts' word-piece
    vectors, unit length, into a memory-mapped float32 file at rows planned before encoding, so any thread may
    write any batch and nothing is held in memory."""

    def __init__(self, encoder, texts: list[str], keep: list[int], folder: Path, budget: int) -> None:  # noqa: ANN001
        self.mask = word_piece_mask(encoder.tokenizer)
        self.slot = {row: k for k, row in enumerate(keep)}  # text row -> its place among the kept texts
        preprocess = getattr(encoder, "preprocess", None) or encoder.tokenize
        dimension = (getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension)()
        ids, counts = [], np.zeros(len(keep), dtype=np.int64)
        for start in range(0, len(keep), _PLAN_CHUNK):
            features = preprocess([texts[row] for row in keep[start:start + _PLAN_CHUNK]])
            batch_ids, attention = features["input_ids"].numpy(), features["attention_mask"].numpy()
            for j in range(len(batch_ids)):
                kept = batch_ids[j][_kept(self.mask, batch_ids[j], attention[j])]
                ids.append(kept.astype(np.int32))
                counts[start + j] = len(kept)
        self.spans = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
        self.fits = stored_bytes(int(self.spans[-1]), dimension) <= budget
        self.folder = folder
        self.vectors = None
        if self.fits:
            folder.mkdir(parents=True, exist_ok=True)
            self.vectors = np.lib.format.open_memmap(
                folder / _RAW_FILE, mode="w+", dtype=np.float32, shape=(max(1, int(self.spans[-1])), dimension)
            )

    def put(self, rows: list[int], features: dict, output: dict) -> None:
        """Write the word-piece vectors of those of texts `rows` that are kept, from one forward pass (`output` of
        `encoder(features)`)."""
        ids, attention = features["input_ids"].numpy(), features["attention_mask"].numpy()
        tokens = output["token_embeddings"]
        for j, row in enumerate(rows):
            slot = self.slot.get(row)
            if slot is None:
                continue
            keep = _kept(self.mask, ids[j], attention[j])
            matrix = tokens[j].float().numpy()[keep]
            start, end = int(self.spans[slot]), int(self.spans[slot + 1])
            if end - start != len(matrix):
                raise RuntimeError(f"text {row}: {len(matrix)} word pieces encoded, {end - start} planned")
            self.vectors[start:end] = _unit_rows(matrix)

    def finish(self, unit_rows: np.ndarray) -> TokenVectors:
        """Save the ids and spans beside the vectors, with each unit's place among the kept texts (-1: a unit whose
        text is not kept), from the text row of each unit (`unit_rows`), and load them back memory-mapped."""
        self.vectors.flush()
        projection = _principal_directions(self.vectors, int(self.spans[-1]))
        stored = np.lib.format.open_memmap(self.folder / VECTORS_FILE, mode="w+", dtype=np.float32,
                                           shape=(len(self.vectors), projection.shape[1] - 1))
        for start in range(0, len(self.vectors), 8192):
            stored[start:start + 8192] = project(self.vectors[start:start + 8192], projection)
        stored.flush()
        del stored, self.vectors
        (self.folder / _RAW_FILE).unlink()
        np.save(self.folder / PROJECTION_FILE, projection)
        np.save(self.folder / IDS_FILE, self.ids)
        np.save(self.folder / SPANS_FILE, self.spans)
        np.save(self.folder / UNIT_SLOTS_FILE, np.array([self.slot.get(int(r), -1) for r in unit_rows], dtype=np.int64))
        return TokenVectors.load(self.folder)


def stored_bytes(pieces: int, dimension: int) -> int:
    """What `pieces` word-piece vectors take on disk: float32, projected for a large index (_principal_directions)."""
    width = dimension if pieces < _PCA_MIN_PIECES else min(dimension, PROJECTED_DIMENSIONS)
    return pieces * width * 4


def _principal_directions(vectors: np.ndarray, pieces: int) -> np.ndarray:
    """(d, 1 + k): the mean word-piece vector, then the top k principal directions, as columns (PCA over up to
    _PCA_SAMPLE evenly spaced pieces); the identity for a small index."""
    dimension = vectors.shape[1]
    if pieces < _PCA_MIN_PIECES or dimension <= PROJECTED_DIMENSIONS:
        return np.hstack([np.zeros((dimension, 1)), np.eye(dimension)]).astype(np.float32)
    sample = np.asarray(vectors[np.linspace(0, pieces - 1, min(pieces, _PCA_SAMPLE)).astype(np.int64)], np.float64)
    mean = sample.mean(axis=0)
    _, directions = np.linalg.eigh(np.cov(sample - mean, rowvar=False))
    top = directions[:, ::-1][:, :PROJECTED_DIMENSIONS]  # eigh sorts ascending
    return np.hstack([mean[:, None], top]).astype(np.float32)


def project(vectors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Word-piece vectors in the index's stored space: centred, projected, unit length."""
    return _unit_rows((np.asarray(vectors, dtype=np.float32) - projection[:, 0]) @ projection[:, 1:])


def plan_tokens(encoder, texts: list[str], keep: list[int], folder: Path | None) -> TokenWriter | None:  # noqa: ANN001
    """A writer for the word-piece vectors of texts `keep` (rows of `texts`), or None when there is nowhere to keep
    them or they would exceed the budget (estimated from the characters first, so a large index is not tokenized
    twice)."""
    budget = token_budget_bytes()
    if folder is None or budget <= 0 or not keep:
        return None
    dimension = (getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension)()
    if stored_bytes(int(sum(len(texts[row]) for row in keep) / _CHARS_PER_PIECE), dimension) > 2 * budget:
        return None
    writer = TokenWriter(encoder, texts, keep, folder, budget)
    return writer if writer.fits else None


class TokenVectors:
    """The word pieces of the units late interaction reads (index.store.embed_documents chooses them): float32
    unit vectors, memory-mapped, and vocabulary ids, stored once per distinct text. Unit u's text is slots[u]
    (-1: none kept), whose pieces are rows spans[k]:spans[k + 1]."""

    def __init__(self, vectors: np.ndarray, ids: np.ndarray, spans: np.ndarray, slots: np.ndarray,
                 projection: np.ndarray, folder: Path) -> None:
        self.vectors = vectors
        self.projection = projection
        self.ids = ids
        self.spans = spans
        self.slots = slots
        self.folder = folder
        self._idf: np.ndarray | None = None

    @classmethod
    def load(cls, folder: Path) -> TokenVectors:
        """Memory-map the vectors in `folder` (ValueError / OSError when a file is missing or not an array)."""
        vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
        ids = np.load(folder / IDS_FILE)
        spans = np.load(folder / SPANS_FILE)
        slots = np.load(folder / UNIT_SLOTS_FILE)
        projection = np.load(folder / PROJECTION_FILE)
        if projection.ndim != 2 or projection.shape[1] - 1 != vectors.shape[1]:
            raise ValueError("the token projection does not fit the stored token vectors")
        if vectors.dtype != np.float32 or len(spans) < 1 or int(spans[-1]) != len(ids) or len(ids) > len(vectors):
            raise ValueError("token vector files do not agree with each other")
        if len(slots) and not -1 <= int(slots.min()) <= int(slots.max()) < len(spans) - 1:
            raise ValueError("a unit names a text the token vectors do not have")
        return cls(np.asarray(vectors), ids, spans, slots, projection, folder)  # a plain view: cheaper to slice

    def span(self, unit: int) -> tuple[int, int]:
        slot = int(self.slots[unit])
        return (int(self.spans[slot]), int(self.spans[slot + 1])) if slot >= 0 else (0, 0)

    def idf(self, unit_clause: np.ndarray, clauses: int) -> np.ndarray:
        """BM25-style IDF of every vocabulary id over clauses (a clause's pieces: those of all its kept units), as
        BM25's own IDF is; computed once."""
        if self._idf is None:
            vocabulary = int(self.ids.max()) + 1 if len(self.ids) else 1
            kept = np.flatnonzero(self.slots >= 0)
            lengths = self.spans[self.slots[kept] + 1] - self.spans[self.slots[kept]]
            rows = np.concatenate([np.arange(*self.span(u)) for u in kept]) if len(kept) else np.zeros(0, np.int64)
            owners = np.repeat(unit_clause[kept].astype(np.int64), lengths)
            pairs = np.unique(owners * vocabulary + self.ids[rows].astype(np.int64))
            df = np.bincount(pairs % vocabulary, minlength=vocabulary)
            self._idf = np.log(1 + (clauses - df + 0.5) / (df + 0.5))
        return self._idf

    def piece_idf(self, ids: np.ndarray, unit_clause: np.ndarray, clauses: int) -> np.ndarray:
        """IDF of the question's pieces; a piece no clause has gets the largest possible weight."""
        table = self.idf(unit_clause, clauses)
        unseen = np.log(1 + (clauses + 0.5) / 0.5)
        return np.where(ids < len(table), table[np.minimum(ids, len(table) - 1)], unseen)

    def question(self, question: QuestionTokens) -> np.ndarray:
        """The question's piece vectors in the stored space (see project)."""
        return project(question.vectors, self.projection)

    def maxsim(self, question: np.ndarray, weights: np.ndarray, units: list[int], idf: np.ndarray,
               idf_power: float, backward: float) -> np.ndarray:
        """Each unit's late-interaction score, from the question's projected piece vectors (`question`): every
        question piece's best cosine with a piece of the unit, averaged with `weights` (summing to 1), mixed with
        `backward` x the other way round (every unit piece's best cosine with a question piece, averaged with
        its IDF^`idf_power`), which counts what a unit says that the question did not ask about. A unit without
        kept pieces scores -1."""
        spans = [self.span(u) for u in units]
        present = [i for i, (a, b) in enumerate(spans) if b > a]
        scores = np.full(len(units), -1.0, dtype=np.float32)
        if not present or not len(question):
            return scores
        rows = np.concatenate([np.arange(spans[i][0], spans[i][1]) for i in present])
        similarity = self.vectors[rows] @ question.T  # (unit pieces, question pieces)
        starts = np.cumsum([0] + [spans[i][1] - spans[i][0] for i in present[:-1]])
        forward = np.maximum.reduceat(similarity, starts, axis=0) @ weights.astype(np.float32)
        if backward:
            own = idf[np.minimum(self.ids[rows], len(idf) - 1)] ** idf_power
            back = np.add.reduceat(similarity.max(axis=1) * own, starts) / np.add.reduceat(own, starts)
            forward = (1 - backward) * forward + backward * back
        scores[present] = forward
        return scores
