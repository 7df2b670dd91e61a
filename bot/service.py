"""The adviser as a shared service for the chat server: loaded once, asked off the event loop, swapped atomically,
and observed (one structured log event and the metrics for every question)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from bot.adviser import Adviser
from bot.answer import Answer
from bot.metrics import Metrics, outcome_of
from bot.settings import Settings

log = logging.getLogger(__name__)
QUESTION_EVENT = "question"


class AdviserService:
    """Holds the live Adviser. `ask` runs the CPU-bound work in a worker thread so the event loop keeps
    acknowledging Slack and Teams within their deadlines; `swap` replaces the adviser in one assignment, so a
    question in flight finishes on the adviser it started with. The `observe_*` methods are how the adapters
    report what happened, for the logs and /metrics."""

    def __init__(self, settings: Settings, adviser: Adviser | None = None, workers: int = 2,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._adviser: Adviser | None = None
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adviser")
        self.load_error: str = ""
        self.reload_error: str = ""  # why the last reload failed ("" after a successful one)
        self.loaded_at: float = 0.0
        key = settings.pseudonym_key.reveal().encode() if settings.pseudonym_key else secrets.token_bytes(32)
        # Replaced by the record store's own (same key, same pseudonyms) when the server has one.
        self.pseudonymise: Callable[[str, str], str] = lambda platform, user: hmac.new(
            key, f"{platform}:{user}".encode(), hashlib.sha256).hexdigest()[:32]
        if adviser is not None:
            self.swap(adviser)

    @property
    def ready(self) -> bool:
        return self._adviser is not None

    @property
    def current(self) -> Adviser | None:
        """The live adviser, or None while none has loaded."""
        return self._adviser

    @property
    def adviser(self) -> Adviser:
        if self._adviser is None:
            raise RuntimeError("the adviser is still loading")
        return self._adviser

    async def start(self) -> None:
        """Load the encoder and index in a worker thread (first use builds the index). A failure is recorded in
        `load_error` (and /healthz) and logged; the policy watcher retries when the policy folder changes."""
        if self._adviser is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            adviser = await loop.run_in_executor(self._executor, Adviser.load, self.settings)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("adviser failed to load: %s", self.load_error, extra={"event": "load_failed"})
            raise
        self.swap(adviser)
        log.info("adviser loaded", extra={"event": "loaded", **self.index_summary()})

    def swap(self, adviser: Adviser) -> None:
        """Make `adviser` the live one. Questions already running keep the adviser they started with."""
        self._adviser = adviser
        self.loaded_at = time.time()
        self.load_error = ""
        index = adviser.index
        self.metrics.observe_index(len(index.documents), len(index.clauses), len(index.units),
                                   float(index.build_seconds or 0.0), self.loaded_at)

    def index_summary(self) -> dict:
        """What the live index holds, for /healthz and the logs; empty while loading."""
        if self._adviser is None:
            return {}
        manifest = self._adviser.index.manifest
        return {"documents": manifest.get("documents"), "clauses": manifest.get("clauses"),
                "units": manifest.get("units"), "built_at": manifest.get("built_at"),
                "policy_hash": str(manifest.get("policy_hash", ""))[:12],
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))}

    async def ask(self, question: str, history: Sequence[str] = ()) -> Answer:
        adviser = self.adviser  # bound once: a swap during this question does not affect it
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, adviser.ask, question, tuple(history))

    async def run(self, fn, *args):  # noqa: ANN001, ANN201 - any blocking call (store writes, reloads)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------------------------------ observing
    def observe_question(self, platform: str, user: str, answer: Answer | None, latency_ms: float | None,
                         question_id: str = "", error: BaseException | None = None) -> str:
        """Record one question: the metrics, and one "question" log event with its id, the asker's pseudonym,
        the platform, the outcome, the top clause and the latency. The question's text is never logged (it is in
        the record store, under its retention period). Returns the question id (a new one if none was given)."""
        question_id = question_id or uuid.uuid4().hex
        outcome = "error" if answer is None else outcome_of(answer.kind, answer.answered)
        seconds = latency_ms / 1000 if latency_ms is not None and answer is not None else None
        self.metrics.observe_question(platform, outcome, seconds)
        fields = {
            "event": QUESTION_EVENT, "question_id": question_id, "platform": platform,
            "user": self.pseudonymise(platform, user) if user else "", "outcome": outcome,
            "answered": bool(answer and answer.answered), "kind": answer.kind if answer else "",
            "top_clause": answer.top_clause if answer else None,
            "latency_ms": round(latency_ms, 1) if latency_ms is not None else None,
        }
        if answer is not None:
            escalations = [e.role for e in answer.escalations if e.required]
            fields["escalations"] = escalations
            for role in escalations:
                self.metrics.observe_escalation(self._known_role(role), "advised")
            log.info("question answered", extra=fields)
        else:
            fields["error"] = type(error).__name__ if error is not None else "unknown"
            log.warning("question failed", extra=fields)
        return question_id

    def observe_escalation_request(self, platform: str, role: str) -> None:
        """Someone sent their question to a role ("Ask <role>")."""
        self.metrics.observe_escalation(self._known_role(role), "requested")
        log.info("escalation requested", extra={"event": "escalation", "platform": platform,
                                                "role": self._known_role(role)})

    def observe_api_error(self, platform: str, method: str) -> None:
        """A Slack or Teams API call failed after its retries (the adapter has logged why)."""
        self.metrics.observe_api_error(platform, method)

    def _known_role(self, role: str) -> str:
        """The role as a metric label: only roles this council's policies or contacts name, else "other"."""
        name = str(role).strip().lower()
        adviser = self._adviser
        if adviser is None:
            return "other"
        known = {r.lower() for rule in adviser.rules for r in rule.roles} | {
            r.lower() for r in adviser.contacts.by_role} | {adviser.contacts.fallback_role.lower(), "policy owner"}
        return name if name in known else "other"

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
