"""One start of the real app, as a user's start would go, run by tests/test_ui_startups.py in a child process.

``run_gui`` starts with a chat model and an embedding model configured (settings written by the test, the embedding
model through ``ENCLAVE_EMBEDDING_MODEL``), loads the chat model, indexes one PDF, asks one question about it with the
documents on, and closes. Any attempt of this process to import llama_cpp is refused and recorded: the window's
process must leave llama.cpp to the engine and embedding host processes. The last line printed is a JSON report.

Usage: python gui_startup_child.py PDF QUESTION
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

refused: list[str] = []


class _NoLlamaCpp(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.split(".")[0] == "llama_cpp":
            refused.append(fullname)
            raise ImportError(f"{fullname}: the window's process must not load llama.cpp")
        return None


sys.meta_path.insert(0, _NoLlamaCpp())

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from enclave.ui.app import run_gui  # noqa: E402
from enclave.ui.main_window import MainWindow  # noqa: E402

TIMEOUT_S = 240.0


def main(pdf: str, question: str) -> int:
    report: dict[str, object] = {"step": "start"}
    started = time.monotonic()
    state = {"indexed": False, "asked": False, "was_busy": False}

    def window() -> MainWindow | None:
        app = QApplication.instance()
        found = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow)] if app is not None else []
        return found[0] if found else None

    def finish(win: MainWindow, step: str) -> None:
        report["step"] = step
        timer.stop()
        win.close()

    def diagnose(win: MainWindow) -> dict[str, object]:
        """What a stuck start looked like: the window's own words, the load guard, the engine host's state."""
        from enclave.paths import app_paths

        marker = app_paths().load_marker
        found: dict[str, object] = {
            "status_bar": win.statusBar().currentMessage(),
            "load_marker": marker.read_text(encoding="utf-8") if marker.exists() else None,
            "controller_loading": getattr(win.controller, "_loading", None),
        }
        backend = getattr(win.controller._worker, "_backend", None)
        process = getattr(backend, "_process", None)
        if process is not None:
            found["host_pid"] = process.pid
            found["host_exit"] = process.poll()
            for name in ("status", "wchan"):
                try:
                    with open(f"/proc/{process.pid}/{name}", encoding="utf-8") as f:
                        text = f.read()
                    found[f"host_{name}"] = text if name == "wchan" else text.split("\n")[2]
                except OSError:
                    pass
        if backend is not None and hasattr(backend, "stderr_tail"):
            found["host_stderr_tail"] = backend.stderr_tail()[-15:]
        return found

    def tick() -> None:
        win = window()
        if win is None:
            return
        if time.monotonic() - started > TIMEOUT_S:
            try:
                report["diagnostics"] = diagnose(win)
            except Exception as exc:  # a diagnosis must not hide the timeout
                report["diagnostics"] = repr(exc)
            finish(win, f"timed out at {report['step']}")
            return
        if win.controller.model is None:
            report["step"] = "loading the chat model"
            return
        docs = win.documents
        assert docs is not None
        if report["step"] == "loading the chat model":
            report["step"] = "indexing"
            docs.ingestFinished.connect(lambda: state.__setitem__("indexed", True))
            win.add_documents([pdf])
            return
        if not state["indexed"]:
            return
        if not state["asked"]:
            state["asked"] = True
            report["step"] = "answering"
            if os.environ.get("ENCLAVE_STARTUP_NEW_CHAT") == "1":
                win.new_chat()  # every start asks in a new chat (else the chat grows until sources find no room)
            win.composer.editor.setPlainText(question)
            QTest.keyClick(win.composer.editor, Qt.Key.Key_Return)
            return
        if win.session.busy:
            state["was_busy"] = True
            return
        if not state["was_busy"]:
            return
        conversation = win.session.conversation_id
        assert conversation is not None
        last = win.store.messages(conversation)[-1]
        report.update(
            role=last.role,
            status=str(last.status),
            answer=last.content,
            sources=[s.label for s in last.sources or ()],
            collections=list(win.store.conversation(conversation).collections),
        )
        finish(win, "done")

    QApplication(sys.argv[:1])  # run_gui uses this one
    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(tick)
    QTimer.singleShot(0, timer.start)
    code = run_gui()
    report.update(exit_code=code, refused=refused, llama_cpp_loaded="llama_cpp" in sys.modules)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
