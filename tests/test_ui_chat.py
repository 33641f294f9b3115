"""The main window driven like a user would, with a scripted backend on the real engine thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore, MessageStatus
from enclave.ui.chat_session import CONTINUE_PROMPT
from enclave.ui.main_window import MainWindow
from enclave.ui.style import apply_appearance, contrast
from enclave.ui.transcript import ContextMarker
from enclave.workers.engine_worker import EngineController
from fakes import Script, ScriptedBackend

REASONING = "The user wants a greeting. A short friendly answer is best."
ANSWER = "Hello! Here is some code:\n\n```python\nprint('hi')\n```\n\nAnything else?"


class App:
    """One window over one store; ``restart()`` closes everything and opens it again on the same files."""

    def __init__(self, qtbot: Any, backend: ScriptedBackend, model: Path) -> None:
        self.qtbot = qtbot
        self.backend = backend
        self.model = model
        self.paths = app_paths().ensure()
        self.open()

    def open(self) -> None:
        self.store = ChatStore(self.paths.chats_db)
        self.controller = EngineController(lambda: self.backend)
        self.window = MainWindow(self.store, self.controller, SettingsStore(self.paths.settings_file), Settings())
        self.qtbot.addWidget(self.window)
        self.window.show()

    def close(self) -> None:
        self.window.close()
        self.store.close()

    def restart(self) -> None:
        self.close()
        self.open()

    def load(self) -> None:
        with self.qtbot.waitSignal(self.controller.modelLoaded, timeout=5000):
            self.window.load_model(str(self.model))

    def send(self, text: str, *, wait: bool = True) -> None:
        self.window.composer.editor.setPlainText(text)
        self.qtbot.keyClick(self.window.composer.editor, Qt.Key.Key_Return)
        if wait:
            self.wait_idle()

    def wait_idle(self) -> None:
        self.qtbot.waitUntil(lambda: not self.window.session.busy, timeout=10_000)

    def messages(self) -> list[Any]:
        conversation_id = self.window.session.conversation_id
        assert conversation_id is not None
        return self.store.messages(conversation_id)


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend(Script(reasoning=REASONING, answer=ANSWER, chunk_chars=3, delay_s=0.002))


@pytest.fixture
def app(qtbot: Any, backend: ScriptedBackend, tmp_path: Path) -> Iterator[App]:
    model = tmp_path / "DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf"
    model.write_bytes(b"scripted")
    instance = App(qtbot, backend, model)
    yield instance
    instance.close()


def test_first_run_shows_the_welcome_page(app: App) -> None:
    assert app.window.pages.currentWidget() is app.window.welcome
    assert app.window.welcome.open_button.isEnabled()
    app.load()
    assert app.window.pages.currentWidget() is app.window.chat_page
    assert app.window.model_label.text().endswith("· CPU · 4,096-token context · f16 KV")  # where it runs
    assert "Scripted" in app.window.model_label.toolTip()


def test_send_streams_and_stores_the_answer_with_its_reasoning(app: App) -> None:
    app.load()
    app.send("Say hello")
    user, answer = app.messages()
    assert (user.role, user.content) == ("user", "Say hello")
    assert answer.content == ANSWER and answer.reasoning == REASONING
    assert answer.status is MessageStatus.COMPLETE
    assert answer.model == app.model.stem
    assert answer.stats is not None and answer.stats.completion_tokens > 0
    card = app.window.transcript.cards()[-1]
    assert card.answer.markdown() == ANSWER
    assert card.answer.code_block(0) == "print('hi')"
    # The chat was titled from the question, never from the reasoning.
    assert app.store.conversation(answer.conversation_id).title == "Say hello"
    # What the engine received: the question only, no earlier reasoning.
    assert [m.content for m in app.backend.requests[-1].messages] == ["Say hello"]
    assert app.window.context_gauge.value() > 0


def test_earlier_reasoning_is_never_sent_back(app: App) -> None:
    app.load()
    app.send("First")
    app.send("Second")
    sent = app.backend.requests[-1].messages
    assert [m.role for m in sent] == ["user", "assistant", "user"]
    assert sent[1].content == ANSWER
    assert all(REASONING not in m.content for m in sent)


def test_text_arrives_while_streaming_and_stop_keeps_the_partial_answer(app: App) -> None:
    app.backend.script.delay_s = 0.01
    app.load()
    app.send("Tell me something long", wait=False)
    card = app.window.transcript.cards()[-1]
    app.qtbot.waitUntil(lambda: len(card.thinking.text) > 0, timeout=5000)
    assert app.window.composer.send_button.text() == "Stop"
    assert card.thinking.header.text().startswith("Thinking…")
    app.qtbot.keyClick(app.window, Qt.Key.Key_Escape)
    app.wait_idle()
    answer = app.messages()[-1]
    assert answer.status is MessageStatus.CANCELLED
    assert 0 < len(answer.reasoning) < len(REASONING)
    assert card.status.text() == "Stopped."
    assert app.window.composer.send_button.text() == "Send"


def test_thinking_block_collapses_when_the_answer_starts(app: App) -> None:
    app.backend.script.delay_s = 0.01
    app.load()
    app.send("Hi", wait=False)
    card = app.window.transcript.cards()[-1]
    app.qtbot.waitUntil(lambda: card.thinking.isVisible() and card.thinking.header.isChecked(), timeout=5000)
    assert card.thinking.body.isVisible()
    app.qtbot.waitUntil(lambda: bool(card.answer.markdown()), timeout=10_000)
    assert card.thinking.header.text().startswith("Thought for")
    assert not card.thinking.header.isChecked() and not card.thinking.body.isVisible()
    app.wait_idle()
    card.thinking.header.click()  # the user can open it again
    assert card.thinking.body.isVisible()
    assert card.thinking.text == REASONING


def test_answer_now_closes_the_thinking(app: App) -> None:
    app.backend.script.delay_s = 0.02
    app.load()
    app.send("Think hard", wait=False)
    card = app.window.transcript.cards()[-1]
    app.qtbot.waitUntil(lambda: card.thinking.answer_now.isVisible(), timeout=5000)
    card.thinking.answer_now.click()
    app.wait_idle()
    answer = app.messages()[-1]
    assert answer.content == ANSWER
    assert len(answer.reasoning) < len(REASONING)


def test_regenerate_replaces_the_last_answer(app: App) -> None:
    app.load()
    app.send("Question")
    old = app.messages()[-1]
    app.window.transcript.cards()[-1].regenerate_button.click()
    app.wait_idle()
    messages = app.messages()
    assert [m.role for m in messages] == ["user", "assistant"]
    assert len(app.backend.requests) == 2  # asked again, with the same history
    assert app.backend.requests[1].messages == app.backend.requests[0].messages
    assert messages[-1].created_at > old.created_at and messages[-1].status is MessageStatus.COMPLETE
    assert len(app.window.transcript.cards()) == 2


def test_edit_and_resend_truncates_the_conversation(app: App) -> None:
    app.load()
    app.send("First question")
    app.send("Second question")
    first_user = app.window.transcript.cards()[0]
    first_user.edit_button.click()
    assert app.window.composer.editing_message_id == first_user.message_id
    assert app.window.composer.text == "First question"
    app.send("Better first question")
    messages = app.messages()
    assert [(m.role, m.content) for m in messages] == [("user", "Better first question"), ("assistant", ANSWER)]
    assert app.window.composer.editing_message_id is None


def test_context_trimmed_marker_is_shown(app: App) -> None:
    app.load()
    app.send("One")
    app.send("Two")
    app.backend.script.dropped_messages = 2
    app.send("Three")
    markers = app.window.transcript.findChildren(ContextMarker)
    assert len(markers) == 1 and markers[0].dropped == 2
    assert "2 earlier messages" in markers[0].text()
    # It sits right before the first message that was still sent ("Two").
    layout_widgets = [w for w in app.window.transcript._widgets() if w.isVisibleTo(app.window)]
    index = layout_widgets.index(markers[0])
    following = layout_widgets[index + 1]
    assert getattr(following, "message_id", None) == app.messages()[2].id


def test_failure_is_shown_and_stored(app: App) -> None:
    app.load()
    app.backend.script.fail_with = "The model ran out of memory."
    app.send("Hi")
    answer = app.messages()[-1]
    assert answer.status is MessageStatus.FAILED and answer.error == "The model ran out of memory."
    assert "ran out of memory" in app.window.transcript.cards()[-1].status.text()


def test_restart_restores_chats_and_marks_interrupted_answers(app: App) -> None:
    app.load()
    app.send("Keep this")
    conversation_id = app.window.session.conversation_id
    assert conversation_id is not None
    # Simulate a killed process: an answer left in STREAMING state.
    partial = app.store.add_message(
        conversation_id, "assistant", "Half an ans", reasoning="some thought", status=MessageStatus.STREAMING
    )
    app.restart()
    assert app.window.session.conversation_id == conversation_id
    cards = app.window.transcript.cards()
    assert [c.role for c in cards] == ["user", "assistant", "assistant"]
    restored = app.store.messages(conversation_id)[-1]
    assert restored.id == partial.id and restored.status is MessageStatus.INTERRUPTED
    assert cards[-1].answer.markdown() == "Half an ans"
    assert cards[-1].status.text().startswith("Interrupted")


def test_search_filters_conversations(app: App) -> None:
    app.load()
    app.send("Tell me about volcanoes")
    app.window.new_chat()
    app.send("Recipe for bread")
    model = app.window.conversations.model
    assert len(model.conversation_ids()) == 2
    assert model.headings() == ["Today"]  # the list is grouped by date
    app.qtbot.keyClicks(app.window.conversations.search, "bread")
    assert len(model.conversation_ids()) == 1 and model.rowCount() == 1  # results are not grouped
    app.window.conversations.search.clear()
    app.window.conversations.search.setText("Anything else")  # message text, not only titles
    assert len(model.conversation_ids()) == 2


def test_search_results_open_with_down_or_enter_and_esc_clears(app: App) -> None:
    app.load()
    app.send("Tell me about volcanoes")
    volcanoes = app.window.session.conversation_id
    app.window.new_chat()
    app.send("Recipe for bread")
    panel = app.window.conversations
    app.window.activateWindow()
    app.window.focus_search()
    app.qtbot.keyClicks(panel.search, "volcano")
    app.qtbot.keyClick(panel.search, Qt.Key.Key_Return)
    assert app.window.session.conversation_id == volcanoes
    assert app.window.composer.editor.hasFocus()  # ready to type in the chat that was found
    app.window.focus_search()
    app.qtbot.keyClick(panel.search, Qt.Key.Key_Escape)
    assert panel.search.text() == ""
    assert len(panel.model.conversation_ids()) == 2
    app.window.new_chat()
    app.send("Another bread question")
    app.window.focus_search()
    app.qtbot.keyClicks(panel.search, "volcano")
    app.qtbot.keyClick(panel.search, Qt.Key.Key_Down)
    assert panel.view.hasFocus() and panel.current_id() == volcanoes
    assert app.window.session.conversation_id == volcanoes


def test_enter_sends_and_shift_enter_adds_a_line(app: App) -> None:
    app.load()
    editor = app.window.composer.editor
    app.qtbot.keyClicks(editor, "line one")
    app.qtbot.keyClick(editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    app.qtbot.keyClicks(editor, "line two")
    assert editor.toPlainText() == "line one\nline two"
    assert app.backend.requests == []
    app.qtbot.keyClick(editor, Qt.Key.Key_Return)
    app.wait_idle()
    assert app.messages()[0].content == "line one\nline two"
    assert editor.toPlainText() == ""


def test_model_load_failure_is_explained(app: App, tmp_path: Path) -> None:
    with app.qtbot.waitSignal(app.controller.modelLoadFailed, timeout=5000):
        app.window.load_model(str(tmp_path / "missing.gguf"))
    assert "not found" in app.window.welcome.status.text()
    assert app.window.welcome.open_button.isEnabled()


def test_widgets_have_accessible_names(app: App) -> None:
    app.load()
    app.send("Hi")
    from PySide6.QtWidgets import QAbstractButton, QLineEdit, QPlainTextEdit

    interactive = [
        w
        for cls in (QAbstractButton, QLineEdit, QPlainTextEdit)
        for w in app.window.findChildren(cls)
        if w.isVisibleTo(app.window) and w.window() is app.window
    ]
    unnamed = [w for w in interactive if not w.accessibleName() and not getattr(w, "text", lambda: "")()]
    assert interactive and not unnamed


def test_dropping_a_gguf_file_imports_and_opens_it(app: App, gemma_path: Path) -> None:
    from PySide6.QtCore import QMimeData, QPoint, QPointF, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    # Offscreen Qt has no drag manager to route a synthetic drop, so the window's handlers are called directly.
    text = QMimeData()
    text.setUrls([QUrl.fromLocalFile(str(app.model.with_suffix(".txt")))])
    refused = QDragEnterEvent(
        QPoint(50, 50), Qt.DropAction.CopyAction, text, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    app.window.dragEnterEvent(refused)
    assert not refused.isAccepted()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(gemma_path))])
    enter = QDragEnterEvent(
        QPoint(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    app.window.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QDropEvent(
        QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    with app.qtbot.waitSignal(app.controller.modelLoaded, timeout=5000):
        app.window.dropEvent(drop)
    assert app.window.settings.model_path == str(gemma_path)
    assert SettingsStore(app.paths.settings_file).load().settings.model_path == str(gemma_path)
    from enclave.models.installed import ModelRegistry

    imported = ModelRegistry(app.paths.data / "models.json").models()
    assert [m.source for m in imported] == ["imported"] and not imported[0].verified


def test_dropping_a_broken_gguf_explains_and_loads_nothing(app: App) -> None:
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(app.model))])  # "scripted": not a GGUF file
    drop = QDropEvent(
        QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    app.window.dropEvent(drop)
    assert app.window.welcome.status.text() == f"Checking {app.model.name}…"  # on a worker thread, meanwhile
    app.qtbot.waitUntil(
        lambda: "too small" in app.window.welcome.status.text() or "not a GGUF" in app.window.welcome.status.text(),
        timeout=10_000,
    )
    assert "too small" in app.window.welcome.status.text() or "not a GGUF" in app.window.welcome.status.text()
    assert app.controller.model is None and not app.controller.loading


def test_per_model_settings_override_the_global_ones(app: App) -> None:
    from enclave.models.installed import InstalledModel, ModelRegistry

    registry = ModelRegistry(app.paths.data / "models.json")
    registry.add(
        InstalledModel(
            id="scripted",
            name="scripted",
            paths=(str(app.model),),
            size=1,
            quant="Q4_K_M",
            architecture="qwen3",
            role="chat",
            source="imported",
            verified=False,
            added_at=0.0,
        )
    )
    registry.set_overrides("scripted", {"context_length": 2048, "kv_cache_type": "q8_0"})
    app.load()
    assert app.controller.model is not None and app.controller.model.n_ctx == 2048


def test_first_run_page_recommends_a_model_for_this_computer(app: App) -> None:
    with app.qtbot.waitSignal(app.window.recommendation_ready, timeout=30_000):
        app.window.fetch_recommendation()
    assert app.window.recommendation is not None
    name = app.window.recommendation.entry.display_name
    assert "Recommended for this computer" in app.window.welcome.recommendation.text()
    assert name in app.window.welcome.recommendation.text()
    assert app.window.welcome.download_button.text() == f"Download {name}…"


def test_switching_chats_while_streaming_loses_no_text(app: App) -> None:
    app.backend.script.delay_s = 0.01
    app.load()
    other = app.store.create_conversation("Another chat")
    app.send("Stream while I look elsewhere", wait=False)
    streaming_id = app.window.session.conversation_id
    assert streaming_id is not None
    card = app.window.transcript.cards()[-1]
    app.qtbot.waitUntil(lambda: len(card.thinking.text) > 10, timeout=5000)
    app.window.conversations.conversationSelected.emit(other.id)
    assert app.window.transcript.cards() == []
    app.qtbot.wait(300)  # text keeps arriving (and being saved) while another chat is shown
    app.window.conversations.conversationSelected.emit(streaming_id)
    app.wait_idle()
    card = app.window.transcript.cards()[-1]
    assert card.answer.markdown() == ANSWER
    assert card.thinking.text == REASONING
    assert card.thinking.header.text().startswith("Thought for")
    assert card.status.isHidden()


def test_regenerating_an_earlier_answer_asks_before_deleting_later_messages(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.load()
    app.send("First question")
    app.send("Second question")
    first_answer = app.messages()[1]
    asked: list[str] = []
    reply = QMessageBox.StandardButton.Cancel

    def question(_parent: object, _title: str, text: str, *_args: object) -> QMessageBox.StandardButton:
        asked.append(text)
        return reply

    monkeypatch.setattr(QMessageBox, "question", question)  # a modal box can't be clicked offscreen
    app.window.transcript.card_for(first_answer.id).regenerate_button.click()
    assert asked and "2 later messages" in asked[0]
    assert [m.content for m in app.messages() if m.role == "user"] == ["First question", "Second question"]
    assert not app.window.session.busy
    reply = QMessageBox.StandardButton.Yes
    app.window.transcript.card_for(first_answer.id).regenerate_button.click()
    app.wait_idle()
    assert [m.role for m in app.messages()] == ["user", "assistant"]
    # The last answer has nothing after it: no question.
    asked.clear()
    app.window.transcript.cards()[-1].regenerate_button.click()
    app.wait_idle()
    assert not asked


def test_bubbles_links_and_icons_follow_a_live_switch_to_dark(app: App, qapp: QApplication) -> None:
    app.load()
    app.send("Say hello")
    user_card, answer_card = app.window.transcript.cards()
    try:
        for appearance in ("light", "dark"):
            apply_appearance(qapp, appearance)
            qapp.processEvents()  # Qt hands the new palette to the widgets through the event queue
            palette = qapp.palette()
            text = palette.color(QPalette.ColorRole.Text)
            bubble = user_card.bubble_color()
            assert contrast(bubble, text) >= 7, appearance  # readable: AAA contrast in both themes
            assert user_card.answer.palette().color(QPalette.ColorRole.Text) == text
            thinking = answer_card.thinking.body.palette().color(QPalette.ColorRole.Text)
            assert thinking == palette.color(QPalette.ColorRole.PlaceholderText)
            # The rendered bubble really is painted in the new colour.
            image = user_card.grab().toImage()
            assert image.pixelColor(user_card.width() // 2, 3).name() == bubble.name()
            # The header's model picker (a button with a style sheet, which Qt leaves in the old palette) follows.
            picker = app.window.header.picker
            assert picker.palette().color(QPalette.ColorRole.ButtonText) == palette.color(QPalette.ColorRole.ButtonText)
            assert picker.palette().color(QPalette.ColorRole.Button) == palette.color(QPalette.ColorRole.Button)
    finally:
        apply_appearance(qapp, "light")
        qapp.processEvents()


def test_a_second_start_without_a_model_shows_the_welcome_page(app: App) -> None:
    app.load()
    app.send("Tell me about volcanoes")
    app.restart()  # no model is loaded this time
    assert app.window.pages.currentWidget() is app.window.welcome
    assert app.window.focusWidget() is app.window.welcome.open_button  # the main action, not "New chat"
    chats = len(app.store.list_conversations())
    app.window.new_chat()  # nothing to chat with: the welcome page says so, no empty chat is saved
    assert app.window.pages.currentWidget() is app.window.welcome
    assert "needs a model" in app.window.welcome.status.text()
    assert len(app.store.list_conversations()) == chats
    # A past chat can still be read, and asking there explains what is missing.
    view = app.window.conversations.view
    row = view.visualRect(app.window.conversations.model.index(1, 0))  # row 0 is the "Today" heading
    app.qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=row.center())
    assert app.window.pages.currentWidget() is app.window.chat_page
    app.window.composer.editor.setPlainText("And lava?")
    app.qtbot.keyClick(app.window.composer.editor, Qt.Key.Key_Return)
    assert app.window.pages.currentWidget() is app.window.welcome
    assert app.window.composer.text == "And lava?"  # kept for when a model is there
    assert len(app.messages()) == 2


def test_enter_on_the_welcome_page_presses_its_main_button(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[bool] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (opened.append(True), ("", ""))[1])
    app.window.activateWindow()
    app.window.welcome.focus_first()
    app.qtbot.keyClick(app.window.welcome.open_button, Qt.Key.Key_Return)
    assert opened == [True]


def test_new_chat_reuses_an_empty_chat(app: App) -> None:
    app.load()
    first = app.window.session.conversation_id
    app.window.new_chat()
    app.window.new_chat()
    assert app.window.session.conversation_id == first
    assert len(app.store.list_conversations()) == 1


def test_an_answer_cut_at_the_length_limit_says_so_and_continues(app: App) -> None:
    app.window.settings = Settings(max_tokens=5)
    app.load()
    app.send("Write a lot")
    answer = app.messages()[-1]
    assert answer.stats is not None and answer.stats.length_limit == 5
    card = app.window.transcript.card_for(answer.id)
    assert card.cut_off.isVisible() and "Cut off after 5 tokens" in card.cut_off.text()
    assert card.continue_button.isVisible()
    app.window.settings = Settings()
    card.continue_button.click()
    app.wait_idle()
    assert [m.role for m in app.messages()] == ["user", "assistant", "user", "assistant"]
    assert app.messages()[2].content == CONTINUE_PROMPT
    assert app.messages()[3].stats.length_limit == 0
    assert not app.window.transcript.card_for(app.messages()[3].id).cut_off.isVisible()
    app.restart()  # the note survives a restart
    restored = app.window.transcript.card_for(answer.id)
    assert restored.cut_off.isVisibleTo(restored) and restored.continue_button.isVisibleTo(restored)


def test_message_actions_are_icons_in_reading_order_with_a_focus_ring(app: App) -> None:
    app.load()
    app.send("Say hello")
    user_card, answer_card = app.window.transcript.cards()
    assert answer_card.who.text() == app.model.stem  # answers are signed by the model, not "Enclave"
    for button in (*user_card.action_buttons, *answer_card.action_buttons):
        assert not button.icon().isNull() and button.toolTip() and not button.text()
    assert not answer_card.actions_revealed  # shown on hover…
    app.window.activateWindow()
    user_card.edit_button.setFocus(Qt.FocusReason.TabFocusReason)
    assert user_card.edit_button.nextInFocusChain() is user_card.copy_button or (
        user_card.edit_button.nextInFocusChain() is user_card.regenerate_button
    )
    # …but a focused button is painted with a ring in the palette's highlight colour, hovered or not.
    image = user_card.edit_button.grab().toImage()
    highlight = app.window.palette().color(QPalette.ColorRole.Highlight)
    assert any(contrast(image.pixelColor(x, user_card.edit_button.height() // 2), highlight) < 1.3 for x in range(0, 4))


def test_a_long_prompt_shows_its_reading_progress_in_the_answer(app: App) -> None:
    app.backend.script.prompt_tokens = 2000
    app.backend.script.prompt_pause_s = 0.3
    app.load()
    app.send("Summarise everything", wait=False)
    card = app.window.transcript.cards()[-1]
    assert card.progress.isVisibleTo(card) and card.progress.text() == "Reading your question…"  # before any news
    app.qtbot.waitUntil(lambda: "%" in card.progress.text(), timeout=5000)
    assert card.progress.text().startswith("Reading the conversation (2,000 tokens)… ")
    app.qtbot.waitUntil(lambda: bool(card.thinking.text), timeout=5000)
    assert not card.progress.isVisibleTo(card)  # the first words replace it
    app.wait_idle()


def test_a_model_opened_with_file_open_is_listed_in_models(
    app: App, gemma_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from enclave.models.installed import ModelRegistry

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(gemma_path), ""))
    with app.qtbot.waitSignal(app.controller.modelLoaded, timeout=5000):
        app.window.open_action.trigger()
    registry = ModelRegistry(app.paths.data / "models.json")
    assert [Path(m.path) for m in registry.models()] == [gemma_path]


def test_the_composer_row_keeps_its_width_and_sets_this_messages_thinking_budget(app: App) -> None:
    app.backend.script.delay_s = 0.01
    app.load()
    composer = app.window.composer
    width = composer.send_button.width()
    composer.thinking_box.setCurrentIndex(composer.thinking_box.findData(512))
    app.send("Think briefly", wait=False)
    assert composer.send_button.text() == "Stop" and composer.send_button.width() == width
    app.wait_idle()
    assert composer.send_button.width() == width
    assert app.backend.requests[-1].think_budget == 512
    composer.thinking_box.setCurrentIndex(0)  # back to Settings (no budget there)
    app.send("Think as long as you like")
    assert app.backend.requests[-1].think_budget is None


def test_the_header_names_the_model_and_an_empty_chat_offers_examples(app: App) -> None:
    app.load()
    header = app.window.header
    assert header.picker.text().startswith(app.model.stem)
    assert header.where.text() == "● Ready · runs on CPU"
    app.window._fill_model_picker()
    assert [a.text() for a in header.picker.menu_.actions() if a.text()][-2:] == ["Open a GGUF file…", "Manage models…"]
    # A new chat is not a blank pane: the model, what it is good at, and examples that ask at a click.
    assert app.window.chat_body.currentWidget() is app.window.empty_chat
    assert app.model.stem in app.window.empty_chat.title.text()
    assert len(app.window.empty_chat.examples) == 3
    app.window.empty_chat.examples[0].click()
    app.wait_idle()
    assert app.window.chat_body.currentWidget() is app.window.transcript
    assert app.messages()[0].content == app.window.empty_chat.examples[0].text()
