"""The benchmark's measuring subprocesses: one corpus size (build, warm asks against the encoder floor, peak RSS,
profile), and cold starts. Each runs in a fresh interpreter so its start-up and memory are its own.

Run by `policybot bench`, not by hand:  python -m bot.bench_worker size|cold ...  (prints one JSON line)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
FLOOR_QUESTION = "Can I use the council logo on my website?"
RESULT_PREFIX = "BENCH-RESULT "


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _settings(policy_dir: Path, data_dir: Path):  # noqa: ANN202
    from bot.settings import Settings

    return Settings(policy_dir=policy_dir, data_dir=data_dir)


def _encode(encoder, text: str) -> None:  # noqa: ANN001
    encoder.encode([text], normalize_embeddings=True, convert_to_numpy=True)


def measure_size(policy_dir: Path, data_dir: Path, questions: list[str], iterations: int, warmup: int,
                 profile_questions: int) -> dict:
    """Build the index for `policy_dir` through the real path (load_or_build, with its progress bar on stderr),
    then time, interleaved so machine noise hits both alike: the encoder floor (one short question), the full
    Adviser.ask for each question of the mix, and the bare encode of that same question. Samples in ms."""
    from bot.adviser import Adviser
    from index.embedder import load_encoder
    from index.store import load_or_build

    settings = _settings(policy_dir, data_dir)
    started = time.perf_counter()
    encoder = load_encoder(settings.model)
    encoder_load = time.perf_counter() - started
    rss_encoder = peak_rss_mb()
    encoding = _time_encoding(encoder)
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    index = load_or_build(settings.policy_dir, settings.index_dir, encoder, settings.model, progress=True)
    build = time.perf_counter() - started
    build_cpu = cpu_seconds() - cpu_before
    load_after_build = os.getloadavg()[0]
    del encoder.encode  # the timing wrapper: the instance attribute shadowed the method
    rss_build = peak_rss_mb()
    sys.stderr.flush()
    started = time.perf_counter()
    adviser = Adviser.from_index(settings, encoder, index)
    assemble = time.perf_counter() - started
    first = adviser.ask(questions[0])
    rss_build_ask = peak_rss_mb()

    for i in range(warmup):
        _encode(encoder, FLOOR_QUESTION)
        adviser.ask(questions[i % len(questions)])
    floor, ask, same = [], [], []
    kinds: dict[str, int] = {}
    clock = time.perf_counter
    for i in range(iterations):
        question = questions[i % len(questions)]
        started = clock()
        _encode(encoder, FLOOR_QUESTION)
        floor.append((clock() - started) * 1000)
        started = clock()
        answer = adviser.ask(question)
        ask.append((clock() - started) * 1000)
        started = clock()
        _encode(encoder, question)
        same.append((clock() - started) * 1000)
        kinds[answer.kind] = kinds.get(answer.kind, 0) + 1
    rss_peak = peak_rss_mb()
    profile = profile_asks(adviser, questions[:profile_questions]) if profile_questions else {}

    import torch

    return {
        "documents": len(index.documents),
        "clauses": len(index.clauses),
        "units": len(index.units),
        "distinct_units": len({u.text for u in index.units}),
        "encoder_load_s": encoder_load,
        "build_s": build,
        # encoder.encode calls (the background questions) plus the build's own bulk encoding (index.embedder.
        # encode_texts, which runs the model directly), as the manifest records it
        "build_encoding_s": encoding[0] + float(index.manifest.get("encode_seconds", 0.0)),
        "build_precision": index.manifest.get("encode_precision", "float32"),
        "build_cpu_s": build_cpu,
        "load_before_build": load_before,
        "load_after_build": load_after_build,
        "load_after_asks": os.getloadavg()[0],
        "build_manifest_s": float(index.manifest.get("build_seconds", 0.0)),
        "assemble_s": assemble,
        "first_answer_kind": first.kind,
        "floor_ms": floor,
        "ask_ms": ask,
        "same_question_encode_ms": same,
        "kinds": kinds,
        "rss_encoder_mb": rss_encoder,
        "rss_build_mb": rss_build,
        "rss_build_ask_mb": rss_build_ask,
        "rss_peak_mb": rss_peak,
        "torch_threads": torch.get_num_threads(),
        "profile": profile,
        "threads": thread_probe(adviser, encoder, questions, min(iterations, 100)),
    }


def _time_encoding(encoder) -> list[float]:  # noqa: ANN001
    """Wrap encoder.encode (on this instance only) to add up the seconds spent in it; returns the running total."""
    total = [0.0]
    real = encoder.encode

    def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - started

    encoder.encode = timed
    return total


def thread_probe(adviser, encoder, questions: list[str], iterations: int) -> dict:  # noqa: ANN001
    """The floor and Adviser.ask again with torch limited to one intra-op thread, then at its default, interleaved
    in blocks: on a small machine (or one whose cores are shared) a one-question forward pass gains nothing from a
    second thread and loses a lot to the threads waiting on each other."""
    import torch

    default = torch.get_num_threads()
    result = {}
    samples: dict[int, dict[str, list[float]]] = {
        threads: {"floor_ms": [], "ask_ms": [], "same_question_encode_ms": []} for threads in (1, default)}
    block = 10
    try:
        for start in range(0, iterations, block):
            for threads in samples:
                torch.set_num_threads(threads)
                _encode(encoder, FLOOR_QUESTION)  # one untimed call after switching
                for i in range(start, min(start + block, iterations)):
                    started = time.perf_counter()
                    _encode(encoder, FLOOR_QUESTION)
                    samples[threads]["floor_ms"].append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    adviser.ask(questions[i % len(questions)])
                    samples[threads]["ask_ms"].append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    _encode(encoder, questions[i % len(questions)])
                    samples[threads]["same_question_encode_ms"].append((time.perf_counter() - started) * 1000)
    finally:
        torch.set_num_threads(default)
    for threads, values in samples.items():
        result[str(threads)] = values
    return result


def _project_function(filename: str) -> bool:
    from bot.settings import PROJECT_ROOT

    path = Path(filename)
    return any(path.is_relative_to(PROJECT_ROOT / package) for package in ("bot", "index"))


def profile_rows(stats, per: int, limit: int = 14) -> list[dict]:  # noqa: ANN001 - pstats.Stats
    """The project's own functions (bot/, index/) by cumulative time, in ms per call of the profiled operation."""
    rows = []
    for (filename, line, name), (_, calls, _, cumulative, _) in stats.stats.items():
        if _project_function(filename):
            where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}"
            rows.append({"function": name, "where": where, "ms": cumulative * 1000 / per, "calls": calls / per})
    rows.sort(key=lambda r: r["ms"], reverse=True)
    return rows[:limit]


def _encoder_ms(stats, per: int) -> float:  # noqa: ANN001
    total = 0.0
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        if name == "encode" and "sentence_transformers" in filename:
            total = max(total, cumulative)
    return total * 1000 / per


def profile_asks(adviser, questions: list[str]) -> dict:  # noqa: ANN001
    """cProfile one pass of Adviser.ask over `questions` (a separate pass: the profiler slows Python code, so these
    figures say where time goes, not how much there is)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for question in questions:
        adviser.ask(question)
    profiler.disable()
    stats = pstats.Stats(profiler)
    per = max(1, len(questions))
    ask_ms = max((r["ms"] for r in profile_rows(stats, per, limit=1000) if r["function"] == "ask"), default=0.0)
    return {"questions": len(questions), "ask_ms": ask_ms, "encoder_ms": _encoder_ms(stats, per),
            "rows": profile_rows(stats, per)}


def cold_start(mode: str, policy_dir: Path, data_dir: Path, question: str, profile: bool) -> dict:
    """From interpreter start to the first answer (mode "adviser": Adviser.load, which loads the saved index, then
    ask) or to the first encoding (mode "encoder": load the encoder, encode the question)."""
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    phases = {}
    started = time.perf_counter()
    if mode == "adviser":
        from bot.adviser import Adviser

        phases["import_s"] = time.perf_counter() - started
        adviser = Adviser.load(_settings(policy_dir, data_dir))
        phases["load_s"] = time.perf_counter() - started - phases["import_s"]
        before = time.perf_counter()
        adviser.ask(question)
        phases["first_ask_s"] = time.perf_counter() - before
    else:
        from index.embedder import load_encoder

        phases["import_s"] = time.perf_counter() - started
        encoder = load_encoder("all-MiniLM-L6-v2")
        phases["load_s"] = time.perf_counter() - started - phases["import_s"]
        before = time.perf_counter()
        _encode(encoder, question)
        phases["first_ask_s"] = time.perf_counter() - before
    result = {"mode": mode, "in_process_s": time.perf_counter() - STARTED, **phases, "rss_peak_mb": peak_rss_mb()}
    if profiler is not None:
        import pstats

        profiler.disable()
        result["profile"] = profile_rows(pstats.Stats(profiler), 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.bench_worker")
    sub = parser.add_subparsers(dest="command", required=True)
    size = sub.add_parser("size")
    cold = sub.add_parser("cold")
    for command in (size, cold):
        command.add_argument("--policy-dir", type=Path, required=True)
        command.add_argument("--data-dir", type=Path, required=True)
    size.add_argument("--questions", type=Path, required=True, help="a JSON list of questions")
    size.add_argument("--iterations", type=int, default=200)
    size.add_argument("--warmup", type=int, default=10)
    size.add_argument("--profile-questions", type=int, default=60)
    cold.add_argument("--mode", choices=("adviser", "encoder"), required=True)
    cold.add_argument("--question", default=FLOOR_QUESTION)
    cold.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.command == "size":
        questions = json.loads(args.questions.read_text(encoding="utf-8"))
        result = measure_size(args.policy_dir, args.data_dir, questions, args.iterations, args.warmup,
                              args.profile_questions)
    else:
        result = cold_start(args.mode, args.policy_dir, args.data_dir, args.question, args.profile)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
