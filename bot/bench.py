"""`policybot bench`: speed and memory against the encoder floor, at the seed policy and at a generated corpus,
plus cold start, index build, and the server under concurrent questions and a bounded Slack load test.

Every figure comes from the real code paths (load_or_build with its progress bar, Adviser.ask, create_app with
bolt mounted) in fresh subprocesses where start-up or memory is what is measured. The results are printed and
written between the speed markers of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bot.bench_report import evaluate_targets, render_section, render_terminal, write_section
from bot.bench_worker import RESULT_PREFIX
from bot.settings import PROJECT_ROOT, Settings

GOLD_QUESTIONS = PROJECT_ROOT / "tests" / "gold" / "seed_gold.jsonl"
DEFAULT_OUTPUT = PROJECT_ROOT / "docs" / "benchmarks.md"
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's "37%|███▋      |"


@dataclass(frozen=True)
class Plan:
    """How much to measure. The full plan is what docs/benchmarks.md reports; `quick` is for CI and tests."""

    clauses: int = 10_000
    events: int = 500
    rate: float = 25.0
    retry_share: float = 0.05
    iterations: int = 200  # interleaved floor / ask / same-question samples per corpus
    warmup: int = 10
    profile_questions: int = 120
    cold_runs: int = 3
    cold_profile: bool = True
    burst: int = 16
    quick: bool = False

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(clauses=1_000, events=100, iterations=60, warmup=5, profile_questions=30, cold_runs=1,
                   cold_profile=False, burst=8, quick=True)


# ---------------------------------------------------------------------------------------------- the machine
def machine_info() -> dict:
    """CPU model, cores, RAM, Python and library versions, and the load average (other work on the machine)."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    versions = {}
    for package in ("torch", "faiss-cpu", "sentence-transformers", "numpy", "aiohttp", "slack-bolt"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "missing"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count() or 0, "usable_cores": affinity, "ram_gb": round(ram_gb, 1),
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "versions": versions, "load_before": list(os.getloadavg())}


# ---------------------------------------------------------------------------------------------- subprocesses
def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class WorkerRun:
    result: dict
    stderr: str
    wall_s: float  # from just before the process was started to the moment its result line was read


def _echo(chunk: bytes) -> None:
    buffer = getattr(sys.stderr, "buffer", None)
    if buffer is not None:
        buffer.write(chunk)
    else:
        sys.stderr.write(chunk.decode(errors="replace"))
    sys.stderr.flush()


def run_worker(args: list[str], echo: bool = False, timeout: float = 7200.0) -> WorkerRun:
    """Run `python -m bot.bench_worker ARGS`; its stderr is captured (and echoed live when `echo`, so a build's
    progress bar shows), its one result line parsed."""
    command = [sys.executable, "-m", "bot.bench_worker", *args]
    chunks: list[bytes] = []
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_child_env(),
                               cwd=PROJECT_ROOT)

    def pump() -> None:
        while True:
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                return
            chunks.append(chunk)
            if echo:
                _echo(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    result, wall = None, 0.0
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for line in process.stdout:
            text = line.decode(errors="replace")
            if text.startswith(RESULT_PREFIX):
                wall = time.perf_counter() - started
                result = json.loads(text[len(RESULT_PREFIX):])
        status = process.wait()
    finally:
        timer.cancel()
    reader.join(timeout=10)
    stderr = b"".join(chunks).decode(errors="replace")
    if result is None or status != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark worker {' '.join(args[:1])} failed (exit {status}):\n{tail}")
    return WorkerRun(result, stderr, wall)


def measure_corpus(name: str, policy_dir: Path, data_dir: Path, questions_file: Path, plan: Plan) -> dict:
    """One corpus size in a fresh process: build (progress bar echoed), warm asks against the floor, RSS, profile."""
    print(f"[bench] {name}: building the index and timing questions ...", file=sys.stderr, flush=True)
    run = run_worker(["size", "--policy-dir", str(policy_dir), "--data-dir", str(data_dir),
                      "--questions", str(questions_file), "--iterations", str(plan.iterations),
                      "--warmup", str(plan.warmup), "--profile-questions", str(plan.profile_questions)],
                     echo=True)
    result = run.result
    result["progress_bar"] = bool(PROGRESS_BAR.search(run.stderr))
    result["name"] = name
    return result


def measure_cold(policy_dir: Path, data_dir: Path, runs: int, profile: bool) -> dict:
    """Cold start, alternating a process that loads the adviser and answers with one that only loads the encoder
    and encodes, so noise on the machine hits both alike. Medians of the wall times."""
    common = ["--policy-dir", str(policy_dir), "--data-dir", str(data_dir)]
    adviser, encoder = [], []
    for _ in range(runs):
        encoder.append(run_worker(["cold", *common, "--mode", "encoder"]))
        adviser.append(run_worker(["cold", *common, "--mode", "adviser"]))
    result = {
        "adviser_s": [r.wall_s for r in adviser],
        "encoder_s": [r.wall_s for r in encoder],
        "adviser_phases": adviser[-1].result,
        "encoder_phases": encoder[-1].result,
        "adviser_rss_mb": max(r.result["rss_peak_mb"] for r in adviser),
    }
    if profile:
        result["profile"] = run_worker(["cold", *common, "--mode", "adviser", "--profile"]).result.get("profile", [])
    return result


# ---------------------------------------------------------------------------------------------- the run
def load_questions(path: Path, policy_dir: Path) -> list[str]:
    """The realistic question mix: the gold set's questions (answerable, off-topic, clause references, follow-up
    style), shuffled with a fixed seed so a quick run's shorter prefix is still a mix. Falls back to the curated
    wordings when the gold set is not installed (as in the container)."""
    questions: list[str] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                questions.append(json.loads(line)["question"])
    if not questions:
        from index.units import load_curated

        questions = [q.wording for q in load_curated(policy_dir / "curated_questions.toml")]
    if not questions:
        from bot.adviser import EXAMPLE_QUESTIONS

        questions = list(EXAMPLE_QUESTIONS)
    random.Random(5).shuffle(questions)
    return questions


def run_bench(settings: Settings, plan: Plan, questions_path: Path = GOLD_QUESTIONS,
              work_dir: Path | None = None) -> dict:
    """Measure everything in `plan` and return the raw results (see `render_section` for what they mean)."""
    import asyncio

    from bot.bench_load import server_runs
    from bot.synthetic import write_corpus
    from index.readers import load_documents

    started = time.time()
    results: dict = {"plan": asdict(plan), "machine": machine_info(),
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))}
    with tempfile.TemporaryDirectory(prefix="policybot-bench-", dir=work_dir) as tmp:
        root = Path(tmp)
        questions = load_questions(questions_path, settings.policy_dir)
        questions_file = root / "questions.json"
        questions_file.write_text(json.dumps(questions), encoding="utf-8")
        results["questions"] = len(questions)

        seed_data = root / "seed-data"
        results["seed"] = measure_corpus("seed", settings.policy_dir, seed_data, questions_file, plan)

        seed_clauses = sum(len(d.clauses) for d in load_documents(settings.policy_dir))
        corpus = write_corpus(root / "corpus", plan.clauses, settings.policy_dir, seed_clauses)
        results["corpus"] = {"synthetic_documents": corpus.documents, "sentences": corpus.sentences,
                             "sources": list(corpus.sources)}
        large_data = root / "large-data"
        results["large"] = measure_corpus(f"{plan.clauses} clauses", corpus.policy_dir, large_data, questions_file,
                                          plan)

        print("[bench] cold starts ...", file=sys.stderr, flush=True)
        results["cold_seed"] = measure_cold(settings.policy_dir, seed_data, plan.cold_runs, False)
        results["cold_large"] = measure_cold(corpus.policy_dir, large_data, plan.cold_runs, plan.cold_profile)

        print(f"[bench] server: burst of {plan.burst}, then {plan.events} Slack events at {plan.rate:g}/s twice ...",
              file=sys.stderr, flush=True)
        results["server"] = asyncio.run(server_runs(settings.policy_dir, seed_data, questions, plan.events,
                                                    plan.rate, plan.retry_share, plan.burst))
    results["machine"]["load_after"] = list(os.getloadavg())
    results["seconds"] = time.time() - started
    results["targets"] = evaluate_targets(results)
    return results


# ---------------------------------------------------------------------------------------------- the command
def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    plan = Plan.quick_plan() if args.quick else Plan()
    overrides = {name: getattr(args, name) for name in ("clauses", "events") if getattr(args, name) is not None}
    plan = replace(plan, **overrides)
    command = "policybot " + " ".join(sys.argv[1:]) if sys.argv and "policybot" in Path(sys.argv[0]).name \
        else "policybot bench" + (" --quick" if args.quick else "")
    results = run_bench(settings, plan, Path(args.questions))
    results["command"] = command
    print(render_terminal(results))
    if args.output != "-":
        write_section(Path(args.output), render_section(results, command))
        print(f"\nwritten to {args.output}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="measure speed and memory against the encoder floor (seed and 10,000 clauses), cold start, "
                      "build, and a Slack load test; writes docs/benchmarks.md")
    bench.add_argument("--quick", action="store_true", help="a reduced run (1,000 clauses, 100 events) for CI")
    bench.add_argument("--clauses", type=int, help="clauses in the generated corpus (default 10000; quick 1000)")
    bench.add_argument("--events", type=int, help="Slack events per load run (default 500; quick 100)")
    bench.add_argument("--questions", default=str(GOLD_QUESTIONS), help="a gold JSONL file whose questions to ask")
    bench.add_argument("--output", default=str(DEFAULT_OUTPUT), help="the Markdown file to update ('-' for none)")
    bench.add_argument("--json", help="also write the raw results (every sample) to this JSON file")
    bench.set_defaults(func=cmd_bench)
