"""One worker QObject on a named thread of its own: the engine, the documents and the downloads each have one.

The sibling of tasks.py (one-off plain functions on a pool): here one long-lived object keeps its state (a loaded
model, an open index) on one thread. ``WorkerThread(worker, "enclave-engine")`` creates the QThread and moves the
worker there, so the worker's slots, reached by queued signals from the GUI thread (or ``on_start``, a slot of the
worker called on the thread as it starts), never run on the GUI thread and the worker never touches a widget: it
answers with signals. What it guarantees:

- ``stop(timeout_ms, before_quit)`` calls ``before_quit`` (set a cancel Event, emit a queued shutdown slot), then
  quits the thread's event loop *through the worker's own queue*: whatever was asked of the worker before stop(),
  the shutdown slot included, runs first, then the thread ends. It waits up to ``timeout_ms``.
- The worker is deleted on its own thread as that thread ends (``finished`` -> ``deleteLater``), with its timers and
  watchers, never from the GUI thread; the QThread object is released once joined. No thread is left behind.
- A thread still running after ``timeout_ms`` is logged and reported (False); its QThread is kept, never destroyed
  while it runs (that aborts the process), and a later stop() waits for it again. Once joined, stop() is a no-op.
- One life: start() runs the thread once; after stop() (its worker is gone) start() does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

log = logging.getLogger(__name__)


class _Quit(QObject):
    """Lives on the worker's thread: ends its event loop when the queue reaches it."""

    @Slot()
    def quit(self) -> None:
        self.thread().quit()


class WorkerThread(QObject):
    """``worker`` on a QThread named ``name``. Create, start and stop it on the GUI thread."""

    _quitRequested = Signal()

    def __init__(self, worker: QObject, name: str, *, on_start: Callable[[], object] | None = None) -> None:
        super().__init__()
        self.worker = worker
        self.name = name
        self._thread: QThread | None = QThread()
        self._thread.setObjectName(name)
        self._quit = _Quit()
        for obj in (worker, self._quit):
            obj.moveToThread(self._thread)
            self._thread.finished.connect(obj.deleteLater)  # emitted on the thread itself: deleted there
        self._quitRequested.connect(self._quit.quit)  # queued: behind what the worker was asked before
        if on_start is not None:
            self._thread.started.connect(on_start)
        self._started = False
        self._stopping = False

    @property
    def qthread(self) -> QThread | None:
        """The QThread, until stop() has joined it."""
        return self._thread

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def start(self) -> None:
        """Start the thread; again, or after stop(), nothing happens."""
        if self._thread is not None and not self._started and not self._stopping:
            self._started = True
            self._thread.start()

    def stop(self, timeout_ms: int = 30_000, before_quit: Callable[[], object] | None = None) -> bool:
        """Ask the worker to finish (``before_quit``), end the thread and join it: False if it still runs after
        ``timeout_ms`` (logged). ``before_quit`` and the quit are sent once; once joined, stop() does nothing."""
        thread = self._thread
        if thread is None or not self._started:  # joined already, or never ran: nothing to ask, nothing to join
            self._stopping = True
            return True
        if not self._stopping:
            self._stopping = True
            if before_quit is not None:
                before_quit()
            self._quitRequested.emit()
        if not thread.wait(timeout_ms):
            log.error("thread %s did not stop within %d ms", self.name, timeout_ms)
            return False
        self._thread = None  # joined: the worker was deleted on it as it finished; the QThread goes now
        return True


__all__ = ["WorkerThread"]
