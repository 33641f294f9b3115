"""Smoke tests that run inside the installed bundle: does the packaged app have what it needs at run time?

The full suite runs from the source checkout; these check the things packaging can break: the package and its data
files are there, llama.cpp's native library loads, Qt starts, and the app's own executable can start itself as a
child process (a bundle has no Python interpreter to spawn).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_core_imports_and_catalog_data_is_bundled() -> None:
    from enclave import __version__
    from enclave.models.catalog import load_catalog

    assert __version__
    assert load_catalog().chat(), "catalog.json is missing from the bundle"


def test_llama_cpp_native_library_loads() -> None:
    import llama_cpp

    assert isinstance(llama_cpp.llama_supports_gpu_offload(), bool)


def test_storage_round_trip(tmp_path: Path) -> None:
    from enclave.storage.chats import ChatStore

    store = ChatStore(tmp_path / "chats.sqlite3")
    conversation = store.create_conversation("bundle")
    store.add_message(conversation.id, "user", "hello")
    assert [m.content for m in store.messages(conversation.id)] == ["hello"]
    store.close()


def test_qt_starts_and_the_window_builds(tmp_path: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from enclave.engine.llama_backend import LlamaCppBackend
    from enclave.settings.settings import Settings, SettingsStore
    from enclave.storage.chats import ChatStore
    from enclave.ui.main_window import MainWindow
    from enclave.workers.engine_worker import EngineController

    app = QApplication.instance() or QApplication([])
    store = ChatStore(tmp_path / "chats.sqlite3")
    controller = EngineController(LlamaCppBackend)
    window = MainWindow(store, controller, SettingsStore(tmp_path / "settings.json"), Settings())
    window.show()
    app.processEvents()
    assert window.pages.currentWidget() is window.welcome
    window.close()
    store.close()


def test_qt_keeps_the_native_platform_plugin() -> None:
    """briefcase.toml's cleanup_paths prune Qt plugins; the one that draws windows on this OS must survive."""
    from PySide6.QtCore import QLibraryInfo

    plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    native = {"darwin": "cocoa", "win32": "windows"}.get(sys.platform, "xcb")
    assert any(native in p.name for p in plugins.iterdir()), sorted(p.name for p in plugins.iterdir())


def test_the_app_can_start_itself_as_a_child(tmp_path: Path) -> None:
    from enclave.child_process import child_command

    result = subprocess.run(
        child_command("hardware", "--json"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ENCLAVE_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)
