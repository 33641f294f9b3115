"""workers.threads: one worker QObject on its own thread, asked by queued signals, stopped and joined."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from enclave.workers.threads import WorkerThread


class Worker(QObject):
    answered = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool, bool]] = []  # slot, on the worker's thread, on the GUI thread
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _record(self, name: str) -> None:
        current = QThread.currentThread()
        gui = QCoreApplication.instance()
        assert gui is not None
        self.calls.append((name, current is self.thread(), current is gui.thread()))

    @Slot()
    def begin(self) -> None:
        self._record("begin")

    @Slot(str)
    def ask(self, text: str) -> None:
        self._record("ask")
        self.answered.emit(text.upper())

    @Slot()
    def close(self) -> None:
        self._record("close")

    @Slot()
    def block(self) -> None:
        """A long step that ignores being asked to stop until the test opens the gate."""
        self.entered.set()
        self.gate.wait(10)


class Asker(QObject):
    """The GUI side: its signals reach the worker queued, and the worker's answers come back to it queued."""

    ask = Signal(str)
    close = Signal()
    block = Signal()
    answered = Signal(str)

    @Slot(str)
    def on_answer(self, text: str) -> None:
        self.answered.emit(text)


def wire(worker: Worker) -> Asker:
    asker = Asker()
    asker.ask.connect(worker.ask)
    asker.close.connect(worker.close)
    asker.block.connect(worker.block)
    worker.answered.connect(asker.on_answer)
    return asker


def test_a_queued_call_runs_on_the_worker_thread_and_stop_joins_it(qtbot: Any) -> None:
    worker = Worker()
    asker = wire(worker)
    deleted_on: list[int] = []
    worker.destroyed.connect(lambda: deleted_on.append(threading.get_ident()), Qt.ConnectionType.DirectConnection)
    wt = WorkerThread(worker, "test-worker", on_start=worker.begin)
    thread = wt.qthread
    assert thread is not None and thread.objectName() == "test-worker"
    assert not wt.running
    wt.start()
    assert wt.running
    with qtbot.waitSignal(asker.answered, timeout=5000) as answer:
        asker.ask.emit("hello")
    assert answer.args == ["HELLO"]
    assert worker.calls == [("begin", True, False), ("ask", True, False)]

    assert wt.stop(5000, before_quit=asker.close.emit)  # the queued shutdown slot runs before the thread ends
    assert worker.calls[-1] == ("close", True, False)
    assert not wt.running and wt.qthread is None
    assert not shiboken6.isValid(worker)  # deleted as the thread finished, on that thread
    assert deleted_on and deleted_on[0] != threading.main_thread().ident


def test_stop_twice_is_fine(qtbot: Any) -> None:
    worker = Worker()
    asked: list[int] = []
    wt = WorkerThread(worker, "test-twice")
    wt.start()
    assert wt.stop(5000, before_quit=lambda: asked.append(1))
    assert wt.stop(5000, before_quit=lambda: asked.append(2))
    assert asked == [1]
    wt.start()  # one life: a stopped worker thread does not start again
    assert not wt.running


def test_a_thread_never_started_stops_at_once(qtbot: Any) -> None:
    asked: list[int] = []
    wt = WorkerThread(Worker(), "test-idle")
    assert wt.stop(100, before_quit=lambda: asked.append(1))
    assert not asked and not wt.running
    wt.start()
    assert not wt.running


def test_a_worker_that_does_not_stop_is_reported_after_the_timeout(qtbot: Any, caplog: Any) -> None:
    worker = Worker()
    asker = wire(worker)
    wt = WorkerThread(worker, "test-stuck")
    wt.start()
    try:
        asker.block.emit()
        assert worker.entered.wait(5)
        began = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="enclave.workers.threads"):
            assert not wt.stop(200)
        assert time.monotonic() - began < 2
        assert "test-stuck did not stop within 200 ms" in caplog.text
        assert wt.running
    finally:
        worker.gate.set()  # let it end: the quit asked for above is next in its queue
        assert wt.stop(5000)
    assert not wt.running
