"""Start the desktop app: open the store and settings, start the engine thread, show the window.

Problems with the user's files (a damaged settings file, a damaged chat database) are explained in a dialog and the
app carries on with what it can; llama.cpp runs in a child process driven from the engine thread (engine/isolated.py),
so the window paints first and an abort in llama.cpp costs an answer, not the window.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from enclave import APP_NAME, __version__
from enclave.engine.backend import Backend
from enclave.fsutil import quarantine
from enclave.paths import app_paths
from enclave.settings.settings import SettingsStore
from enclave.storage.chats import ChatStore
from enclave.storage.db import CorruptDatabaseError, StorageError
from enclave.ui.main_window import MainWindow
from enclave.usecases.loading import LoadGuard
from enclave.workers.docs_worker import DocsController
from enclave.workers.engine_worker import EngineController

log = logging.getLogger(__name__)
STARTED = time.monotonic()


IN_PROCESS_ENV = "ENCLAVE_ENGINE_IN_PROCESS"


def real_backend() -> Backend:
    """The window's engine: llama.cpp in a child process, so an abort in llama.cpp cannot close the window.

    ``ENCLAVE_ENGINE_IN_PROCESS=1`` runs it in this process instead (for a debugger or a profiler).
    """
    if os.environ.get(IN_PROCESS_ENV) == "1":
        from enclave.engine.llama_backend import LlamaCppBackend

        return LlamaCppBackend()
    from enclave.engine.isolated import IsolatedBackend

    return IsolatedBackend()


def open_store(path: os.PathLike[str] | str) -> tuple[ChatStore | None, str | None]:
    """Open the chat database; a damaged one is moved aside (kept for the user) and a fresh one started."""
    from pathlib import Path

    path = Path(path)
    try:
        return ChatStore(path), None
    except CorruptDatabaseError as exc:
        try:
            kept = quarantine(path, sqlite_sidecars=True)
        except OSError as again:  # cannot move it aside: say so instead of crashing
            return None, f"{exc}\n\nCould not move the damaged chat database {path} aside: {again}"
        try:
            fresh = ChatStore(path)
        except StorageError as again:  # cannot start over: say so instead of crashing
            return None, f"{exc}\n\n{again}"
        return fresh, (
            f"Your chat history could not be read ({exc}). Enclave started a new, empty history; the damaged file "
            f"was kept as {kept.name} in {kept.parent}."
        )
    except StorageError as exc:
        return None, str(exc)


def run_gui(model_path: str | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("org.enclave-app.enclave")  # Briefcase's app id: bundle + app name

    paths = app_paths().ensure()
    loaded = SettingsStore(paths.settings_file).load()
    store, store_problem = open_store(paths.chats_db)
    if store is None:
        QMessageBox.critical(None, APP_NAME, f"{store_problem}\n\nEnclave cannot start without its chat history.")
        return 1
    controller = EngineController(real_backend)
    documents = DocsController(index_path=paths.documents_db)
    window = MainWindow(store, controller, SettingsStore(paths.settings_file), loaded.settings, documents)
    window.show()
    controller.start()

    def after_first_paint() -> None:
        log.debug("first window painted %.0f ms after start", (time.monotonic() - STARTED) * 1000)
        if os.environ.get("ENCLAVE_EXIT_AFTER_FIRST_PAINT"):
            print(f"first-paint-ms {(time.monotonic() - STARTED) * 1000:.0f}", flush=True)
            QTimer.singleShot(0, window.close)
            return
        for problem in (loaded.warning, store_problem):
            if problem:
                QMessageBox.warning(window, APP_NAME, problem)
        documents.start()  # opens the index on its thread and resumes indexing left unfinished last time
        path = model_path or loaded.settings.model_path
        blocked = LoadGuard().blocked(path) if path and not model_path else None
        if blocked:  # the remembered model crashed the engine while loading last time: don't loop
            window.show_model_problem(blocked)
        elif path:
            window.load_model(path)
        else:
            window.fetch_recommendation()

    QTimer.singleShot(0, after_first_paint)
    code = app.exec()
    store.close()
    return int(code)
