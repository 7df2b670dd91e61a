"""Prometheus metrics for one server: a private CollectorRegistry per app, so tests can run several side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PLATFORMS = ("slack", "teams", "cli")
OUTCOMES = ("answered", "abstained", "help", "error")
RELOAD_RESULTS = ("success", "failed")
# Answers take tens of milliseconds warm; the top buckets catch a cold start or a saturated CPU.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER = "other"
MAX_LABEL_CHARS = 60


def outcome_of(kind: str, answered: bool) -> str:
    """The outcome label for an Answer's kind: answered (a policy or clause answer), abstained, or help (greetings,
    help and empty messages)."""
    if answered:
        return "answered"
    if kind == "abstain":
        return "abstained"
    return "help"


class Metrics:
    """Every metric the server exposes at /metrics. Label values are bounded: platforms and outcomes come from
    fixed lists, and a role is recorded only when the caller says it is one the policies or contacts name."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.questions = Counter("policybot_questions", "Questions answered, by platform and outcome "
                                 "(answered, abstained, help, error).", ["platform", "outcome"], registry=r)
        self.escalations = Counter("policybot_escalations", "Escalations by role: 'advised' when an answer names "
                                   "a role to contact, 'requested' when someone sends their question to it.",
                                   ["role", "stage"], registry=r)
        self.answer_latency = Histogram("policybot_answer_latency_seconds", "Time to work out an answer (the "
                                        "adviser only, not the chat platform round trip).", ["platform"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.api_errors = Counter("policybot_platform_api_errors", "Calls to the Slack or Teams APIs that failed "
                                  "after retries, by platform and method.", ["platform", "method"], registry=r)
        self.reloads = Counter("policybot_reloads", "Policy reloads, by result (a failed reload leaves the previous "
                               "index serving).", ["result"], registry=r)
        self.ready = Gauge("policybot_ready", "1 when the adviser is loaded and answering.", registry=r)
        self.index_documents = Gauge("policybot_index_documents", "Policy documents in the live index.",
                                     registry=r)
        self.index_clauses = Gauge("policybot_index_clauses", "Clauses in the live index.", registry=r)
        self.index_units = Gauge("policybot_index_units", "Indexed passages (clauses, sentences, curated "
                                 "wordings) in the live index.", registry=r)
        self.index_build_seconds = Gauge("policybot_index_build_seconds", "How long the live index took to build.",
                                         registry=r)
        self.index_loaded = Gauge("policybot_index_loaded_timestamp_seconds", "When the live index was loaded "
                                  "(Unix time).", registry=r)
        for platform in PLATFORMS[:2]:  # present from the start, so a rate() over them is defined at zero
            for outcome in OUTCOMES:
                self.questions.labels(platform, outcome)
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)

    def observe_question(self, platform: str, outcome: str, seconds: float | None) -> None:
        platform = platform if platform in PLATFORMS else OTHER
        self.questions.labels(platform, outcome if outcome in OUTCOMES else OTHER).inc()
        if seconds is not None:
            self.answer_latency.labels(platform).observe(seconds)

    def observe_escalation(self, role: str, stage: str) -> None:
        self.escalations.labels(role.strip().lower()[:MAX_LABEL_CHARS] or OTHER, stage).inc()

    def observe_api_error(self, platform: str, method: str) -> None:
        self.api_errors.labels(platform if platform in PLATFORMS else OTHER, method[:MAX_LABEL_CHARS]).inc()

    def observe_index(self, documents: int, clauses: int, units: int, build_seconds: float, loaded_at: float) -> None:
        self.ready.set(1)
        self.index_documents.set(documents)
        self.index_clauses.set(clauses)
        self.index_units.set(units)
        self.index_build_seconds.set(build_seconds)
        self.index_loaded.set(loaded_at)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
