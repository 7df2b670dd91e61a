"""The benchmark machinery (`policybot bench`): the synthetic corpus generator, the report, and one tiny run end to
end. Speed figures are only checked to be measured (positive); the load test's zero lost / zero duplicated answers
is a real assertion."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import POLICY_DIR

from bot.bench import Plan, run_bench
from bot.bench_report import END_MARKER, START_MARKER, percentile, render_section, render_terminal, write_section
from bot.cli import build_parser
from bot.synthetic import real_sentences, source_files, write_corpus
from index.readers import load_documents

SEED_CLAUSES = sum(len(d.clauses) for d in load_documents(POLICY_DIR))
TINY = Plan(clauses=200, events=20, iterations=8, warmup=2, profile_questions=4, cold_runs=1, cold_profile=False,
            burst=4, quick=True)


# ---------------------------------------------------------------------------------------------- the generator
def test_generated_corpus_parses_into_exactly_the_requested_clauses(tmp_path: Path) -> None:
    """The real parser reads the generated folder as `clauses` clauses in all: the council's own policy (with its
    data files, so its gold questions keep their answers) plus synthetic documents of at most 50 clauses, each
    with a title, owner and version date."""
    corpus = write_corpus(tmp_path / "corpus", 200, POLICY_DIR, SEED_CLAUSES)
    documents = load_documents(corpus.policy_dir)
    assert sum(len(d.clauses) for d in documents) == 200
    synthetic = [d for d in documents if d.doc_id.startswith("synthetic-policy")]
    assert len(synthetic) == corpus.documents == len(documents) - 1
    assert all(len(d.clauses) <= 50 for d in synthetic)
    assert all(d.meta.title and d.meta.owner and d.meta.version_date for d in synthetic)
    for name in ("contacts.toml", "synonyms.toml", "curated_questions.toml"):
        assert (corpus.policy_dir / name).exists()


def test_generated_corpus_is_deterministic_and_made_of_real_sentences(tmp_path: Path) -> None:
    """The same arguments write byte-identical documents, and every synthetic clause quotes the real policies: some
    run of four consecutive words of it appears in the source texts (terms are varied, runs survive)."""
    first = write_corpus(tmp_path / "a", 150, POLICY_DIR, SEED_CLAUSES)
    second = write_corpus(tmp_path / "b", 150, POLICY_DIR, SEED_CLAUSES)
    names = sorted(p.name for p in first.policy_dir.glob("synthetic-*.txt"))
    assert names and names == sorted(p.name for p in second.policy_dir.glob("synthetic-*.txt"))
    for name in names:
        assert (first.policy_dir / name).read_bytes() == (second.policy_dir / name).read_bytes()
    sources = " ".join(" ".join(p.read_text(encoding="utf-8-sig").split()).lower()
                       for p in source_files(POLICY_DIR))
    clauses = [c for d in load_documents(first.policy_dir) if d.doc_id.startswith("synthetic") for c in d.clauses]
    assert len(clauses) == 150 - SEED_CLAUSES
    for clause in clauses:
        words = clause.text.lower().split()
        assert any(" ".join(words[i:i + 4]) in sources for i in range(len(words) - 3)), clause.text


def test_real_sentences_drop_numbering_and_make_list_items_sentences(tmp_path: Path) -> None:
    """Numbering markers and header lines are removed; a list item ending in ";" becomes a capitalised sentence."""
    source = tmp_path / "policy.txt"
    source.write_text(
        "Title:\tA policy\n"
        "- 5.3 Use of the Council's logo should only occur with the written permission of the chief executive.\n"
        "(a) is a member of any committee or sub-committee of the authority, or\n"
        "SHORT HEADING\n",
        encoding="utf-8",
    )
    assert real_sentences([source]) == [
        "Use of the Council's logo should only occur with the written permission of the chief executive.",
        "Is a member of any committee or sub-committee of the authority.",
    ]


# ---------------------------------------------------------------------------------------------- the report
def test_percentile_interpolates_between_ranks() -> None:
    """p50 of an even count is the midpoint; p95 and p100 stay inside the range; no values give 0."""
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0], 100) == 2.0
    assert 1.0 <= percentile([1.0, 2.0, 10.0], 95) <= 10.0
    assert percentile([], 50) == 0.0


def test_write_section_replaces_only_the_speed_section(tmp_path: Path) -> None:
    """The lead's quality section, before and after the speed markers, survives a rewrite; a file without markers
    gets the section appended; a missing file is created."""
    path = tmp_path / "benchmarks.md"
    path.write_text(f"# Benchmarks\n\n## Quality\nkeep me\n\n{START_MARKER}\nold\n{END_MARKER}\n\n## After\nme too\n")
    write_section(path, f"{START_MARKER}\nnew figures\n{END_MARKER}\n")
    text = path.read_text()
    assert "keep me" in text and "me too" in text and "new figures" in text and "old" not in text
    assert text.count(START_MARKER) == 1 and text.count(END_MARKER) == 1

    bare = tmp_path / "bare.md"
    bare.write_text("# Benchmarks\n\n## Quality\nkeep me\n")
    write_section(bare, f"{START_MARKER}\nfigures\n{END_MARKER}\n")
    assert bare.read_text().startswith("# Benchmarks\n\n## Quality\nkeep me\n") and "figures" in bare.read_text()

    fresh = tmp_path / "docs" / "new.md"
    write_section(fresh, f"{START_MARKER}\nfigures\n{END_MARKER}\n")
    assert fresh.read_text().startswith("# Benchmarks")


def test_the_bench_command_is_registered() -> None:
    """`policybot bench --quick --clauses N` reaches the bench command through the CLI's module discovery."""
    args = build_parser().parse_args(["bench", "--quick", "--clauses", "300", "--output", "-"])
    assert args.func.__module__ == "bot.bench"
    assert args.quick and args.clauses == 300


# ---------------------------------------------------------------------------------------------- a tiny run
@pytest.fixture(scope="module")
def tiny_run(settings) -> dict:
    """One tiny benchmark run: 200 clauses, 8 samples, one cold start each, 20 Slack events per load run."""
    return run_bench(settings, TINY)


def test_tiny_run_measures_both_corpus_sizes(tiny_run: dict) -> None:
    """Both corpora are built through the real path, with its progress bar on stderr, and every sample, build time
    and peak RSS is a measured (positive) number."""
    seed, large = tiny_run["seed"], tiny_run["large"]
    assert seed["clauses"] == SEED_CLAUSES and large["clauses"] == 200
    for corpus in (seed, large):
        assert corpus["progress_bar"]
        for key in ("floor_ms", "ask_ms", "same_question_encode_ms"):
            assert len(corpus[key]) == TINY.iterations and all(v > 0 for v in corpus[key])
        assert corpus["build_s"] > 0 and corpus["build_encoding_s"] > 0
        assert 0 < corpus["rss_encoder_mb"] <= corpus["rss_peak_mb"]
        assert sum(corpus["kinds"].values()) == TINY.iterations
        assert corpus["profile"]["rows"] and corpus["profile"]["ask_ms"] > 0
    for cold in (tiny_run["cold_seed"], tiny_run["cold_large"]):
        assert len(cold["adviser_s"]) == len(cold["encoder_s"]) == 1
        assert cold["adviser_s"][0] > 0 and cold["encoder_s"][0] > 0


def test_tiny_run_loses_and_duplicates_no_answer(tiny_run: dict) -> None:
    """Every Slack event gets exactly one chat.postMessage, also when retries of the same event_id are mixed in,
    and /healthz answered throughout."""
    server = tiny_run["server"]
    for key in ("burst", "load", "load_retries"):
        run = server[key]
        assert run["lost"] == 0, run
        assert run["duplicated"] == 0, run
        assert run["failed"] == 0, run
        assert run["answered"] == run["events"] == len(run["latency_ms"])
        assert run["healthz_ms"] and run["healthz_failures"] == 0
    assert server["load"]["events"] == TINY.events
    assert server["load_retries"]["retries"] >= 1
    assert server["web_api_calls"]["chat.postMessage"] == TINY.burst + 2 * TINY.events + 4  # + 4 warm-up


def test_tiny_run_report(tiny_run: dict, tmp_path: Path) -> None:
    """The report names the machine and command, judges every target (the 10,000-clause ones are not judged on a
    smaller corpus), and is written between the speed markers."""
    targets = tiny_run["targets"]
    assert len(targets) == 9 and all(t["met"] in (True, False, None) for t in targets)
    assert [t["met"] for t in targets if "200 clauses" in t["target"]] == [None] * 4
    section = render_section(tiny_run, "policybot bench --quick")
    assert section.startswith(START_MARKER) and section.rstrip().endswith(END_MARKER)
    for heading in ("## Speed and memory", "### Targets", "`policybot bench --quick`", "Machine:", "torch"):
        assert heading in section
    assert "lost" in render_terminal(tiny_run)
    path = tmp_path / "benchmarks.md"
    write_section(path, section)
    assert path.read_text().count(START_MARKER) == 1
