"""The on-disk index: persistence, rebuild on change, corruption recovery, FAISS padding."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from index.store import IndexCorrupt, build_index, load_index, load_or_build, save_index
from tests.conftest import REPO


def _build(policy_dir, index_dir, encoder):
    return load_or_build(policy_dir, index_dir, encoder, "all-MiniLM-L6-v2")


def test_index_is_persisted_and_reloaded_without_rebuilding(policy_copy, tmp_path, encoder):
    """A second start loads the saved index (same build) instead of re-embedding everything."""
    first = _build(policy_copy, tmp_path / "idx", encoder)
    built_at = first.manifest["built_at"]
    pointer = (tmp_path / "idx" / "CURRENT").read_text()
    second = _build(policy_copy, tmp_path / "idx", encoder)
    assert (tmp_path / "idx" / "CURRENT").read_text() == pointer
    assert second.manifest["built_at"] == built_at
    assert second.manifest["policy_hash"] == first.manifest["policy_hash"]
    assert {"faiss-cpu", "sentence-transformers", "torch"} <= set(second.manifest["versions"])
    assert second.faiss_index.ntotal == len(second.units) > len(second.clauses)


def test_index_rebuilds_when_a_policy_file_changes(policy_copy, tmp_path, encoder):
    """Editing a policy file changes the hash, so the next load rebuilds and sees the new text."""
    _build(policy_copy, tmp_path / "idx", encoder)
    (policy_copy / "extra-policy.md").write_text(
        "# Dog Walking Policy\n\n1 DOGS\n\n- 1.1 Councillors must keep dogs on a lead in the council chamber.\n",
        encoding="utf-8",
    )
    rebuilt = _build(policy_copy, tmp_path / "idx", encoder)
    assert any("dogs on a lead" in c.text for c in rebuilt.clauses)
    assert rebuilt.manifest["documents"] == 2


@pytest.mark.parametrize("name", ["faiss.index", "token_vectors.npy", "unit_slots.npy"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_corrupt_index_is_detected_and_rebuilt(policy_copy, tmp_path, encoder, caplog, damage, name):
    """A truncated, overwritten or missing index file (the vectors, or the word pieces kept for late interaction)
    is detected by its checksum, logged, and rebuilt."""
    index_dir = tmp_path / "idx"
    _build(policy_copy, index_dir, encoder)
    build = index_dir / "builds" / (index_dir / "CURRENT").read_text()
    target = build / name
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "garbage":
        target.write_bytes(b"\x00garbage" * 10)
    else:
        target.unlink()
    with pytest.raises(IndexCorrupt):
        load_index(index_dir)
    with caplog.at_level(logging.WARNING):
        recovered = _build(policy_copy, index_dir, encoder)
    assert "unusable" in caplog.text
    assert recovered.faiss_index.ntotal == len(recovered.units)
    assert recovered.tokens is not None and len(recovered.tokens.slots) == len(recovered.units)
    load_index(index_dir)  # the rebuilt index verifies


def test_search_never_returns_faiss_padding(policy_copy, tmp_path, encoder):
    """Asking FAISS for more neighbours than there are units pads with id -1; those must never be returned."""
    index = build_index(policy_copy, encoder, "all-MiniLM-L6-v2")
    vector = encoder.encode(["logo"], normalize_embeddings=True)[0]
    ids, scores = index.nearest_units(vector, len(index.units) + 50)
    assert len(ids) == len(scores) == len(index.units)
    assert all(0 <= unit_id < len(index.units) for unit_id in ids.tolist())


def test_killed_mid_build_leaves_previous_index_live(policy_copy, tmp_path, encoder):
    """A process killed while saving a new build leaves CURRENT pointing at a complete, verifiable build."""
    index_dir = tmp_path / "idx"
    _build(policy_copy, index_dir, encoder)
    before = (index_dir / "CURRENT").read_text()
    (policy_copy / "social-media-policy-for-councillors.txt").write_text(
        (policy_copy / "social-media-policy-for-councillors.txt").read_text() + "\n", encoding="utf-8")
    script = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
        "from index import store\n"
        "from index.embedder import load_encoder\n"
        "import faiss\n"
        "real = faiss.write_index\n"
        "def slow(index, path):\n"
        f"    real(index, path); open('{tmp_path}/ready', 'w').close(); time.sleep(60)\n"
        "faiss.write_index = slow\n"
        "from pathlib import Path\n"
        f"store.load_or_build(Path({str(policy_copy)!r}), Path({str(index_dir)!r}), "
        "load_encoder('all-MiniLM-L6-v2'), 'all-MiniLM-L6-v2')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 90
        while not (tmp_path / "ready").exists():
            assert process.poll() is None, "builder exited early"
            assert time.time() < deadline, "builder never reached the save"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert (index_dir / "CURRENT").read_text() == before
    index = load_index(index_dir)
    assert index.faiss_index.ntotal == len(index.units)


def test_manifest_lists_checksums(policy_copy, tmp_path, encoder):
    """The manifest records the policy hash, model and per-file checksums the loader verifies."""
    index = build_index(policy_copy, encoder, "all-MiniLM-L6-v2")
    folder = save_index(index, tmp_path / "idx")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"] == "all-MiniLM-L6-v2"
    assert set(manifest["files"]) == {"faiss.index", "units.json"}  # no folder for word pieces: none kept
    _build(policy_copy, tmp_path / "kept", encoder)
    kept = load_index(tmp_path / "kept").manifest
    assert set(kept["files"]) == {"faiss.index", "units.json", "token_vectors.npy", "token_ids.npy",
                                  "token_spans.npy", "unit_slots.npy", "token_projection.npy"}
    assert len(manifest["policy_hash"]) == 64
    assert np.isclose(float(np.linalg.norm(index.faiss_index.reconstruct(0))), 1.0, atol=1e-4)


def test_threaded_build_encoding_matches_the_encoder_row_for_row(encoder, capsys):
    """encode_texts (batches longest first, shared by worker threads) gives each text its own vector, in the
    order given, equal to sentence-transformers' own float32 encode; its progress bar counts texts."""
    from index.embedder import encode_texts

    texts = [f"Councillors must declare interest number {i} " + "in writing " * (i % 23) for i in range(70)]
    expected = encoder.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    vectors = encode_texts(encoder, texts, "float32", progress=True, workers=3)
    assert vectors.shape == expected.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=2e-5)
    assert "100%|" in capsys.readouterr().err
    assert encode_texts(encoder, [], "float32").shape == (0, expected.shape[1])


def test_bfloat16_build_encoding_is_chosen_only_when_native_and_close(encoder, monkeypatch):
    """bfloat16 is used for a large build only on a CPU with native bfloat16 and when its vectors agree with
    float32's; the environment variable overrides; a bfloat16 encode is unit length and within cosine 0.999."""
    import index.embedder as embedder

    texts = [f"Clause {i}: councillors must keep {i} records of gifts and hospitality" for i in range(300)]
    monkeypatch.delenv(embedder.BUILD_PRECISION_ENV, raising=False)
    assert embedder.choose_precision(encoder, texts[:20]) == "float32"  # small: not worth checking
    monkeypatch.setattr(embedder, "native_bfloat16", lambda: False)
    assert embedder.choose_precision(encoder, texts) == "float32"
    monkeypatch.setattr(embedder, "native_bfloat16", lambda: True)
    monkeypatch.setattr(embedder, "_BF16_MIN_COSINE", 1.01)  # an impossible agreement: the check must refuse
    assert embedder.choose_precision(encoder, texts) == "float32"
    monkeypatch.setenv(embedder.BUILD_PRECISION_ENV, "bfloat16")
    assert embedder.choose_precision(encoder, texts[:5]) == "bfloat16"
    monkeypatch.setenv(embedder.BUILD_PRECISION_ENV, "fast")
    with pytest.raises(embedder.ModelError):
        embedder.choose_precision(encoder, texts)
    reference = embedder.encode_texts(encoder, texts[:40], "float32")
    reduced = embedder.encode_texts(encoder, texts[:40], "bfloat16")
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    assert float((reference * reduced).sum(axis=1).min()) > 0.999
