"""One model, one queue: every API request waits its turn for the single engine, in arrival order.

``Scheduler`` owns one thread. A job's work runs there (a backend's ``stream_chat``, or a hand-off to the GUI's engine
thread); its events are handed to the asyncio loop that submitted it. A job that has not started within
``max_wait_s`` is withdrawn (the server answers 503 with ``Retry-After``); so is one whose client went away. A running
job stops through its ``GenerationControl.cancel`` event, which the engine polls between tokens and prompt batches.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enclave.engine.types import GenerationControl

log = logging.getLogger(__name__)

# What a job's work function receives: the control to honour and a callback for each event it produces.
Emit = Callable[[Any], None]
Work = Callable[[GenerationControl, Emit], None]


class QueueFull(Exception):
    """Too many requests are already waiting."""


class QueueTimeout(Exception):
    """The request waited longer than the limit without starting."""


class SchedulerClosed(Exception):
    """The server is shutting down."""


@dataclass(frozen=True)
class Activity:
    """What the engine queue is doing: one running request at most, and how many wait behind it."""

    running: int
    waiting: int


@dataclass(frozen=True)
class JobDone:
    """The last item a job delivers; ``error`` is what its work raised, if anything."""

    error: BaseException | None = None


_WAITING, _RUNNING, _DONE, _WITHDRAWN = "waiting", "running", "done", "withdrawn"


@dataclass(eq=False)
class Job:
    work: Work
    loop: asyncio.AbstractEventLoop
    control: GenerationControl = field(default_factory=GenerationControl)
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    submitted_at: float = field(default_factory=time.monotonic)
    state: str = _WAITING

    def _deliver(self, item: Any) -> None:
        """Called on the scheduler thread: hand ``item`` to the submitting loop (dropped if that loop is gone)."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def _mark_started(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.started.set)


class Scheduler:
    """A FIFO of jobs run one at a time on one thread. ``submit`` and ``wait_started`` are called from asyncio."""

    def __init__(
        self,
        *,
        max_wait_s: float = 600.0,
        max_waiting: int = 64,
        name: str = "enclave-api-queue",
        on_activity: Callable[[Activity], None] | None = None,
    ) -> None:
        self.max_wait_s = max_wait_s
        self.max_waiting = max_waiting
        self._on_activity = on_activity
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._closed = False
        self.submitted = 0  # jobs accepted so far (tests and diagnostics)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # --- asyncio side -------------------------------------------------------------------------------------------

    def submit(self, work: Work) -> Job:
        """Queue ``work``; raises QueueFull or SchedulerClosed. Must be called from a running event loop."""
        job = Job(work=work, loop=asyncio.get_running_loop())
        with self._cond:
            if self._closed:
                raise SchedulerClosed
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull
            self._waiting.append(job)
            self.submitted += 1
            self._cond.notify_all()
        self._report()
        return job

    async def wait_started(self, job: Job) -> None:
        """Return once ``job`` runs; raise QueueTimeout (and withdraw it) if it waits longer than ``max_wait_s``."""
        remaining = self.max_wait_s - (time.monotonic() - job.submitted_at)
        try:
            await asyncio.wait_for(job.started.wait(), timeout=max(remaining, 0.0))
        except TimeoutError:
            if self._take_back(job):
                raise QueueTimeout from None
            await job.started.wait()  # it started just as the limit passed: serve it

    def _take_back(self, job: Job) -> bool:
        """Take ``job`` out of the queue if it has not started; True if it was taken."""
        with self._cond:
            if job.state != _WAITING:
                return False
            job.state = _WITHDRAWN
            with contextlib.suppress(ValueError):
                self._waiting.remove(job)
        self._report()
        return True

    def withdraw(self, job: Job) -> bool:
        """The client is gone: take a job that has not started out of the queue (True), or cancel it (False)."""
        if self._take_back(job):
            return True
        job.control.cancel.set()
        return False

    @property
    def activity(self) -> Activity:
        with self._cond:
            return Activity(running=int(self._running is not None), waiting=len(self._waiting))

    def position(self, job: Job) -> int:
        """How many jobs run or wait before ``job`` (0: it is running)."""
        with self._cond:
            if job.state != _WAITING:
                return 0
            ahead = self._waiting.index(job) if job in self._waiting else 0
            return ahead + int(self._running is not None)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Cancel the running job, drop the waiting ones (their clients get an error) and join the thread."""
        self.shutdown_nowait()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the API queue thread did not stop within %.0f s", timeout)

    def shutdown_nowait(self) -> None:
        """Accept nothing more, cancel the running job and drop the waiting ones, without waiting for the thread."""
        with self._cond:
            self._closed = True
            dropped = list(self._waiting)
            self._waiting.clear()
            if self._running is not None:
                self._running.control.cancel.set()
            self._cond.notify_all()
        for job in dropped:
            job.state = _WITHDRAWN
            job._deliver(JobDone(SchedulerClosed()))
            job._mark_started()

    # --- the queue thread ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                job.state = _RUNNING
                self._running = job
            self._report()
            job._mark_started()
            error: BaseException | None = None
            try:
                if not job.control.cancel.is_set():
                    job.work(job.control, job._deliver)
            except BaseException as exc:  # delivered to the client; the queue keeps serving
                error = exc
            with self._cond:
                job.state = _DONE
                self._running = None
            job._deliver(JobDone(error))
            self._report()

    def _report(self) -> None:
        if self._on_activity is not None:
            try:
                self._on_activity(self.activity)
            except Exception:
                log.exception("API activity report failed")
