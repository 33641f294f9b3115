"""End to end: the window, the engine thread and llama.cpp with the real Gemma GGUF (no scripted parts)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt

from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore, MessageStatus
from enclave.ui.app import real_backend
from enclave.ui.main_window import MainWindow
from enclave.workers.engine_worker import EngineController


def test_chat_with_the_real_model(qtbot: Any, gemma_path: Path) -> None:
    paths = app_paths().ensure()
    store = ChatStore(paths.chats_db)
    controller = EngineController(real_backend)
    settings = replace(Settings(), context_length=1024, max_tokens=16, threads=2)
    window = MainWindow(store, controller, SettingsStore(paths.settings_file), settings)
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(controller.modelLoaded, timeout=60_000):
            window.load_model(str(gemma_path))
        # The status bar says where the model runs (the load plan llama.cpp was given); the tooltip names the format.
        assert (
            window.model_label.text() == "Gemma 3 270m · CPU · 1,024-token context · f16 KV (yours: context, threads)"
        )
        assert "Gemma (fallback)" in window.model_label.toolTip()
        assert "no template in the model file" in window.model_label.toolTip()
        window.composer.editor.setPlainText("What colour is the sky?")
        qtbot.keyClick(window.composer.editor, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: not window.session.busy, timeout=60_000)
        conversation_id = window.session.conversation_id
        assert conversation_id is not None
        user, answer = store.messages(conversation_id)
        assert user.content == "What colour is the sky?"
        assert answer.status is MessageStatus.COMPLETE
        assert answer.content.strip() and answer.model == "Gemma 3 270m"
        assert answer.stats is not None and 0 < answer.stats.completion_tokens <= 16
        assert window.transcript.cards()[-1].answer.markdown() == answer.content
        assert window.context_gauge.maximum() == 1024 and window.context_gauge.value() > 0
        assert window.speed_label.text().endswith("tok/s")
    finally:
        window.close()
        store.close()


def test_a_documents_chat_with_the_real_models(qtbot: Any, gemma_path: Path, tmp_path: Path) -> None:
    """Gemma answers from a document found by MiniLM: both llama.cpp models loaded, each on its own thread."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    import minilm_gguf

    from enclave.docs.isolation import InProcessParser
    from enclave.workers.docs_worker import DocsController

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "kettle.md").write_text("The kettle warranty lasts five years from the date of purchase.\n")
    paths = app_paths().ensure()
    store = ChatStore(paths.chats_db)
    controller = EngineController(real_backend)
    docs = DocsController(
        index_path=paths.data / "documents.sqlite3",
        embedding_model=minilm_gguf.cached_model_path(),
        parser_factory=InProcessParser,
    )
    settings = replace(Settings(), context_length=2048, max_tokens=24, threads=2)
    window = MainWindow(store, controller, SettingsStore(paths.settings_file), settings, docs)
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(controller.modelLoaded, timeout=60_000):
            window.load_model(str(gemma_path))
        with qtbot.waitSignal(docs.ingestFinished, timeout=60_000):
            window.add_documents([str(notes)])
        window.composer.editor.setPlainText("How long is the kettle warranty?")
        qtbot.keyClick(window.composer.editor, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: not window.session.busy, timeout=60_000)
        conversation_id = window.session.conversation_id
        assert conversation_id is not None
        _user, answer = store.messages(conversation_id)
        assert answer.status is MessageStatus.COMPLETE and answer.content.strip()
        assert answer.sources is not None and [s.label for s in answer.sources] == ["kettle.md"]
        assert answer.stats is not None and answer.stats.prompt_tokens > 40  # the sources reached the model
    finally:
        window.close()
        store.close()
