"""`policybot bench-quality`: the shipped retrieval pipeline against BM25 alone and dense alone on PrivacyQA.

PrivacyQA (EMNLP 2019, test split; ../shared/bench/privacyqa) asks real users' questions about 8 privacy
policies with sentence-level relevance labels. Each policy's sentences become the "clauses" of one index, built
by the same code as a council's policy; each method ranks them; P@1, MRR@10 and nDCG@10 (binary relevance) are
averaged over the judged questions that have at least one relevant sentence.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from bot.settings import PROJECT_ROOT, Settings
from index.clauses import Clause, Document, DocumentMeta
from index.lexical import tokenize
from index.search import LateInteraction, dense_by_clause, hybrid_rank
from index.store import PolicyIndex, embed_documents
from index.tokens import encode_question

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "bench" / "privacyqa"


def ndcg_at_10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, sid in enumerate(ranked[:10]) if sid in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


def mrr_at_10(ranked: list[str], relevant: set[str]) -> float:
    for i, sid in enumerate(ranked[:10]):
        if sid in relevant:
            return 1 / (i + 1)
    return 0.0


def _index_for(doc: dict, encoder, folder: Path) -> PolicyIndex:  # noqa: ANN001
    clauses = tuple(Clause(doc["doc_file_id"], s["sid"], s["text"], "", "") for s in doc["sentences"])
    document = Document(doc["doc_file_id"], "", DocumentMeta(title=doc["doc_id"]), clauses)
    clauses_list, units, faiss_index, tokens = embed_documents([document], [], encoder, token_folder=folder)
    return PolicyIndex([document], clauses_list, units, faiss_index, {}, [], tokens=tokens)


def run(data_dir: Path, settings: Settings, lexical_weight: float | None = None,
        late: LateInteraction | None = None) -> dict:
    """Each method's mean P@1, MRR@10 and nDCG@10; `lexical_weight` and `late` override the shipped Tuning's."""
    import tempfile

    import faiss  # noqa: F401 - loaded before single_thread_blas, so its BLAS is limited too

    from bot.adviser import Tuning
    from index.embedder import load_encoder
    from index.search import single_thread_blas

    tuning = Tuning()
    weight = tuning.lexical_weight if lexical_weight is None else lexical_weight
    late = late or tuning.late
    encoder = load_encoder(settings.model)
    single_thread_blas()
    queries = [json.loads(line) for line in (data_dir / "queries.jsonl").read_text().splitlines() if line.strip()]
    methods = ("bm25", "dense", "late interaction", "first stage", "shipped")
    sums = {m: {"p@1": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0} for m in methods}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="policybot-privacyqa-") as scratch:
        counted = _score_documents(data_dir, queries, encoder, Path(scratch), sums, tuning, weight, late)
    results = {m: {k: round(v / counted, 4) for k, v in scores.items()} for m, scores in sums.items()}
    return {"questions": counted, "lexical_weight": weight, "late": late.__dict__,
            "seconds": round(time.perf_counter() - started, 1), "results": results}


def _score_documents(data_dir: Path, queries: list[dict], encoder, scratch: Path, sums: dict, tuning,  # noqa: ANN001
                     weight: float, late: LateInteraction) -> int:
    """Index each policy (its word pieces in `scratch`), rank its judged questions by every method into `sums`;
    returns how many questions were counted."""
    counted = 0
    for number, doc_path in enumerate(sorted((data_dir / "docs").glob("*.json"))):
        doc = json.loads(doc_path.read_text())
        index = _index_for(doc, encoder, scratch / str(number))
        sids = [c.number for c in index.clauses]
        everything = len(index.units)
        for query in (q for q in queries if q["doc_file_id"] == doc["doc_file_id"]):
            relevant = set(query["relevant_sids"])
            if not query.get("judged", True) or not relevant:
                continue
            counted += 1
            vector, question = encode_question(encoder, query["query"])
            terms = tokenize(query["query"])
            lexical = index.lexical.scores(terms)
            dense = dense_by_clause(index, vector, everything)
            alone = LateInteraction(weight=1.0, lexical_weight=0.0, depth=everything, idf_power=late.idf_power)
            rankings = {
                "bm25": [sids[i] for i in np.argsort(-lexical, kind="stable")],
                "dense": [sids[i] for i in sorted(dense, key=dense.get, reverse=True)],
                "late interaction": [sids[i] for i in hybrid_rank(index, vector, [], everything, 0.0, question,
                                                                   alone).order],
                "first stage": [sids[i] for i in hybrid_rank(index, vector, terms, tuning.candidates, weight).order],
                "shipped": [sids[i] for i in hybrid_rank(index, vector, terms, tuning.candidates, weight, question,
                                                          late).order],
            }
            for method, ranked in rankings.items():
                sums[method]["p@1"] += 1.0 if ranked and ranked[0] in relevant else 0.0
                sums[method]["mrr@10"] += mrr_at_10(ranked, relevant)
                sums[method]["ndcg@10"] += ndcg_at_10(ranked, relevant)
    return counted


def cmd_bench_quality(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli import CliError

    data_dir = Path(args.data)
    if not (data_dir / "queries.jsonl").exists():
        raise CliError(f"PrivacyQA data not found in {data_dir} (pass --data)")

    late = None
    if args.late is not None:
        try:
            weight, lexical, depth, power = (float(x) for x in args.late.split(","))
        except ValueError as exc:
            raise CliError(f"--late {args.late!r}: give four numbers, WEIGHT,LEX,DEPTH,POWER (e.g. 1,0,64,2)") from exc
        late = LateInteraction(weight, lexical, int(depth), power)
    report = run(data_dir, settings, args.lexical_weight, late)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"PrivacyQA test split: {report['questions']} judged questions with a relevant sentence, "
          f"{report['seconds']}s")
    print(f"{'method':18} {'P@1':>7} {'MRR@10':>8} {'nDCG@10':>8}")
    for method, scores in report["results"].items():
        print(f"{method:18} {scores['p@1']:7.3f} {scores['mrr@10']:8.3f} {scores['ndcg@10']:8.3f}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench-quality", help="retrieval quality on PrivacyQA: BM25, dense and shipped pipeline")
    bench.add_argument("--data", default=str(DEFAULT_DATA), help="the privacyqa folder")
    bench.add_argument("--lexical-weight", type=float, default=None, help="override the fusion weight")
    bench.add_argument("--late", default=None, metavar="W,LEX,DEPTH,POWER",
                       help="override the late-interaction re-ranking (weight, BM25 weight, depth, IDF power)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench_quality)
