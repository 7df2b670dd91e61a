"""The `policybot` command line: ask, index, clauses, show, eval, escalations, check, serve and friends."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from bot.settings import Settings

log = logging.getLogger("policybot")


class CliError(Exception):
    """An error a council officer can act on: printed as one line, exit status 2."""


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore")
    for name in ("sentence_transformers", "transformers", "httpx", "huggingface_hub", "faiss"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _adviser(settings: Settings, progress: bool = False):  # noqa: ANN202
    from bot.adviser import Adviser

    return Adviser.load(settings, progress=progress)


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.render_text import render_text

    if args.question == "-":
        adviser = _adviser(settings)
        for line in sys.stdin.buffer:
            question = line.decode("utf-8", errors="replace").rstrip("\r\n")
            try:
                started = time.perf_counter()
                answer = adviser.ask(question)
                payload = answer.to_json()
                payload["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
            except Exception as exc:  # one bad line must not lose the lines after it
                log.exception("question failed")
                payload = {"question": question, "answered": False, "answer": "", "citations": [],
                           "escalations": [], "warnings": [], "error": f"{type(exc).__name__}: {exc}"}
            _record(settings, question, payload)
            payload.pop("latency_ms", None)
            if args.json:
                print(json.dumps(payload, ensure_ascii=False), flush=True)
            else:
                print(render_text(answer) + "\n", flush=True)
        return 0
    if not args.question.strip():
        raise CliError("the question is empty: try  policybot ask \"Can I use the council logo on my website?\"")
    adviser = _adviser(settings, progress=sys.stderr.isatty())
    started = time.perf_counter()
    answer = adviser.ask(args.question)
    _record(settings, args.question, answer.to_json() | {"latency_ms": (time.perf_counter() - started) * 1000})
    print(json.dumps(answer.to_json(), ensure_ascii=False, indent=2) if args.json else render_text(answer))
    return 0


def _record(settings: Settings, question: str, payload: dict) -> None:
    """Log the question for the policy owner's report; never fails the answer."""
    try:
        from bot.record import record_cli_question

        record_cli_question(settings, question, payload)
    except ImportError:
        return
    except Exception as exc:
        log.warning("could not record the question: %s", exc)


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    from index.embedder import load_encoder
    from index.store import load_or_build

    encoder = load_encoder(settings.model)
    index = load_or_build(settings.policy_dir, settings.index_dir, encoder, settings.model, progress=True,
                          rebuild=args.rebuild)
    for document in index.documents:
        sections = {c.section_label for c in document.clauses}
        print(f"{document.meta.title}: {len(document.clauses)} clauses in {len(sections)} sections "
              f"({Path(document.path).name})")
    manifest = index.manifest
    print(f"index: {manifest['documents']} documents, {manifest['clauses']} clauses, {manifest['units']} "
          f"indexed passages, model {manifest['model']}, built {manifest['built_at']} "
          f"in {manifest.get('build_seconds', 0):.1f}s -> {settings.index_dir}")
    pieces = manifest.get("token_pieces", 0)
    print(f"late interaction: {pieces} word-piece vectors kept" if pieces else
          "late interaction: off (no word-piece vectors kept: over POLICYBOT_TOKEN_VECTORS_MB, or it is 0)")
    return 0


def _documents(settings: Settings):  # noqa: ANN202
    from index.readers import load_documents

    return load_documents(settings.policy_dir)


def cmd_clauses(args: argparse.Namespace, settings: Settings) -> int:
    from index.store import CURATED_FILE
    from index.units import load_curated

    documents = _documents(settings)
    if args.document:
        documents = [d for d in documents if args.document.lower() in (d.doc_id, Path(d.path).name.lower())
                     or args.document.lower() in d.meta.title.lower()]
        if not documents:
            raise CliError(f"no policy document matches {args.document!r}")
    curated = load_curated(settings.policy_dir / CURATED_FILE)
    for document in documents:
        meta = document.meta
        print(f"# {meta.title} [{document.doc_id}]")
        print(f"  owner: {meta.owner or '-'} | version: {meta.version_date or '-'} | review due: "
              f"{meta.review_due or '-'} | approved by: {meta.approved_by or '-'} | {meta.adopted or ''}")
        section = None
        for clause in document.clauses:
            if clause.section_label != section:
                section = clause.section_label
                print(f"\n  {section}")
            parent = f" (under {clause.parent})" if clause.parent else ""
            print(f"    {clause.number}{parent}: {clause.text}")
            for question in curated:
                if question.clause == clause.number and question.document in ("", document.doc_id):
                    print(f"        also asked as: {question.wording}")
        print()
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    for document in _documents(settings):
        clause = document.clause(args.clause)
        if clause is not None:
            print(f"{clause.number} — {clause.section_label} — {document.meta.title}")
            print(clause.text)
            return 0
    raise CliError(f"no clause {args.clause!r} in the policies (list them with: policybot clauses)")


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from bot.evaluate import evaluate, load_gold

    path = Path(args.gold)
    if not path.exists():
        raise CliError(f"gold file {path} not found")
    items = load_gold(path)
    adviser = _adviser(settings)
    report = evaluate(items, adviser.ask, ranked=adviser.rank)
    if args.json:
        print(json.dumps({"metrics": report.metrics(), "misses": report.misses}, indent=2, ensure_ascii=False))
    else:
        print(report.to_text())
    return 0


def cmd_escalations(args: argparse.Namespace, settings: Settings) -> int:
    from bot.adviser import CONTACTS_FILE, OVERRIDES_FILE
    from bot.contacts import load_contacts
    from bot.escalation import apply_overrides, derive_rules

    documents = _documents(settings)
    rules = apply_overrides(derive_rules(documents), settings.policy_dir / OVERRIDES_FILE)
    contacts = load_contacts(settings.policy_dir / CONTACTS_FILE)
    if args.json:
        print(json.dumps([{"document": r.doc_id, "clause": r.clause, "roles": list(r.roles), "action": r.action,
                           "sentence": r.sentence, "source": r.source} for r in rules], indent=2, ensure_ascii=False))
        return 0
    for rule in rules:
        roles = "; ".join(f"{role} [{contacts.lookup(role).describe()}]" for role in rule.roles)
        origin = " (override)" if rule.source != "derived" else ""
        print(f"{rule.doc_id} {rule.clause}: {rule.action} -> {roles}{origin}")
        print(f"    “{rule.sentence}”")
    print(f"{len(rules)} rules")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from bot.check import check_policy_folder

    problems = check_policy_folder(settings)
    for problem in problems:
        print(problem)
    errors = [p for p in problems if "placeholder" not in p]
    print(f"{len(problems)} problem(s) found in {settings.policy_dir}" if problems else "policy_text is valid")
    return 1 if errors else 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.server import run_server

    reload_interval = settings.reload_seconds if args.reload_interval is None else args.reload_interval
    log_format = args.log_format or settings.log_format
    return run_server(settings, host=args.host, port=args.port, socket_mode=args.slack_socket_mode,
                      reload_interval=reload_interval, log_level=args.log_level or settings.log_level,
                      log_json=log_format == "json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="policybot", description="Answer questions from the council's policies.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question (or '-' to read one question per line from stdin)")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON (one object per line with '-')")
    ask.set_defaults(func=cmd_ask)

    index = sub.add_parser("index", help="build or refresh the index and print what it holds")
    index.add_argument("--rebuild", action="store_true", help="rebuild even if the index is current")
    index.set_defaults(func=cmd_index)

    clauses = sub.add_parser("clauses", help="list the parsed clauses so an officer can check the parse")
    clauses.add_argument("document", nargs="?", help="a document id, file name or part of its title")
    clauses.set_defaults(func=cmd_clauses)

    show = sub.add_parser("show", help="print one clause, e.g. policybot show 5.3")
    show.add_argument("clause")
    show.set_defaults(func=cmd_show)

    evaluate = sub.add_parser("eval", help="measure answer quality on a gold question set (JSONL)")
    evaluate.add_argument("gold")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_eval)

    escalations = sub.add_parser("escalations", help="list the escalation rules read from the policies")
    escalations.add_argument("--json", action="store_true")
    escalations.set_defaults(func=cmd_escalations)

    check = sub.add_parser("check", help="validate everything in policy_text/ (documents, contacts, synonyms ...)")
    check.set_defaults(func=cmd_check)

    serve = sub.add_parser("serve", help="run the Slack and Teams server")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--slack-socket-mode", action="store_true", help="connect to Slack over Socket Mode")
    serve.add_argument("--reload-interval", type=float, default=None, metavar="SECONDS",
                       help="how often to check policy_text/ for changes (0: only on SIGHUP); "
                            "default POLICYBOT_RELOAD_SECONDS or 3")
    serve.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="default POLICYBOT_LOG_LEVEL or INFO")
    serve.add_argument("--log-format", default=None, choices=["json", "text"],
                       help="one JSON object per line or plain text; default POLICYBOT_LOG_FORMAT or json")
    serve.set_defaults(func=cmd_serve)

    for extra in _extra_commands():
        extra(sub)
    return parser


def _extra_commands():  # noqa: ANN202
    """Commands contributed by optional modules (record store, benchmarks, Teams packaging)."""
    commands = []
    for module_name in ("bot.record", "bot.bench", "bot.bench_quality", "bot.teams_package"):
        try:
            module = __import__(module_name, fromlist=["add_commands"])
        except ImportError:
            continue
        adder = getattr(module, "add_commands", None)
        if adder is not None:
            commands.append(adder)
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    from index.datafile import DataFileError
    from index.embedder import ModelError
    from index.readers import PolicyError

    try:
        settings = Settings.from_env()
        return int(args.func(args, settings) or 0)
    except (CliError, PolicyError, ModelError, DataFileError, ValueError) as exc:
        print(f"policybot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
