"""Plain functions on worker threads, their results back on the GUI thread: superqt's ``thread_worker``, smaller.

The widgets must never wait for a disk, a model header or a probe, and the core functions that do (an import, a
registry read, a load plan) know nothing of Qt. ``TaskRunner.run(fn, *args, on_done=..., on_error=...)`` calls
``fn`` on one of the runner's own pool threads; its return value (or the exception it raised) comes back through a
queued signal, so ``on_done(result)`` / ``on_error(exception)`` run later on the thread that owns the runner, the
GUI thread, where they may touch widgets.

``shutdown()`` (from a closeEvent) drops results not yet delivered, forgets queued calls and waits for the running
ones, so no pool thread outlives its window. A task's result can also be dropped alone with ``Task.cancel()``.

One thread per runner by default: these functions are mostly Python (a GGUF header is parsed in Python) and hold the
GIL, which the GUI thread needs for every Python slot and paint it runs. Two such threads let it wait for the GIL far
longer: opening Models with two large cold headers stalled the GUI thread 60-520 ms with two pool threads, 35-70 ms
with one (tests/test_ui_responsive.py, 2 loaded cores). What the user asked for goes first: ``priority``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, SignalInstance, Slot

log = logging.getLogger(__name__)

URGENT = 1  # the priority of a call someone waits for (an import, a dialog's list); background checks have 0


class Task:
    """One call of ``fn``; a handle for its caller. ``done`` once its result was delivered (or dropped)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_done: Callable[[Any], object] | None,
        on_error: Callable[[BaseException], object] | None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.on_done = on_done
        self.on_error = on_error
        self.cancelled = False
        self.done = False

    def cancel(self) -> None:
        """Drop the result: neither callback runs (a call already running still runs to its end)."""
        self.cancelled = True

    def __repr__(self) -> str:
        return f"<Task {getattr(self.fn, '__qualname__', self.fn)!r}>"


class _Call(QRunnable):
    def __init__(self, task: Task, report: SignalInstance) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the runner keeps it until its result is delivered
        self._task = task
        self._report = report

    def run(self) -> None:
        task = self._task
        if task.cancelled:
            ok, value = False, None
        else:
            try:
                ok, value = True, task.fn(*task.args, **task.kwargs)
            except Exception as exc:
                ok, value = False, exc
        # RuntimeError: the runner itself is gone (deleted with its window), so nobody waits for this result.
        with contextlib.suppress(RuntimeError):
            self._report.emit(task, ok, value)


class TaskRunner(QObject):
    """A small thread pool of its own, for the functions its owner (a window, a dialog) needs run off its thread."""

    idle = Signal()  # every task started so far has been delivered
    _report = Signal(object, bool, object)  # task, ok, result or exception: from a pool thread

    def __init__(self, parent: QObject | None = None, *, name: str = "enclave-tasks", max_threads: int = 1) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self._pool = QThreadPool(self)
        self._pool.setObjectName(name)
        self._pool.setMaxThreadCount(max_threads)
        self._calls: dict[Task, _Call] = {}
        self._closed = False
        self._report.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_done: Callable[[Any], object] | None = None,
        on_error: Callable[[BaseException], object] | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> Task:
        """Call ``fn(*args, **kwargs)`` on a pool thread; its outcome goes to ``on_done`` or ``on_error`` on this
        object's thread. Without ``on_error`` an exception is logged. After ``shutdown()`` nothing runs.

        ``priority``: queued calls with a higher one start first (what a user waits for before background checks)."""
        task = Task(fn, args, kwargs, on_done, on_error)
        if self._closed:
            task.cancel()
            task.done = True
            return task
        call = _Call(task, self._report)
        self._calls[task] = call
        self._pool.start(call, priority)
        return task

    @property
    def busy(self) -> bool:
        """Some task has not been delivered yet."""
        return bool(self._calls)

    @Slot(object, bool, object)
    def _deliver(self, task: Task, ok: bool, value: object) -> None:
        if self._calls.pop(task, None) is None:
            return  # dropped by shutdown()
        task.done = True
        try:
            if task.cancelled:
                return
            if ok:
                if task.on_done is not None:
                    task.on_done(value)
            elif isinstance(value, BaseException):
                if task.on_error is not None:
                    task.on_error(value)
                else:
                    log.error("%r failed", task, exc_info=value)
        finally:
            if not self._calls:
                self.idle.emit()

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Drop undelivered results, forget calls not yet started, wait for the running ones; run() no longer runs
        anything. For closeEvent: afterwards no thread of this runner is left."""
        self._closed = True
        for task in self._calls:
            task.cancel()
        self._pool.clear()
        if not self._pool.waitForDone(timeout_ms):
            log.warning("%s: a task still runs after %d ms", self.objectName(), timeout_ms)
        self._calls.clear()

    @staticmethod
    def of(owner: QObject) -> TaskRunner:
        """The runner that belongs to ``owner`` (a child object made on first use)."""
        runner = next((c for c in owner.children() if isinstance(c, TaskRunner)), None)
        if runner is None:
            runner = TaskRunner(owner, name=f"enclave-tasks-{type(owner).__name__}")
        return runner


def run_in_thread(
    fn: Callable[..., Any],
    *args: Any,
    parent: QObject,
    on_done: Callable[[Any], object] | None = None,
    on_error: Callable[[BaseException], object] | None = None,
    priority: int = 0,
    **kwargs: Any,
) -> Task:
    """``fn(*args, **kwargs)`` on the pool of ``parent``'s runner (``TaskRunner.of(parent)``); the result goes to
    ``on_done`` / ``on_error`` on the GUI thread. Call ``TaskRunner.of(parent).shutdown()`` when ``parent`` closes."""
    return TaskRunner.of(parent).run(fn, *args, on_done=on_done, on_error=on_error, priority=priority, **kwargs)


__all__ = ["URGENT", "Task", "TaskRunner", "run_in_thread"]
