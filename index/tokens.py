"""Word-piece token vectors for late interaction: each clause's own MiniLM token vectors, kept beside the index.

A mean-pooled sentence vector blurs a long clause into its average topic, so a question about one detail of it (a
camera, a retention period, a logo) can miss. Late interaction (ColBERT-style MaxSim) keeps the detail: every word
piece of the question is matched to its most similar word piece of a clause. The model is not trained for this, but
its last-layer token vectors still do it well (docs/benchmarks.md, PrivacyQA). index.search decides how the score
is used; this module stores the vectors and computes the matches.

The vectors are written during the build's own forward passes (no second encode), by positional writes into a
float32 .npy file (so, unlike a memory map being written, they never count against the build's resident memory;
float32 because numpy's float16 conversion cost more per question than all the rest of the scoring), and are
memory-mapped when an index is loaded: a question reads only its candidates' rows, and the pages read stay
counted in the process's RSS at most up to the file's size. They cost disk: 1,536 bytes per word piece with this
model (3 MB for the seed policy), 384 once an index has enough pieces to project them onto 96 principal
directions (the build writes the full width first, then the projection). An index whose vectors would exceed
POLICYBOT_TOKEN_VECTORS_MB keeps none and ranks on its sentence vectors and BM25 alone.

Which units are kept: each clause's whole-clause unit (its text with section title and list lead-in), its
curated wordings, and, for a clause long enough to be cut at the encoder's length limit, its sentence blocks
(index.store.late_interaction_units).
"""

from __future__ import annotations

import math
import os
import re
import threading
from pathlib import Path

import numpy as np

from index.embedder import embedding_dimension, max_pieces, preprocessor, unit_length
from index.lexical import bm25_idf

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
_PCA_SAMPLE = 5000  # pieces the directions are estimated from: a dozen per dimension, and little memory
_CHARS_PER_PIECE = 4.0  # English text in this tokenizer's word pieces, roughly: the cheap first estimate
_PLAN_CHUNK = 256  # texts tokenized at a time while planning

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
    if not math.isfinite(megabytes) or megabytes < 0:
        raise TokenBudgetError(f"{TOKEN_BUDGET_ENV}={configured!r} must be a number of megabytes, 0 or more")
    return int(megabytes * (1 << 20))


def word_piece_mask(tokenizer) -> np.ndarray:  # noqa: ANN001
    """True for vocabulary entries that are words or word pieces (starting with a letter or digit); False for
    punctuation and the special tokens ([CLS], [SEP], [PAD]), which carry no detail to match."""
    mask = getattr(tokenizer, "_policybot_piece_mask", None)  # kept on the tokenizer: one per model
    if mask is None:
        vocab = tokenizer.get_vocab()
        mask = np.zeros(max(vocab.values()) + 1, dtype=bool)
        for piece, i in vocab.items():
            mask[i] = bool(re.match(r"(?:##)?[^\W_]", piece))
        tokenizer._policybot_piece_mask = mask
    return mask


def _kept(mask: np.ndarray, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
    return attention.astype(bool) & mask[np.minimum(ids, len(mask) - 1)]


class QuestionTokens:
    """A question's word pieces: vocabulary ids and unit-length float32 vectors, row for row. Taken from the
    encoder's output only when first read: most questions never need them (a close curated wording is trusted)."""

    def __init__(self, ids: np.ndarray | None = None, vectors: np.ndarray | None = None, output: dict | None = None,
                 mask: np.ndarray | None = None) -> None:
        self._pieces = (ids, vectors) if output is None else None
        self._output, self._mask = output, mask
        self._lock = threading.Lock()

    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._pieces is None:
                output = self._output
                ids = output["input_ids"].cpu().numpy()
                keep = _kept(self._mask, ids, output["attention_mask"].cpu().numpy())
                self._pieces = (ids[keep].astype(np.int32),
                                unit_length(output["token_embeddings"].float().cpu().numpy()[keep]))
                self._output = None
            return self._pieces

    @property
    def ids(self) -> np.ndarray:
        return self._read()[0]

    @property
    def vectors(self) -> np.ndarray:
        return self._read()[1]


def encode_question(encoder, text: str) -> tuple[np.ndarray, QuestionTokens]:  # noqa: ANN001
    """One forward pass giving the question's unit-length sentence vector (as `encode(normalize_embeddings=True)`)
    and its word pieces (read lazily)."""
    output = encoder.encode([text], output_value=None)[0]  # (normalize_embeddings is ignored for these outputs)
    vector = unit_length(output["sentence_embedding"].float().cpu().numpy()[None, :])[0]
    return vector, QuestionTokens(output=output, mask=word_piece_mask(encoder.tokenizer))


class TokenWriter:
    """Receives each build batch's forward pass (index.embedder.encode_texts) and writes the kept texts' word-piece
    vectors, unit length, into a float32 file at rows planned before encoding (_RowFile), so any thread may write
    any batch and nothing is held in memory."""

    def __init__(self, encoder, texts: list[str], keep: list[int], folder: Path, budget: int) -> None:  # noqa: ANN001
        self.mask = word_piece_mask(encoder.tokenizer)
        self.slot = {row: k for k, row in enumerate(keep)}  # text row -> its place among the kept texts
        preprocess = preprocessor(encoder)
        dimension = embedding_dimension(encoder)
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
        self.raw: _RowFile | None = None
        if self.fits:
            folder.mkdir(parents=True, exist_ok=True)
            self.raw = _RowFile(folder / _RAW_FILE, max(1, int(self.spans[-1])), dimension)

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
            self.raw.write(start, unit_length(matrix))

    def finish(self, unit_rows: np.ndarray) -> TokenVectors:
        """Save the ids and spans beside the vectors, with each unit's place among the kept texts (-1: a unit whose
        text is not kept), from the text row of each unit (`unit_rows`), and load them back memory-mapped."""
        raw, pieces = self.raw, int(self.spans[-1])
        projection = identity_projection(raw.width)
        if pieces >= _PCA_MIN_PIECES and raw.width > PROJECTED_DIMENSIONS:
            sample = np.linspace(0, pieces - 1, min(pieces, _PCA_SAMPLE)).astype(np.int64)
            projection = _principal_directions(np.stack([raw.read(int(i), 1)[0] for i in sample]))
        if projection.shape[1] - 1 == raw.width:  # kept at full width: the file is already right
            raw.close()
            os.replace(self.folder / _RAW_FILE, self.folder / VECTORS_FILE)
        else:
            stored = _RowFile(self.folder / VECTORS_FILE, raw.rows, projection.shape[1] - 1)
            for start in range(0, raw.rows, 8192):
                stored.write(start, project(raw.read(start, min(8192, raw.rows - start)), projection))
            stored.close()
            raw.close()
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


class _RowFile:
    """A float32 .npy matrix on disk written and read by row ranges with positional reads and writes (any thread,
    any order): unlike a memory map, the rows written never count against the process's resident memory."""

    def __init__(self, path: Path, rows: int, width: int) -> None:
        self.rows, self.width = rows, width
        self.handle = path.open("wb+")
        np.lib.format.write_array_header_1_0(
            self.handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                          "shape": (rows, width)})
        self.offset = self.handle.tell()
        self.handle.truncate(self.offset + rows * width * 4)
        self.handle.flush()

    def write(self, row: int, matrix: np.ndarray) -> None:
        os.pwrite(self.handle.fileno(), np.ascontiguousarray(matrix, dtype=np.float32).tobytes(),
                  self.offset + row * self.width * 4)

    def read(self, row: int, count: int) -> np.ndarray:
        data = os.pread(self.handle.fileno(), count * self.width * 4, self.offset + row * self.width * 4)
        return np.frombuffer(data, dtype=np.float32).reshape(count, self.width)

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


def _principal_directions(sample: np.ndarray) -> np.ndarray:
    """(d, 1 + k): the mean word-piece vector of `sample`, then its top k principal directions, as columns."""
    sample = np.asarray(sample, dtype=np.float32)
    mean = sample.mean(axis=0, dtype=np.float64)
    _, directions = np.linalg.eigh(np.cov(sample - mean, rowvar=False))
    top = directions[:, ::-1][:, :PROJECTED_DIMENSIONS]  # eigh sorts ascending
    return np.hstack([mean[:, None], top]).astype(np.float32)


def identity_projection(dimension: int) -> np.ndarray:
    """The projection that keeps every dimension (zero mean, identity directions)."""
    return np.hstack([np.zeros((dimension, 1)), np.eye(dimension)]).astype(np.float32)


def project(vectors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Word-piece vectors in the index's stored space: centred, projected, unit length."""
    return unit_length((np.asarray(vectors, dtype=np.float32) - projection[:, 0]) @ projection[:, 1:])


def plan_tokens(encoder, texts: list[str], keep: list[int], folder: Path | None) -> TokenWriter | None:  # noqa: ANN001
    """A writer for the word-piece vectors of texts `keep` (rows of `texts`), or None when there is nowhere to keep
    them or they would exceed the budget (estimated from the characters first, so a large index is not tokenized
    twice)."""
    budget = token_budget_bytes()
    if folder is None or budget <= 0 or not keep:
        return None
    dimension = embedding_dimension(encoder)
    longest = max_pieces(encoder)
    estimate = sum(min(len(texts[row]) / _CHARS_PER_PIECE, longest) for row in keep)
    if stored_bytes(int(estimate), dimension) > 2 * budget:
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
        dimension = projection.shape[0]
        self.full_width = projection.shape[1] == dimension + 1 and np.array_equal(
            projection, identity_projection(dimension))

    @classmethod
    def load(cls, folder: Path) -> TokenVectors:
        """Memory-map the vectors in `folder` (ValueError / OSError when a file is missing or not an array)."""
        vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
        ids = np.load(folder / IDS_FILE)
        spans = np.load(folder / SPANS_FILE)
        slots = np.load(folder / UNIT_SLOTS_FILE)
        projection = np.load(folder / PROJECTION_FILE)
        if vectors.dtype != np.float32 or vectors.ndim != 2 or projection.ndim != 2 or (
                projection.shape != (projection.shape[0], vectors.shape[1] + 1)):
            raise ValueError("the token vectors or their projection have the wrong shape")
        integer = all(np.issubdtype(a.dtype, np.integer) and a.ndim == 1 for a in (ids, spans, slots))
        if not integer or len(spans) < 1 or int(spans[0]) != 0 or np.any(np.diff(spans) < 0):
            raise ValueError("token vector files do not agree with each other")
        if int(spans[-1]) != len(ids) or len(ids) > len(vectors) or (len(ids) and int(ids.min()) < 0):
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
            starts = self.spans[self.slots[kept]]
            lengths = self.spans[self.slots[kept] + 1] - starts
            # every kept unit's rows, end to end: its start, plus 0, 1, 2 ... within it
            offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            rows = np.repeat(starts, lengths) + offsets
            owners = np.repeat(unit_clause[kept].astype(np.int64), lengths)
            pairs = np.unique(owners * vocabulary + self.ids[rows].astype(np.int64))
            self._idf = bm25_idf(clauses, np.bincount(pairs % vocabulary, minlength=vocabulary).astype(np.float64))
        return self._idf

    def piece_idf(self, ids: np.ndarray, unit_clause: np.ndarray, clauses: int) -> np.ndarray:
        """IDF of the question's pieces; a piece no clause has gets the largest possible weight."""
        table = self.idf(unit_clause, clauses)
        unseen = bm25_idf(clauses, 0)
        return np.where(ids < len(table), table[np.minimum(ids, len(table) - 1)], unseen)

    def question(self, question: QuestionTokens) -> np.ndarray:
        """The question's piece vectors in the stored space (see project; as they are, at full width)."""
        if self.full_width:
            return question.vectors
        return project(question.vectors, self.projection)

    def maxsim(self, question: np.ndarray, weights: np.ndarray, units: list[int], idf: np.ndarray,
               idf_power: float, backward: float) -> np.ndarray:
        """Each unit's late-interaction score, from the question's projected piece vectors (`question`): every
        question piece's best cosine with a piece of the unit, averaged with `weights` (summing to 1), mixed with
        `backward` x the other way round (every unit piece's best cosine with a question piece, averaged with
        its IDF^`idf_power`), which counts what a unit says that the question did not ask about. A unit without
        kept pieces scores -1.

        The units' rows are read as runs of adjacent rows (a clause's own texts are stored one after another), each
        run multiplied in place rather than gathered into a copy first."""
        slots = self.slots[np.asarray(units, dtype=np.int64)]
        starts = np.where(slots >= 0, self.spans[np.maximum(slots, 0)], 0)
        ends = np.where(slots >= 0, self.spans[np.maximum(slots, 0) + 1], 0)
        scores = np.full(len(units), -1.0, dtype=np.float32)
        present = np.flatnonzero(ends > starts)
        if not len(present) or not len(question):
            return scores
        present = present[np.argsort(starts[present], kind="stable")]
        first, last = starts[present], ends[present]
        breaks = np.flatnonzero(first[1:] != last[:-1]) + 1  # where the next unit's rows do not follow on
        runs = list(zip(first[np.r_[0, breaks]].tolist(), last[np.r_[breaks - 1, len(present) - 1]].tolist(),
                        strict=True))
        similarity = np.concatenate([self.vectors[a:b] @ question.T for a, b in runs])  # (unit pieces, q pieces)
        lengths = last - first
        segments = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        forward = np.maximum.reduceat(similarity, segments, axis=0) @ weights.astype(np.float32)
        if backward:
            own = np.concatenate([self._piece_weights(idf, idf_power)[a:b] for a, b in runs])
            back = np.add.reduceat(similarity.max(axis=1) * own, segments) / np.add.reduceat(own, segments)
            forward = (1 - backward) * forward + backward * back
        scores[present] = forward
        return scores

    def _piece_weights(self, idf: np.ndarray, idf_power: float) -> np.ndarray:
        """IDF^`idf_power` of every stored piece, row for row (computed once per table and power)."""
        cached = getattr(self, "_weights", None)
        if cached is None or cached[0] is not idf or cached[1] != idf_power:
            cached = self._weights = (idf, idf_power, idf[np.minimum(self.ids, len(idf) - 1)] ** idf_power)
        return cached[2]
