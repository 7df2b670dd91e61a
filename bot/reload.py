"""Policy updates without a restart: watch policy_text/ and the index's CURRENT pointer, rebuild in the background
and swap the adviser in when the new index is ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bot.adviser import Adviser
from bot.service import AdviserService
from index.embedder import load_encoder

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 3.0


@dataclass(frozen=True)
class FolderState:
    """What the watcher compares between polls: every file in the policy folder by name, size, modification
    time and inode (cheap: no file is read), and the build the index's CURRENT pointer names."""

    files: tuple[tuple[str, int, int, int], ...]
    current: str


def policy_folder_files(policy_dir: Path) -> tuple[tuple[str, int, int, int], ...]:
    """(name, size, mtime_ns, inode) of every file in the folder: policies and their data files (contacts,
    synonyms, curated wordings, overrides), since the adviser reads them all. Missing folder: empty."""
    entries = []
    try:
        with os.scandir(policy_dir) as listing:
            for entry in listing:
                try:
                    if entry.is_file():
                        stat = entry.stat()
                        entries.append((entry.name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
                except OSError:  # deleted between listing and stat: the next poll sees it gone
                    continue
    except OSError:
        return ()
    return tuple(sorted(entries))


def current_build(index_dir: Path) -> str:
    try:
        return (index_dir / "CURRENT").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


class PolicyWatcher:
    """Keeps the served adviser in step with the policy folder, from inside the server.

    Three triggers lead to the same reload: a change to any file in the policy folder (polled every `interval`
    seconds, by name, size, mtime and inode; no inotify), a change of the index's CURRENT pointer (`policybot
    index` run beside the server wrote a new build), and `request()` (SIGHUP). A change is acted on once the folder
    has looked the same for one whole interval, so a burst of edits (an editor saving several files, a copy of a
    whole folder) rebuilds once. Reloads run one at a time, in a thread of their own: the index is rebuilt only
    when the policy files' fingerprint no longer matches it (`load_or_build`), with the encoder already in memory,
    and the new adviser is swapped in atomically. If the policy cannot be read or parsed, the previous adviser
    keeps serving, the reason is logged, and the watcher waits for the next change before trying again."""

    def __init__(self, service: AdviserService, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self.service = service
        self.settings = service.settings
        self.interval = interval
        self._requested = asyncio.Event()
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-reload")
        self._served: FolderState | None = None  # the state the live adviser was loaded from
        self._pending: FolderState | None = None  # a changed state seen at the last poll, not yet acted on
        # The encoder for a reload when no adviser has loaded (a failed start): loaded once then, and kept.
        self.encoder = None
        self._task: asyncio.Task | None = None

    def state(self) -> FolderState:
        return FolderState(policy_folder_files(self.settings.policy_dir), current_build(self.settings.index_dir))

    def request(self) -> None:
        """Reload as soon as possible, whether or not anything changed (SIGHUP). Safe to call from a signal
        handler registered with loop.add_signal_handler."""
        log.info("policy reload requested", extra={"event": "reload_requested"})
        self._requested.set()

    def start(self, after: asyncio.Future | None = None) -> asyncio.Task:
        """Start watching, once `after` (the initial load) has finished, successfully or not."""
        self._task = asyncio.get_running_loop().create_task(self._run(after))
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, after: asyncio.Future | None) -> None:
        await self.prime()  # before the initial load starts reading, so an edit made while it loads is noticed
        if after is not None:
            await asyncio.wait([after])  # its outcome is the service's business (load_error); ours is what follows
            # A first start builds the index and moves CURRENT: that is what is being served, not a change.
            pointer = await asyncio.to_thread(current_build, self.settings.index_dir)
            self._served = FolderState(self._served.files, pointer)
        while True:
            if await self._wait():
                await self.reload(reason="requested")
            elif self.interval > 0:
                await self.poll()

    async def prime(self) -> None:
        """Take the folder as it is now to be what the live adviser was loaded from."""
        self._served = await self._state()
        self._pending = None

    async def poll(self) -> bool:
        """One look at the folder; True if it led to a reload (successful or not). A change is acted on only when
        the previous poll saw the same changed state, i.e. once the folder has been still for an interval."""
        now = await self._state()
        if self._served is None or now == self._served:
            self._pending = None
            return False
        if now != self._pending:
            self._pending = now  # still changing (or just changed): wait for it to settle
            return False
        self._pending = None
        reason = "policy folder changed" if now.files != self._served.files else "index rebuilt elsewhere"
        await self.reload(reason=reason)
        return True

    async def _wait(self) -> bool:
        """Sleep one interval (or until a reload is requested); True when one was."""
        try:
            if self.interval > 0:
                await asyncio.wait_for(self._requested.wait(), self.interval)
            else:
                await self._requested.wait()
        except TimeoutError:
            return False
        self._requested.clear()
        return True

    async def _state(self) -> FolderState:
        return await asyncio.to_thread(self.state)  # not the reload thread: a poll never waits behind a rebuild

    async def reload(self, reason: str = "requested") -> bool:
        """Load (rebuilding if the policy changed) and swap in a new adviser; True on success. Never raises for
        a bad policy: the previous adviser keeps serving and the failure is logged and counted."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            before = await self._state()
            previous = self.service.current  # None when the initial load failed
            started = time.perf_counter()
            try:
                adviser = await loop.run_in_executor(self._executor, self._load, previous)
            except Exception as exc:
                # Record what failed, so the same broken folder is not retried every interval.
                pointer = await asyncio.to_thread(current_build, self.settings.index_dir)
                self._served = FolderState(before.files, pointer)
                why = f"{type(exc).__name__}: {exc}"
                self.service.reload_error = why
                self.service.metrics.reloads.labels("failed").inc()
                log.error("policy reload failed; %s: %s", "the previous index keeps serving" if previous
                          else "still no index to serve", why,
                          extra={"event": "reload_failed", "reason": reason, "error": why})
                return False
            self.service.swap(adviser)
            self.service.reload_error = ""
            # Our own save may have moved CURRENT: take the pointer as it is now, so that is not a change.
            self._served = FolderState(before.files, await asyncio.to_thread(current_build, self.settings.index_dir))
            self.service.metrics.reloads.labels("success").inc()
            old_hash = previous.index.manifest.get("policy_hash") if previous is not None else None
            log.info("policy reloaded", extra={
                "event": "reloaded", "reason": reason, "seconds": round(time.perf_counter() - started, 3),
                "policy_changed": adviser.index.manifest.get("policy_hash") != old_hash,
                **self.service.index_summary()})
            return True

    def _load(self, previous: Adviser | None) -> Adviser:
        """In the reload thread: the index for the policy folder as it is now (loaded if CURRENT already holds a
        build of it, rebuilt and saved if not) with the encoder already in memory, and a fresh adviser on it
        (re-reading contacts, synonyms and escalation overrides)."""
        if previous is not None:
            self.encoder = previous.encoder
        elif self.encoder is None:
            self.encoder = load_encoder(self.settings.model)
        return Adviser.load(self.settings, encoder=self.encoder)
