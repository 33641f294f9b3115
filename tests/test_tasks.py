"""workers.tasks: plain functions on a pool thread, their outcome delivered on the GUI thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from PySide6.QtCore import QObject, QThread

from enclave.workers.tasks import TaskRunner, run_in_thread


@pytest.fixture
def runner(qtbot: Any) -> Any:
    runner = TaskRunner(name="test-tasks")
    yield runner
    runner.shutdown()


def test_the_result_comes_back_on_the_gui_thread(runner: TaskRunner, qtbot: Any) -> None:
    ran_on: list[threading.Thread] = []
    delivered: list[tuple[int, bool]] = []

    def work(a: int, b: int = 0) -> int:
        ran_on.append(threading.current_thread())
        return a + b

    with qtbot.waitSignal(runner.idle, timeout=5000):
        task = runner.run(work, 2, b=3, on_done=lambda v: delivered.append((v, QThread.currentThread().isMainThread())))
        assert runner.busy
    assert delivered == [(5, True)]
    assert ran_on and ran_on[0] is not threading.main_thread()
    assert task.done and not runner.busy


def test_an_exception_goes_to_on_error(runner: TaskRunner, qtbot: Any) -> None:
    errors: list[BaseException] = []

    def fail() -> None:
        raise ValueError("no good")

    with qtbot.waitSignal(runner.idle, timeout=5000):
        runner.run(fail, on_done=lambda _v: pytest.fail("not done"), on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], ValueError) and str(errors[0]) == "no good"


def test_a_cancelled_task_delivers_nothing(runner: TaskRunner, qtbot: Any) -> None:
    gate = threading.Event()
    delivered: list[object] = []
    with qtbot.waitSignal(runner.idle, timeout=5000):
        task = runner.run(gate.wait, 5, on_done=delivered.append)
        task.cancel()
        gate.set()
    assert delivered == [] and task.done


def test_shutdown_waits_for_running_calls_and_drops_their_results(qtbot: Any) -> None:
    runner = TaskRunner(name="test-one-thread", max_threads=1)  # the second call waits behind the first
    started, gate = threading.Event(), threading.Event()
    finished: list[str] = []
    delivered: list[object] = []

    def slow() -> str:
        started.set()
        gate.wait(5)
        finished.append("slow")
        return "late"

    runner.run(slow, on_done=delivered.append)
    queued = runner.run(finished.append, "queued", on_done=delivered.append)
    assert started.wait(5)
    opener = threading.Timer(0.1, gate.set)
    opener.start()
    runner.shutdown()
    opener.join()
    assert finished == ["slow"] and not runner.busy  # the running call ended first; the queued one never ran
    assert queued.cancelled
    qtbot.wait(50)
    assert delivered == []  # and nothing reached the (closing) owner
    after = runner.run(lambda: pytest.fail("ran after shutdown"))
    assert after.cancelled and after.done


def test_run_in_thread_uses_the_parents_own_runner(qtbot: Any) -> None:
    owner = QObject()
    delivered: list[int] = []
    try:
        run_in_thread(lambda x: x * 2, 21, parent=owner, on_done=delivered.append)
        assert TaskRunner.of(owner) is TaskRunner.of(owner) and TaskRunner.of(owner).parent() is owner
        qtbot.waitUntil(lambda: delivered == [42], timeout=5000)
    finally:
        TaskRunner.of(owner).shutdown()
