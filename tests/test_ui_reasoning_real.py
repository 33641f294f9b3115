"""A real reasoning stream through the real window: llama.cpp, the Gemma 3 270M GGUF, the engine thread, the widgets
and SQLite, with no scripted parts.

Gemma 3 270M does not think, so each request gets a llama.cpp GBNF grammar (``GenerationRequest.grammar``) that makes
the real model write ``<think>…</think>`` token by token; the prompt asks it to copy a short text so the greedy
sampler finds the grammar's tokens quickly. Everything else (the prompt format, the ``<think>`` parser, "Answer now",
the thinking budget, Stop, what the window draws and what the chat store keeps) is the product's own code.

The grammars let the engine force a close anywhere in the thought: its close text is ``"\\n</think>\\n\\n"``, so each
grammar allows an optional newline before ``</think>`` and up to two after it.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from enclave.engine.llama_backend import LlamaCppBackend
from enclave.engine.types import (
    Finished,
    FinishReason,
    GenerationControl,
    GenerationRequest,
    StreamEvent,
    TextDelta,
    ThinkingClosed,
)
from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore
from enclave.storage.chats import ChatStore, Message, MessageStatus
from enclave.ui.main_window import MainWindow
from enclave.ui.message_card import MessageCard
from enclave.ui.settings_dialog import SettingsDialog
from enclave.workers.engine_worker import EMIT_INTERVAL_S, EngineController

pytestmark = pytest.mark.timeout(180)

# Longer than one GUI update (EMIT_INTERVAL_S): on a fast machine every token still reaches the window on its own, so
# "the text grew across updates" and "pressed mid-thought" hold there too. Under load llama.cpp is slower than this
# and the pause never happens. It only delays the events; their text is exactly what llama.cpp produced.
MIN_TOKEN_INTERVAL_S = max(0.1, 2 * EMIT_INTERVAL_S)
MAX_TOKENS = 40

# The template does not open the block: the model writes "<think>" itself (Gemma's fallback format).
SKY_PROMPT = "Copy this text exactly: <think>the sky is blue today.</think>Done."
SKY_GRAMMAR = r"""
root ::= "<think>" word (" " word){2,6} "." "\n"? "</think>" "\n"{0,2} "Done."
word ::= [a-z]{2,8}
"""
# The template opens the block (R1-Distill's prompt ends in "<think>\n"): only "</think>" is in the stream.
OPENED_PROMPT = "Copy this text exactly: the sky is blue today.</think>Done."
OPENED_GRAMMAR = r"""
root ::= word (" " word){2,6} "." "\n"? "</think>" "\n"{0,2} "Done."
word ::= [a-z]{2,8}
"""
# A long thought that may be closed (by the engine) after any letter: "Answer now", the budget and Stop cut it short.
COUNTING = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
COUNT_PROMPT = f"Copy this text exactly: <think>{COUNTING}</think>Done."
COUNT_GRAMMAR = r"""
root ::= "<think>" [a-z] [a-z ]{0,300} "\n"? "</think>" "\n"{0,2} "Done."
"""


@dataclass(frozen=True)
class Seen:
    """One event as it left llama.cpp's engine, with the flags the window had set by then."""

    event: StreamEvent
    answer_now: bool
    cancel: bool


class GrammarBackend(LlamaCppBackend):
    """The real llama.cpp backend; the only change is that every request carries ``grammar``."""

    def __init__(self, grammar: str) -> None:
        super().__init__()
        self.grammar = grammar
        self.requests: list[GenerationRequest] = []
        self.prompts: list[str] = []
        self.seen: list[Seen] = []

    def stream_chat(self, request: GenerationRequest, control: GenerationControl) -> Iterator[StreamEvent]:
        request = replace(request, grammar=self.grammar)
        self.requests.append(request)
        self.prompts.append(self.render_prompt(request))
        last = time.monotonic()
        for event in super().stream_chat(request, control):
            self.seen.append(Seen(event, control.answer_now.is_set(), control.cancel.is_set()))
            if isinstance(event, TextDelta):
                pause = MIN_TOKEN_INTERVAL_S - (time.monotonic() - last)
                if pause > 0:
                    time.sleep(pause)
                last = time.monotonic()
            yield event

    # What the engine streamed, for comparison with what the window drew and the store kept.
    def events(self) -> list[StreamEvent]:
        return [s.event for s in self.seen]

    def reasoning(self) -> str:
        return "".join(e.reasoning for e in self.events() if isinstance(e, TextDelta))

    def content(self) -> str:
        return "".join(e.content for e in self.events() if isinstance(e, TextDelta))

    def reasoning_deltas(self) -> list[Seen]:
        return [s for s in self.seen if isinstance(s.event, TextDelta) and s.event.reasoning]

    def closes(self) -> list[ThinkingClosed]:
        return [e for e in self.events() if isinstance(e, ThinkingClosed)]

    def finished(self) -> Finished:
        last = self.seen[-1].event
        assert isinstance(last, Finished)
        return last


@dataclass(frozen=True)
class Snapshot:
    """What the live answer card showed right after the window handled one engine signal."""

    signal: str  # "text" or "closed"
    reasoning_delta: str
    content_delta: str
    thinking_text: str
    thinking_visible: bool
    body_visible: bool
    header_checked: bool
    header_text: str
    answer_now_visible: bool
    answer_visible: bool
    answer_text: str


@dataclass(frozen=True)
class StoredRow:
    reasoning: str
    content: str
    status: str
    thinking_seconds: float | None


class RealWindow:
    """The main window over a fresh store, its engine thread running GrammarBackend on the real model."""

    def __init__(self, qtbot: Any, grammar: str, settings: Settings | None = None) -> None:
        self.qtbot = qtbot
        self.grammar = grammar
        self._backends: list[GrammarBackend] = []
        self.snapshots: list[Snapshot] = []
        self.paths = app_paths().ensure()
        self.store = ChatStore(self.paths.chats_db)
        self.controller = EngineController(self._make_backend)
        settings = settings or Settings()
        # Explicit values (not Auto): a small context, the CPU, two threads, greedy sampling, short replies.
        settings = replace(
            settings, context_length=1024, gpu_layers=0, threads=2, max_tokens=MAX_TOKENS, temperature=0.0
        )
        self.window = MainWindow(self.store, self.controller, SettingsStore(self.paths.settings_file), settings)
        qtbot.addWidget(self.window)
        self.window.show()
        # Connected after the window's own slots, so each snapshot sees the card as the window just left it.
        self.controller.textReady.connect(self._on_text)
        self.controller.thinkingClosed.connect(self._on_closed)

    def _make_backend(self) -> GrammarBackend:  # called on the engine thread
        backend = GrammarBackend(self.grammar)
        self._backends.append(backend)
        return backend

    @property
    def backend(self) -> GrammarBackend:
        assert len(self._backends) == 1
        return self._backends[0]

    def close(self) -> None:
        self.window.close()  # stops the reply, shuts the engine thread down
        self.store.close()

    def load(self, model: Path) -> None:
        with self.qtbot.waitSignal(self.controller.modelLoaded, timeout=60_000):
            self.window.load_model(str(model))

    def send(self, text: str) -> MessageCard:
        self.window.composer.editor.setPlainText(text)
        self.qtbot.keyClick(self.window.composer.editor, Qt.Key.Key_Return)
        assert self.window.session.busy
        return self.card()

    def wait_idle(self) -> None:
        self.qtbot.waitUntil(lambda: not self.window.session.busy, timeout=90_000)

    def card(self) -> MessageCard:
        card = self.window.transcript.cards()[-1]
        assert card.role == "assistant"
        return card

    def answer(self) -> Message:
        conversation_id = self.window.session.conversation_id
        assert conversation_id is not None
        messages = self.store.messages(conversation_id)
        assert [m.role for m in messages] == ["user", "assistant"]
        return messages[-1]

    def stored(self, message_id: int) -> StoredRow:
        """The row as SQLite has it, read on a connection of its own (not through the window's store)."""
        with sqlite3.connect(f"file:{self.paths.chats_db}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT reasoning, content, status, thinking_seconds FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
        db.close()
        assert row is not None
        return StoredRow(*row)

    def _snap(self, signal: str, reasoning: str = "", content: str = "") -> None:
        card = self.card()
        thinking = card.thinking
        self.snapshots.append(
            Snapshot(
                signal=signal,
                reasoning_delta=reasoning,
                content_delta=content,
                thinking_text=thinking.text,
                thinking_visible=thinking.isVisible(),
                body_visible=thinking.body.isVisible(),
                header_checked=thinking.header.isChecked(),
                header_text=thinking.header.text(),
                answer_now_visible=thinking.answer_now.isVisible(),
                answer_visible=card.answer.isVisible(),
                answer_text=card.answer.markdown(),
            )
        )

    def _on_text(self, _request_id: str, reasoning: str, content: str) -> None:
        self._snap("text", reasoning, content)

    def _on_closed(self, _request_id: str, _forced: bool) -> None:
        self._snap("closed")


@pytest.fixture
def r1_named_gemma(gemma_path: Path, tmp_path: Path) -> Path:
    """The Gemma GGUF under an R1-Distill file name: the engine then picks its built-in R1-Distill format, whose
    generation prompt opens the thinking block (select_chat_format matches "deepseek-r1" in the name + file name)."""
    link = tmp_path / "DeepSeek-R1-Distill-Gemma-3-270M-Q4_K_M.gguf"
    link.symlink_to(gemma_path)
    return link


def label_text(app: RealWindow) -> str:
    """The model label in the status bar and its tooltip, together."""
    return f"{app.window.model_label.text()}\n{app.window.model_label.toolTip()}"


def assert_live_block_then_folded(app: RealWindow) -> list[Snapshot]:
    """The block opened and grew while the model thought, then folded when the answer started; returns the snapshots
    taken while thinking."""
    snaps = app.snapshots
    closed_at = [i for i, s in enumerate(snaps) if s.signal == "closed"]
    assert len(closed_at) == 1, snaps
    thinking = [s for s in snaps[: closed_at[0]] if s.reasoning_delta]
    # At least two separate GUI updates before </think>, the block's text growing with each.
    assert len(thinking) >= 2, snaps
    for before, after in itertools.pairwise(thinking):
        assert after.thinking_text.startswith(before.thinking_text)
        assert len(after.thinking_text) > len(before.thinking_text)
    for s in thinking:
        assert s.content_delta == "" and s.answer_text == "" and not s.answer_visible
        assert s.thinking_visible and s.body_visible and s.header_checked
        assert s.header_text.startswith("Thinking…")
        assert s.answer_now_visible
        assert s.thinking_text.endswith(s.reasoning_delta)
    # The moment thinking closed: folded, "Thought for …", no "Answer now", no answer yet.
    closed = snaps[closed_at[0]]
    assert closed.thinking_visible and not closed.body_visible and not closed.header_checked
    assert closed.header_text.startswith("Thought for ")
    assert not closed.answer_now_visible
    # The answer then streamed below the folded block, which stayed folded.
    answering = [s for s in snaps[closed_at[0] :] if s.content_delta]
    assert answering and all(s.reasoning_delta == "" for s in answering)
    assert all(s.answer_visible and not s.body_visible and not s.header_checked for s in answering)
    return thinking


def assert_stored_like_streamed(app: RealWindow, message: Message) -> StoredRow:
    """SQLite, the card and the engine agree: reasoning and answer split the same way in all three."""
    row = app.stored(message.id)
    assert row.reasoning == message.reasoning == app.backend.reasoning() == app.card().thinking.text
    assert row.content == message.content == app.backend.content()
    for text in (row.reasoning, row.content):
        assert "<think>" not in text and "</think>" not in text
    assert message.stats is not None
    assert message.stats.reasoning_tokens == app.backend.finished().stats.reasoning_tokens
    assert message.stats.completion_tokens == app.backend.finished().stats.completion_tokens
    return row


def test_a_real_think_stream_shows_a_live_block_that_folds_when_the_answer_starts(qtbot: Any, gemma_path: Path) -> None:
    app = RealWindow(qtbot, SKY_GRAMMAR)
    try:
        app.load(gemma_path)
        info = app.controller.model
        assert info is not None and info.chat_format == "Gemma (fallback)" and not info.reasoning
        assert info.chat_format in label_text(app)
        card = app.send(SKY_PROMPT)
        app.wait_idle()

        # The prompt did not open the block: the model wrote "<think>" itself.
        assert app.backend.prompts[-1].endswith("<start_of_turn>model\n")
        assert app.backend.closes() == [ThinkingClosed(forced=False)]
        assert app.backend.finished().reason is FinishReason.STOP
        assert_live_block_then_folded(app)

        message = app.answer()
        row = assert_stored_like_streamed(app, message)
        assert row.status == "complete" and message.status is MessageStatus.COMPLETE
        assert re.fullmatch(r"[a-z]{2,8}( [a-z]{2,8}){2,6}\.\n?", row.reasoning), row.reasoning
        assert row.content == "Done."
        assert row.thinking_seconds is not None and row.thinking_seconds > 0
        assert message.stats is not None and 0 < message.stats.reasoning_tokens < message.stats.completion_tokens

        # The finished card: folded thoughts above the answer; they open again on a click.
        assert card.answer.markdown() == "Done." and card.answer.isVisible()
        assert card.thinking.isVisible() and not card.thinking.body.isVisible()
        assert card.thinking.header.text().startswith("Thought for ")
        assert card.status.isHidden()
        card.thinking.header.click()
        assert card.thinking.body.isVisible() and card.thinking.text == row.reasoning
    finally:
        app.close()


def test_a_template_opened_think_block_streams_with_only_the_closing_tag(qtbot: Any, r1_named_gemma: Path) -> None:
    app = RealWindow(qtbot, OPENED_GRAMMAR)
    try:
        app.load(r1_named_gemma)
        info = app.controller.model
        assert info is not None and info.chat_format == "DeepSeek R1 Distill" and info.reasoning
        assert info.chat_format_source == "built-in DeepSeek R1 format"
        assert info.chat_format in label_text(app)  # the window says which prompt format is in use
        card = app.send(OPENED_PROMPT)
        app.wait_idle()

        # The prompt opened the block; the reply carried only "</think>" and was read as thinking from its first token.
        prompt = app.backend.prompts[-1]
        assert prompt.endswith("<｜Assistant｜><think>\n") and prompt.count("<think>") == 1
        deltas = [e for e in app.backend.events() if isinstance(e, TextDelta)]
        assert deltas[0].reasoning and not deltas[0].content
        assert app.backend.closes() == [ThinkingClosed(forced=False)]
        assert_live_block_then_folded(app)

        message = app.answer()
        row = assert_stored_like_streamed(app, message)
        assert row.status == "complete"
        assert re.fullmatch(r"[a-z]{2,8}( [a-z]{2,8}){2,6}\.\n?", row.reasoning), row.reasoning
        assert row.content == "Done."
        assert message.model == info.name
        assert card.answer.markdown() == "Done."
        assert card.thinking.header.text().startswith("Thought for ") and not card.thinking.body.isVisible()
    finally:
        app.close()


def test_answer_now_closes_a_real_thought_within_one_token(qtbot: Any, gemma_path: Path) -> None:
    app = RealWindow(qtbot, COUNT_GRAMMAR)
    try:
        app.load(gemma_path)
        card = app.send(COUNT_PROMPT)
        button = card.thinking.answer_now
        qtbot.waitUntil(lambda: button.isVisible() and bool(card.thinking.text.strip()), timeout=60_000)
        assert card.thinking.header.text().startswith("Thinking…")
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        app.wait_idle()

        # The engine closed the thought itself (forced), at most one token after the click reached it.
        assert app.backend.closes() == [ThinkingClosed(forced=True)]
        assert app.backend.finished().reason is FinishReason.STOP
        reasoning_seen = app.backend.reasoning_deltas()
        assert len([s for s in reasoning_seen if s.answer_now]) <= 1
        close_index = next(i for i, s in enumerate(app.backend.seen) if isinstance(s.event, ThinkingClosed))
        assert all(not (isinstance(s.event, TextDelta) and s.event.reasoning) for s in app.backend.seen[close_index:])

        message = app.answer()
        row = assert_stored_like_streamed(app, message)
        assert row.status == "complete"
        # The stored thought is the counting cut short, and the answer followed.
        assert row.reasoning.strip() and COUNTING.startswith(row.reasoning) and len(row.reasoning) < len(COUNTING)
        assert row.content == "Done."
        # The close text the engine injected is not counted as thinking: one token per streamed piece of thought.
        assert message.stats is not None and message.stats.reasoning_tokens == len(reasoning_seen)

        assert card.answer.markdown() == "Done." and card.answer.isVisible()
        assert not button.isVisible()
        assert card.thinking.header.text().startswith("Thought for ") and not card.thinking.body.isVisible()
        assert card.status.isHidden()
        assert app.window.composer.send_button.text() == "Send"
    finally:
        app.close()


def test_the_thinking_budget_from_settings_closes_a_real_thought_after_n_tokens(qtbot: Any, gemma_path: Path) -> None:
    budget = 3
    app = RealWindow(qtbot, COUNT_GRAMMAR)
    try:
        app.load(gemma_path)

        # Set the budget the way a user does: Settings… → "Thinking budget" → OK.
        def fill_in() -> None:
            dialog = QApplication.activeModalWidget()
            assert isinstance(dialog, SettingsDialog)
            dialog.think_budget.setValue(budget)
            box = dialog.findChild(QDialogButtonBox)
            assert box is not None
            box.button(QDialogButtonBox.StandardButton.Ok).click()

        QTimer.singleShot(0, fill_in)
        app.window.settings_action.trigger()
        assert app.window.settings.think_budget == budget
        assert SettingsStore(app.paths.settings_file).load().settings.think_budget == budget

        card = app.send(COUNT_PROMPT)
        app.wait_idle()
        assert app.backend.requests[-1].think_budget == budget

        # Closed by the engine after exactly `budget` thinking tokens, without anyone pressing anything.
        assert app.backend.closes() == [ThinkingClosed(forced=True)]
        assert not any(s.answer_now or s.cancel for s in app.backend.seen)
        assert app.backend.finished().stats.reasoning_tokens == budget
        assert len(app.backend.reasoning_deltas()) == budget

        message = app.answer()
        row = assert_stored_like_streamed(app, message)
        assert row.status == "complete"
        assert row.reasoning == "one two three"  # the first three tokens of the counting, copied greedily
        assert row.content == "Done."
        assert message.stats is not None and message.stats.reasoning_tokens == budget

        assert card.thinking.text == "one two three"
        assert card.thinking.header.text().startswith("Thought for ") and not card.thinking.body.isVisible()
        assert card.answer.markdown() == "Done."
    finally:
        app.close()


def test_stop_mid_thought_keeps_the_partial_reasoning_as_a_stopped_answer(qtbot: Any, gemma_path: Path) -> None:
    app = RealWindow(qtbot, COUNT_GRAMMAR)
    try:
        app.load(gemma_path)
        card = app.send(COUNT_PROMPT)
        message_id = card.message_id
        # While it thinks, the partial thought is already in SQLite (saved at least once a second) as "streaming".
        qtbot.waitUntil(lambda: app.stored(message_id).reasoning.strip() != "", timeout=60_000)
        during = app.stored(message_id)
        assert during.status == "streaming" and during.content == ""
        assert card.thinking.header.text().startswith("Thinking…")
        stop = app.window.composer.send_button
        assert stop.text() == "Stop"
        qtbot.mouseClick(stop, Qt.MouseButton.LeftButton)
        app.wait_idle()

        # Generation ended at once: cancelled, thinking never closed, at most one token after the click.
        finished = app.backend.finished()
        assert finished.reason is FinishReason.CANCELLED
        assert app.backend.closes() == []
        reasoning_seen = app.backend.reasoning_deltas()
        assert len([s for s in reasoning_seen if s.cancel]) <= 1
        assert app.backend.content() == ""

        message = app.answer()
        row = assert_stored_like_streamed(app, message)
        assert row.status == "cancelled" and message.status is MessageStatus.CANCELLED
        assert row.content == ""
        assert row.reasoning.startswith(during.reasoning) and COUNTING.startswith(row.reasoning)
        assert len(row.reasoning) < len(COUNTING)
        assert row.thinking_seconds is not None and row.thinking_seconds > 0
        assert message.stats is not None and message.stats.reasoning_tokens == len(reasoning_seen)
        assert message.error is None

        # The card: "Stopped.", the thought kept (clock stopped), no answer, Send is back.
        assert card.status.text() == "Stopped." and card.status.isVisible()
        assert card.thinking.text == row.reasoning
        header = card.thinking.header.text()
        assert header.startswith("Thought for ")
        assert not card.thinking.answer_now.isVisible()
        assert card.answer.markdown() == "" and not card.answer.isVisible()
        assert stop.text() == "Send"
        qtbot.wait(1100)  # the header's clock ticks every second while thinking; stopped, it must not
        assert card.thinking.header.text() == header
    finally:
        app.close()
