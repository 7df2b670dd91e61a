"""The benchmark's report: the issue's targets judged against the results, the "Speed and memory" section of
docs/benchmarks.md (written between its speed markers) and the terminal table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

START_MARKER = "<!-- speed:start -->"
END_MARKER = "<!-- speed:end -->"


@dataclass(frozen=True)
class Targets:
    """The issue's targets (issue 7, "Speed and scale, measured")."""

    seed_ratio: float = 1.2
    large_ratio: float = 1.5
    large_clauses: int = 10_000
    cold_ratio: float = 1.5
    rss_mb: float = 700.0
    build_s: float = 180.0


# ---------------------------------------------------------------------------------------------- statistics
def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return percentile(values, 50)


# ---------------------------------------------------------------------------------------------- targets
def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


def evaluate_targets(results: dict, targets: Targets = Targets()) -> list[dict]:
    """Each target with its measured value and whether it was met (None when this run cannot judge it: a quick run
    measures a smaller corpus than the 10,000-clause targets name)."""
    seed, large = results["seed"], results["large"]
    full_size = large["clauses"] >= targets.large_clauses
    size = f"{large['clauses']:,} clauses"
    rows = []

    def add(target: str, measured: str, met: bool | None) -> None:
        rows.append({"target": target, "measured": measured, "met": met})

    for label, corpus, limit, judged in (("seed policy", seed, targets.seed_ratio, True),
                                         (size, large, targets.large_ratio, full_size)):
        ratio = _ratio(median(corpus["ask_ms"]), median(corpus["floor_ms"]))
        add(f"warm Adviser.ask p50 within {limit}x the encoder floor p50 ({label})", f"{ratio:.2f}x",
            ratio <= limit if judged else None)
    for label, cold, judged in (("seed policy", results["cold_seed"], True), (size, results["cold_large"], full_size)):
        ratio = _ratio(median(cold["adviser_s"]), median(cold["encoder_s"]))
        add(f"cold start to first answer within {targets.cold_ratio}x loading the encoder ({label})",
            f"{ratio:.2f}x", ratio <= targets.cold_ratio if judged else None)
    rss = large["rss_peak_mb"]
    add(f"peak RSS of the build + ask process under {targets.rss_mb:.0f} MB ({size})", f"{rss:.0f} MB",
        rss < targets.rss_mb if full_size else None)
    build = large["build_s"]
    add(f"index build under {targets.build_s:.0f} s with a progress bar ({size}, {results['machine']['cores']} "
        f"cores)", f"{build:.1f} s, progress bar {'shown' if large['progress_bar'] else 'NOT shown'}",
        (build < targets.build_s and large["progress_bar"]) if full_size else None)
    burst = results["server"]["burst"]
    healthz_max = max(burst["healthz_ms"], default=0.0)
    ask_p50 = median(seed["ask_ms"])
    add(f"event loop not blocked: max /healthz latency during {burst['events']} concurrent questions below one "
        "warm answer (seed ask p50)", f"{healthz_max:.0f} ms (ask p50 {ask_p50:.0f} ms)",
        healthz_max < ask_p50 and burst["lost"] == 0)
    for key in ("load", "load_retries"):
        run = results["server"][key]
        add(f"{run['name']}: {run['events']} events at {run['rate']:g}/s, zero lost and zero duplicated",
            f"{run['lost']} lost, {run['duplicated']} duplicated, {run['failed']} failed",
            run["lost"] == 0 and run["duplicated"] == 0 and run["failed"] == 0)
    return rows


# ---------------------------------------------------------------------------------------------- the report
def _met(value: bool | None) -> str:
    return {True: "met", False: "**NOT met**", None: "n/a (quick run)"}[value]


def _ms(values: list[float]) -> str:
    return f"{median(values):.1f} / {percentile(values, 95):.1f}"


def render_section(results: dict, command: str) -> str:
    """The "Speed and memory" section of docs/benchmarks.md, markers included."""
    m = results["machine"]
    v = m["versions"]
    seed, large, server = results["seed"], results["large"], results["server"]
    lines = [
        START_MARKER,
        "## Speed and memory",
        "",
        f"Measured {results['date']} by `{command}` ({'quick run' if results['plan']['quick'] else 'full run'}, "
        f"{results['seconds'] / 60:.1f} minutes). Rewritten by every run: edit outside the speed markers only.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['ram_gb']} GB RAM, {m['os']}",
        f"- Python {m['python']}, torch {v['torch']} ({seed['torch_threads']} threads), faiss-cpu {v['faiss-cpu']}, "
        f"sentence-transformers {v['sentence-transformers']}, numpy {v['numpy']}, slack-bolt {v['slack-bolt']}",
        f"- Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in m['load_before'])}; after: "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_after', []))}. A load above the core count means other work "
        "shared the CPU; the floor and the asks are sampled interleaved so it hits both alike.",
        f"- Questions: {results['questions']} from `tests/gold/seed_gold.jsonl` (answerable, colloquial, misspelt, "
        "off-topic, clause references), cycled.",
        "",
        "### Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    lines += [f"| {t['target']} | {t['measured']} | {_met(t['met'])} |" for t in results["targets"]]
    lines += [
        "",
        "### Per question, warm (ms, p50 / p95)",
        "",
        "| corpus | documents | clauses | indexed units | encoder floor | `Adviser.ask` | ratio p50 (p95) "
        "| encode of the same question | answers (kinds) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for corpus in (seed, large):
        ratio50 = _ratio(median(corpus["ask_ms"]), median(corpus["floor_ms"]))
        ratio95 = _ratio(percentile(corpus["ask_ms"], 95), percentile(corpus["floor_ms"], 95))
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(corpus["kinds"].items()))
        units = f"{corpus['units']:,} ({corpus['distinct_units'] / max(1, corpus['units']):.0%} distinct)"
        lines.append(
            f"| {corpus['name']} | {corpus['documents']} | {corpus['clauses']:,} | {units} | "
            f"{_ms(corpus['floor_ms'])} | {_ms(corpus['ask_ms'])} | {ratio50:.2f}x ({ratio95:.2f}x) | "
            f"{_ms(corpus['same_question_encode_ms'])} | {kinds} |")
    lines += _thread_lines(results)
    lines += [
        "",
        f"{len(seed['floor_ms'])} samples of each per corpus after {results['plan']['warmup']} warm-up rounds. The "
        "floor is `encoder.encode([\"Can I use the council logo on my website?\"], normalize_embeddings=True)` on "
        "the CPU: no answer can cost less. \"Encode of the same question\" encodes each question of the mix as "
        "typed; the gap between it and `Adviser.ask` is the adviser's own work for that question (spelling, synonym "
        "expansion, which also lengthens what is encoded, search, choosing the quote).",
        "",
        "### Start-up, index build and memory",
        "",
        "| corpus | index build (`load_or_build`) | of which encoding | progress bar | adviser assembly "
        "(`from_index`) | cold start: first answer | cold start: encoder only | ratio | peak RSS: encoder loaded "
        "/ after build / after asks | peak RSS: cold start |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for corpus, cold in ((seed, results["cold_seed"]), (large, results["cold_large"])):
        ratio = _ratio(median(cold["adviser_s"]), median(cold["encoder_s"]))
        lines.append(
            f"| {corpus['name']} | {corpus['build_s']:.1f} s ({corpus['build_cpu_s']:.0f} CPU-s; load "
            f"{corpus['load_before_build']:.1f} → {corpus['load_after_build']:.1f}) | "
            f"{corpus['build_encoding_s']:.1f} s ({corpus.get('build_precision', 'float32')}) | "
            f"{'yes' if corpus['progress_bar'] else 'no'} | {corpus['assemble_s']:.2f} s | "
            f"{median(cold['adviser_s']):.1f} s | {median(cold['encoder_s']):.1f} s | {ratio:.2f}x | "
            f"{corpus['rss_encoder_mb']:.0f} / {corpus['rss_build_mb']:.0f} / {corpus['rss_peak_mb']:.0f} MB | "
            f"{cold['adviser_rss_mb']:.0f} MB |")
    cold_seed, cold_large = results["cold_seed"], results["cold_large"]
    lines += [
        "",
        "The build encodes the distinct unit texts in the precision shown (bfloat16 autocast when the CPU has native "
        "bfloat16 and a sample agrees with float32 within cosine 0.999; questions are always float32), longest first, "
        "in batches shared by one single-thread worker per core; see `index/embedder.py`.",
        "",
        f"Cold start is the wall time from starting a fresh `python` to its first answer (median of "
        f"{len(cold_seed['adviser_s'])}, alternating with the encoder-only process), the index already built on "
        "disk as in the container. Phases of the last first-answer run (seed / large): "
        f"imports {cold_seed['adviser_phases']['import_s']:.1f} / {cold_large['adviser_phases']['import_s']:.1f} s, "
        f"`Adviser.load` {cold_seed['adviser_phases']['load_s']:.1f} / {cold_large['adviser_phases']['load_s']:.1f} s,"
        f" first ask {cold_seed['adviser_phases']['first_ask_s'] * 1000:.0f} / "
        f"{cold_large['adviser_phases']['first_ask_s'] * 1000:.0f} ms; encoder only: imports "
        f"{cold_seed['encoder_phases']['import_s']:.1f} s, load {cold_seed['encoder_phases']['load_s']:.1f} s, "
        f"first encode {cold_seed['encoder_phases']['first_ask_s'] * 1000:.0f} ms.",
        "",
        "### The server: concurrent questions and a Slack load test",
        "",
        "| run | events | sent | lost | duplicated | failed | event → `chat.postMessage` p50 / p95 / max | "
        "ack p95 / max | `/healthz` p50 / max (probes) | took |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("burst", "load", "load_retries"):
        run = server[key]
        sent = "all at once" if not run["rate"] else f"{run['rate']:g}/s"
        if run["retries"]:
            sent += f", {run['retries']} retried"
        lat = run["latency_ms"]
        lines.append(
            f"| {run['name']} | {run['events']} | {sent} | {run['lost']} | {run['duplicated']} | {run['failed']} | "
            f"{median(lat) / 1000:.2f} / {percentile(lat, 95) / 1000:.2f} / {max(lat, default=0) / 1000:.2f} s | "
            f"{percentile(run['ack_ms'], 95):.0f} / {max(run['ack_ms'], default=0):.0f} ms | "
            f"{median(run['healthz_ms']):.0f} / {max(run['healthz_ms'], default=0):.0f} ms "
            f"({len(run['healthz_ms'])}) | {run['seconds']:.1f} s |")
    lines += [
        "",
        "The real server (`bot.server.create_app`, slack-bolt mounted, SQLite store for event dedupe) runs in its "
        "own process on the seed index; signed `app_mention` events (unique `event_id`, one user each, so the "
        "per-user rate limit never applies) are POSTed over loopback, and a loopback stand-in for the Slack Web "
        "API records each `chat.postMessage`. Lost = an event with no answer; duplicated = an event answered "
        "more than once; failed = answered with an error notice. Retries re-send the same body and `event_id` "
        "with `X-Slack-Retry-Num: 1`, 0.2 to 3 s after the original. `/healthz` is probed one request at a time "
        "every 20 ms throughout.",
        "",
    ]
    lines += _profile_lines(results)
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def _thread_lines(results: dict) -> list[str]:
    """The floor and the ask again with torch at one intra-op thread and at its default."""
    rows = []
    for corpus in (results["seed"], results["large"]):
        for threads, values in sorted((corpus.get("threads") or {}).items()):
            ratio = _ratio(median(values["ask_ms"]), median(values["floor_ms"]))
            rows.append(f"| {corpus['name']} | {threads} | {_ms(values['floor_ms'])} | {_ms(values['ask_ms'])} | "
                        f"{ratio:.2f}x | {_ms(values.get('same_question_encode_ms', []))} |")
    if not rows:
        return []
    return [
        "",
        "The same, with torch's intra-op threads set to 1 and to the default (`torch.set_num_threads`, blocks of 10 "
        "alternating; not a configuration the product sets, a measurement of what it would give):",
        "",
        "| corpus | torch threads | encoder floor | `Adviser.ask` | ratio p50 | encode of the same question |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def _profile_lines(results: dict) -> list[str]:
    lines = ["### Where the time goes (cProfile)", ""]
    for corpus in (results["seed"], results["large"]):
        profile = corpus.get("profile") or {}
        if not profile:
            continue
        rest = profile["ask_ms"] - profile["encoder_ms"]
        lines += [
            f"**`Adviser.ask`, {corpus['name']}** ({profile['questions']} questions, profiled separately: the "
            f"profiler slows Python code, so read shares, not totals): {profile['ask_ms']:.1f} ms per question, of "
            f"which the encoder {profile['encoder_ms']:.1f} ms and the rest {rest:.1f} ms.",
            "",
            "| function | where | ms per question (cumulative) | calls per question |",
            "|---|---|---|---|",
        ]
        lines += [f"| `{r['function']}` | {r['where']} | {r['ms']:.2f} | {r['calls']:.1f} |" for r in profile["rows"]]
        lines.append("")
    cold_profile = results["cold_large"].get("profile") or []
    if cold_profile:
        lines += [
            f"**Cold start, {results['large']['name']}** (one profiled process: `Adviser.load` from the saved "
            "index, then one ask):",
            "",
            "| function | where | ms (cumulative) | calls |",
            "|---|---|---|---|",
        ]
        lines += [f"| `{r['function']}` | {r['where']} | {r['ms']:.0f} | {r['calls']:.0f} |" for r in cold_profile]
        lines.append("")
    return lines


def write_section(path: Path, section: str) -> None:
    """Replace the text between the speed markers of `path` (other sections are left alone); append the section
    when the markers are missing; create the file when it does not exist."""
    if path.exists():
        text = path.read_text(encoding="utf-8")
        start, end = text.find(START_MARKER), text.find(END_MARKER)
        if start != -1 and end > start:
            text = text[:start] + section.rstrip("\n") + text[end + len(END_MARKER):]
        else:
            text = text.rstrip("\n") + "\n\n" + section
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "# Benchmarks\n\n" + section
    path.write_text(text, encoding="utf-8")


def render_terminal(results: dict) -> str:
    """A compact table for the terminal."""
    seed, large, server = results["seed"], results["large"], results["server"]
    rows = [("", "seed", large["name"])]
    for label, key in (("encoder floor p50/p95 ms", "floor_ms"), ("Adviser.ask p50/p95 ms", "ask_ms")):
        rows.append((label, _ms(seed[key]), _ms(large[key])))
    rows.append(("ratio ask/floor p50", *(f"{_ratio(median(c['ask_ms']), median(c['floor_ms'])):.2f}x"
                                          for c in (seed, large))))
    rows.append(("index build s", f"{seed['build_s']:.1f}", f"{large['build_s']:.1f}"))
    for label, key in (("cold start: first answer s", "adviser_s"), ("cold start: encoder only s", "encoder_s")):
        rows.append((label, *(f"{median(results[c][key]):.1f}" for c in ("cold_seed", "cold_large"))))
    cold_ratios = (_ratio(median(results[c]["adviser_s"]), median(results[c]["encoder_s"]))
                   for c in ("cold_seed", "cold_large"))
    rows.append(("cold start ratio", *(f"{r:.2f}x" for r in cold_ratios)))
    rows.append(("peak RSS build+ask MB", f"{seed['rss_peak_mb']:.0f}", f"{large['rss_peak_mb']:.0f}"))
    width = max(len(r[0]) for r in rows)
    out = [f"{a:<{width}}  {b:>16}  {c:>16}" for a, b, c in rows]
    out.append("")
    for key in ("burst", "load", "load_retries"):
        run = server[key]
        out.append(f"{run['name']:<18} {run['events']:>4} events: lost {run['lost']}, duplicated {run['duplicated']}"
                   f", failed {run['failed']}; event->postMessage p50 {median(run['latency_ms']) / 1000:.2f} s, "
                   f"p95 {percentile(run['latency_ms'], 95) / 1000:.2f} s; /healthz max "
                   f"{max(run['healthz_ms'], default=0):.0f} ms")
    out.append("")
    out += [f"[{_met(t['met'])}] {t['target']}: {t['measured']}" for t in results["targets"]]
    return "\n".join(out)
