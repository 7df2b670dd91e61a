"""Build, persist, verify and load the policy index (FAISS vectors + clause metadata + manifest).

Layout under the data folder:  index/CURRENT names the live build; index/builds/<id>/ holds faiss.index,
units.json, manifest.json and, when they fit their budget, the units' word-piece vectors (index.tokens). A build
is written to its own folder and only then made live by atomically replacing CURRENT, so a process killed
mid-build leaves the previous index serving, never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from index.clauses import Clause, Document, DocumentMeta
from index.embedder import choose_precision, encode_texts, max_pieces, release_free_memory
from index.lexical import BM25, tokenize
from index.readers import fingerprint, load_documents, policy_files
from index.tokens import FILES as TOKEN_FILES
from index.tokens import TokenVectors, plan_tokens, token_budget_bytes
from index.units import CuratedQuestion, Unit, build_units, load_curated

log = logging.getLogger(__name__)
FORMAT_VERSION = 7
CURATED_FILE = "curated_questions.toml"
VECTORS_NAME = TOKEN_FILES[0]


class IndexCorrupt(Exception):
    pass


# BM25's b: how much a longer clause's term counts are discounted. Clauses and sentences are short passages on one
# point, so a longer one is more detailed, not more diluted; measured: b = 0 against the usual 0.75 gave gold
# hit@1 0.931 -> 0.940 and PrivacyQA nDCG@10 0.376 -> 0.387 (BM25 alone 0.344 -> 0.372), docs/benchmarks.md.
BM25_LENGTH_NORMALISATION = 0.0


@dataclass
class PolicyIndex:
    """Everything a search needs, in memory: documents, clauses, units, their vectors in FAISS, and BM25."""

    documents: list[Document]
    clauses: list[Clause]
    units: list[Unit]
    faiss_index: object
    manifest: dict
    curated: list[CuratedQuestion]
    build_seconds: float = 0.0
    tokens: TokenVectors | None = None  # word-piece vectors for late interaction, when the index keeps them

    def __post_init__(self) -> None:
        self._units_by_clause: dict[int, list[int]] = {}
        self._text_units_by_clause: dict[int, list[int]] = {}  # its whole text and sentence blocks: not curated
        for position, unit in enumerate(self.units):
            self._units_by_clause.setdefault(unit.clause, []).append(position)
            if unit.kind != "curated":
                self._text_units_by_clause.setdefault(unit.clause, []).append(position)
        self.lexical = BM25([self._lexical_text(i) for i in range(len(self.clauses))], b=BM25_LENGTH_NORMALISATION)
        self.doc_by_id = {d.doc_id: d for d in self.documents}
        self.unit_clause = np.array([u.clause for u in self.units], dtype=np.int64)
        self._unit_terms: dict[int, frozenset[str]] = {}

    def _lexical_text(self, i: int) -> str:
        clause = self.clauses[i]
        curated = " ".join(self.units[u].text for u in self.units_of_clause(i) if self.units[u].kind == "curated")
        return f"{clause.section_title} {clause.text} {curated}"

    def units_of_clause(self, clause: int) -> list[int]:
        return self._units_by_clause.get(clause, [])

    def text_units_of_clause(self, clause: int) -> list[int]:
        """The clause's units made from its own text (the whole clause, its sentence blocks), not curated ones."""
        return self._text_units_by_clause.get(clause, [])

    def unit_terms(self, unit_id: int) -> frozenset[str]:
        """A unit's BM25 terms, computed once (the answering-segment choice asks for them on every question)."""
        terms = self._unit_terms.get(unit_id)
        if terms is None:
            terms = self._unit_terms[unit_id] = frozenset(tokenize(self.units[unit_id].text))
        return terms

    def nearest_units(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest units by cosine similarity, best first, as arrays (unit ids, cosines). FAISS pads a short result
        list with id -1: dropped."""
        k = max(1, min(k, len(self.units)))
        scores, ids = self.faiss_index.search(vector.reshape(1, -1).astype(np.float32), k)
        found = ids[0] >= 0
        return ids[0][found], scores[0][found]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    result = {}
    for package in ("faiss-cpu", "sentence-transformers", "torch", "numpy"):
        try:
            result[package] = version(package)
        except PackageNotFoundError:
            result[package] = "missing"
    return result


def embed_documents(documents: list[Document], curated: list[CuratedQuestion], encoder, progress: bool = False,  # noqa: ANN001, ANN201
                    report: dict | None = None, token_folder: Path | None = None):
    """Units for the documents' clauses, embedded into an exact inner-product FAISS index (vectors are unit length,
    so inner product is cosine). Returns (clauses, units, faiss_index, tokens): `tokens` are the units' word-piece
    vectors, written into `token_folder` by the same forward passes, or None when no folder is given or they exceed
    their budget (index.tokens). `report`, when given, receives the precision the texts were encoded in (see
    embedder.choose_precision) and what the token vectors take."""
    import faiss

    clauses, units = build_units(documents, curated)
    # Councils repeat boilerplate across documents: encode each distinct text once.
    distinct = list(dict.fromkeys(u.text for u in units))
    started = time.perf_counter()
    precision = choose_precision(encoder, distinct)
    row = {text: i for i, text in enumerate(distinct)}
    writer = plan_tokens(encoder, distinct, [row[u.text] for u in late_interaction_units(units, encoder)],
                         token_folder)
    encoded = encode_texts(encoder, distinct, precision, progress, tokens=writer)
    del distinct
    # Each unit's vector is its text's row of `encoded`. FAISS gets them in slices, so a second full copy of the
    # vectors (repeated texts included) never sits beside the index's own: the build's memory peaks here.
    order = np.fromiter((row[u.text] for u in units), dtype=np.int64, count=len(units))
    del row
    tokens = writer.finish(order) if writer is not None else None
    if report is not None:
        report["encode_precision"] = precision
        report["encode_seconds"] = round(time.perf_counter() - started, 3)
        report["token_pieces"] = len(tokens.ids) if tokens is not None else 0
        report["token_bytes"] = int(tokens.vectors.nbytes) if tokens is not None else 0
        report["token_budget"] = token_budget_bytes()
    units = assign_curated_segments(units, _UnitRows(encoded, order))
    faiss_index = faiss.IndexFlatIP(encoded.shape[1])
    for start in range(0, len(order), 4096):
        faiss_index.add(np.ascontiguousarray(encoded[order[start:start + 4096]]))
    del encoded, order
    release_free_memory()
    return clauses, units, faiss_index, tokens


def late_interaction_units(units: list[Unit], encoder) -> list[Unit]:  # noqa: ANN001
    """The units whose word pieces late interaction reads: each clause's whole-clause unit (its text with section
    title and list lead-in) and its curated wordings; a clause's sentence blocks only when the whole clause is long
    enough to be cut at the encoder's length limit (they then hold pieces the cut whole-clause unit lost)."""
    longest = 3 * max_pieces(encoder)  # characters: about 3 or more per word piece
    long_clauses = {u.clause for u in units if u.kind == "clause" and len(u.text) > longest}
    return [u for u in units if u.kind != "sentence" or u.clause in long_clauses]


def policy_fingerprint(policy_dir: Path) -> str:
    return fingerprint(policy_files(policy_dir), [policy_dir / CURATED_FILE, policy_dir / "background_questions.txt"])


def build_index(policy_dir: Path, encoder, model_name: str, progress: bool = False,  # noqa: ANN001
                token_folder: Path | None = None) -> PolicyIndex:
    """Parse `policy_dir` and embed every unit; the word-piece vectors, when kept, are written into `token_folder`
    (save_index moves them into the build). Raises readers.PolicyError for unusable policy files."""
    started = time.perf_counter()
    documents = load_documents(policy_dir)
    curated = load_curated(policy_dir / CURATED_FILE)
    encoding: dict = {}
    clauses, units, faiss_index, tokens = embed_documents(documents, curated, encoder, progress, report=encoding,
                                                          token_folder=token_folder)
    manifest = {
        "format": FORMAT_VERSION,
        "policy_hash": policy_fingerprint(policy_dir),
        "model": model_name,
        "dimension": int(faiss_index.d),
        "versions": _versions(),
        "documents": len(documents),
        "clauses": len(clauses),
        "units": len(units),
        **encoding,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest["background"] = background_scores(policy_dir, encoder, faiss_index)
    seconds = time.perf_counter() - started
    manifest["build_seconds"] = round(seconds, 3)
    return PolicyIndex(documents, clauses, units, faiss_index, manifest, curated, seconds, tokens)


BACKGROUND_FILE = Path(__file__).with_name("background_questions.txt")


def read_background_questions(policy_dir: Path) -> list[str]:
    """Off-topic questions (ours, plus any a council adds in policy_text/background_questions.txt)."""
    questions = []
    for path in (BACKGROUND_FILE, policy_dir / "background_questions.txt"):
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    questions.append(line.strip())
    return questions


def background_scores(policy_dir: Path, encoder, faiss_index) -> list[float]:  # noqa: ANN001
    """The best cosine each off-topic background question reaches in this index, sorted: how high an
    unanswerable question typically scores against these policies with this model, for calibrating abstention.
    (Raw questions are encoded; spelling and synonyms do not change their scores enough to matter.)"""
    questions = read_background_questions(policy_dir)
    if not questions:
        return []
    vectors = encoder.encode(questions, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    scores, _ = faiss_index.search(vectors.astype(np.float32), 1)
    return sorted(round(float(s), 4) for s in scores[:, 0])


class _UnitRows:
    """Unit vectors read through the unit -> distinct-text row map: `rows[i]` or `rows[[i, j]]`, no copy kept."""

    def __init__(self, encoded: np.ndarray, order: np.ndarray) -> None:
        self.encoded = encoded
        self.order = order

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        return self.encoded[self.order[key]]


def assign_curated_segments(units: list[Unit], vectors: np.ndarray | _UnitRows) -> list[Unit]:
    """Give each curated wording the segment of its clause it is closest to, so a question matching a wording
    about 5.5's security exception quotes (and escalates from) that exception, not the rule before it."""
    segments_of: dict[int, list[int]] = {}
    for position, unit in enumerate(units):
        if unit.kind == "sentence":
            segments_of.setdefault(unit.clause, []).append(position)
    result = list(units)
    for position, unit in enumerate(units):
        candidates = segments_of.get(unit.clause)
        if unit.kind != "curated" or not candidates:
            continue
        scores = vectors[candidates] @ vectors[position]
        result[position] = replace(unit, segment=units[candidates[int(np.argmax(scores))]].segment)
    return result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_index(index: PolicyIndex, index_dir: Path) -> Path:
    """Write the index to a fresh build folder, then make it live by atomically replacing CURRENT."""
    import faiss

    builds = index_dir / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    build_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    staging = builds / f".{build_id}.partial"
    staging.mkdir()
    faiss.write_index(index.faiss_index, str(staging / "faiss.index"))
    payload = {
        "documents": [
            {"doc_id": d.doc_id, "path": d.path, "meta": asdict(d.meta), "clauses": [asdict(c) for c in d.clauses]}
            for d in index.documents
        ],
        "units": [asdict(u) for u in index.units],
        "curated": [asdict(q) for q in index.curated],
    }
    (staging / "units.json").write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    names = ["faiss.index", "units.json"]
    if index.tokens is not None:
        scratch = index.tokens.folder.name.endswith(".partial")  # a build's own files: move them
        for name in TOKEN_FILES:  # renamed (an open memory map follows the file), else copied
            source, target = index.tokens.folder / name, staging / name
            if scratch:
                shutil.move(str(source), str(target))
            else:
                shutil.copyfile(source, target)
        names += TOKEN_FILES
    manifest = dict(index.manifest)
    manifest["files"] = {name: _sha256(staging / name) for name in names}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    for name in [*names, "manifest.json"]:
        with (staging / name).open("rb") as handle:
            os.fsync(handle.fileno())
    final = builds / build_id
    staging.rename(final)
    if index.tokens is not None:
        index.tokens = TokenVectors.load(final)  # (load_or_build removes the emptied scratch folder)
    pointer = index_dir / "CURRENT.tmp"
    pointer.write_text(build_id, encoding="utf-8")
    os.replace(pointer, index_dir / "CURRENT")
    _prune(builds, keep=build_id)
    return final


def _prune(builds: Path, keep: str) -> None:
    """Remove old builds and abandoned partial ones, keeping the live build and the one before it."""
    finished = sorted((p for p in builds.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    for old in finished[:-2]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
    for partial in builds.glob(".*.partial"):
        if time.time() - partial.stat().st_mtime > 3600:
            shutil.rmtree(partial, ignore_errors=True)


def load_index(index_dir: Path) -> PolicyIndex:
    """Load the live build, verifying every file against the manifest's checksums. Raises IndexCorrupt."""
    import faiss

    try:
        build_id = (index_dir / "CURRENT").read_text(encoding="utf-8").strip()
        folder = index_dir / "builds" / build_id
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT_VERSION:
            raise IndexCorrupt(f"index format {manifest.get('format')} is not {FORMAT_VERSION}")
        for name, expected in manifest["files"].items():
            if _sha256(folder / name) != expected:
                raise IndexCorrupt(f"{name} does not match its checksum (truncated or corrupt)")
        payload = json.loads((folder / "units.json").read_text(encoding="utf-8"))
        faiss_index = faiss.read_index(str(folder / "faiss.index"))
        tokens = TokenVectors.load(folder) if VECTORS_NAME in manifest["files"] else None
    except IndexCorrupt:
        raise
    except FileNotFoundError as exc:
        raise IndexCorrupt(f"missing index file: {exc.filename}") from exc
    except Exception as exc:
        raise IndexCorrupt(f"unreadable index ({type(exc).__name__}: {exc})") from exc
    documents = []
    for d in payload["documents"]:
        meta = d["meta"]
        meta["raw"] = tuple(tuple(pair) for pair in meta.get("raw", ()))
        clauses = tuple(Clause(**c) for c in d["clauses"])
        documents.append(Document(d["doc_id"], d["path"], DocumentMeta(**meta), clauses))
    clauses = [c for d in documents for c in d.clauses]
    units = [Unit(**u) for u in payload["units"]]
    if faiss_index.ntotal != len(units):
        raise IndexCorrupt(f"FAISS holds {faiss_index.ntotal} vectors for {len(units)} units")
    if tokens is not None and len(tokens.slots) != len(units):
        raise IndexCorrupt(f"token vectors cover {len(tokens.slots)} units of {len(units)}")
    curated = [CuratedQuestion(**q) for q in payload.get("curated", [])]
    return PolicyIndex(documents, clauses, units, faiss_index, manifest, curated, manifest.get("build_seconds", 0.0),
                       tokens)


def _token_budget_changed(manifest: dict) -> bool:
    """Would the word-piece budget now decide differently? Kept pieces that no longer fit (or a budget of 0), or
    none kept under a smaller budget than now."""
    budget = token_budget_bytes()
    if manifest.get("token_pieces"):
        return budget < manifest.get("token_bytes", 0) or budget <= 0
    return budget > manifest.get("token_budget", 0)


def load_or_build(policy_dir: Path, index_dir: Path, encoder, model_name: str, progress: bool = False,  # noqa: ANN001
                  rebuild: bool = False) -> PolicyIndex:
    """The index for the current policy files: loaded when its manifest matches, otherwise (or when `rebuild`)
    built and saved.

    A corrupt or truncated index is logged and rebuilt, never a crash.
    """
    wanted_hash = policy_fingerprint(policy_dir)
    index = None
    try:
        if not rebuild:
            index = load_index(index_dir)
    except IndexCorrupt as exc:
        if (index_dir / "CURRENT").exists():
            log.warning("index at %s is unusable (%s); rebuilding", index_dir, exc)
    if index is not None:
        manifest = index.manifest
        if manifest.get("policy_hash") == wanted_hash and manifest.get("model") == model_name:
            if not _token_budget_changed(manifest):
                return index
            log.info("POLICYBOT_TOKEN_VECTORS_MB changed whether word pieces fit; rebuilding")
        else:
            log.info("policy files or model changed since the index was built; rebuilding")
    scratch = index_dir / "builds" / f".tokens-{os.getpid()}-{time.monotonic_ns()}.partial"
    try:
        index = build_index(policy_dir, encoder, model_name, progress=progress, token_folder=scratch)
        save_index(index, index_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    release_free_memory()  # the build's and the save's temporaries, so a long-running server does not carry them
    return index
