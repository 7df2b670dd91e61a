"""The adviser as a shared service for the chat server: loaded once, asked off the event loop, swapped atomically."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from bot.adviser import Adviser
from bot.answer import Answer
from bot.settings import Settings

log = logging.getLogger(__name__)


class AdviserService:
    """Holds the live Adviser. `ask` runs the CPU-bound work in a worker thread so the event loop keeps
    acknowledging Slack and Teams within their deadlines; `swap` replaces the adviser in one assignment, so a
    question in flight finishes on the adviser it started with."""

    def __init__(self, settings: Settings, adviser: Adviser | None = None, workers: int = 2) -> None:
        self.settings = settings
        self._adviser = adviser
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adviser")
        self.load_error: str = ""
        self.loaded_at: float = time.time() if adviser is not None else 0.0

    @property
    def ready(self) -> bool:
        return self._adviser is not None

    @property
    def adviser(self) -> Adviser:
        if self._adviser is None:
            raise RuntimeError("the adviser is still loading")
        return self._adviser

    async def start(self) -> None:
        """Load the encoder and index in a worker thread (first use builds the index)."""
        if self._adviser is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            adviser = await loop.run_in_executor(self._executor, Adviser.load, self.settings)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("adviser failed to load: %s", self.load_error)
            raise
        self.swap(adviser)

    def swap(self, adviser: Adviser) -> None:
        self._adviser = adviser
        self.loaded_at = time.time()

    async def ask(self, question: str, history: Sequence[str] = ()) -> Answer:
        adviser = self.adviser  # bound once: a swap during this question does not affect it
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, adviser.ask, question, tuple(history))

    async def run(self, fn, *args):  # noqa: ANN001, ANN201 - any blocking call (store writes, reloads)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
