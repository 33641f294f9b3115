"""The chat's logic on the GUI thread: store ↔ engine ↔ transcript.

Sends build an immutable GenerationRequest from what is stored (answers only: earlier reasoning is never sent back),
streamed text is shown as it arrives and saved at least once a second, so a killed process loses at most a second
and the partial answer comes back marked "interrupted". An answer cut short because the engine process died is kept
the same way, with the engine's explanation; the next question starts the engine again.

A chat that uses document collections searches them first (on the documents thread), then sends the question with
numbered sources in place of the bare question; the sources are stored with the answer so they survive a restart.
Earlier questions are sent back bare: old sources would only crowd out the room R1 needs to think.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal, Slot

from enclave.engine.types import Finished, FinishReason, GenerationRequest, GenerationStats, ModelInfo
from enclave.settings.settings import Settings
from enclave.storage.chats import ChatStore, Conversation, MessageSource, MessageStats, MessageStatus
from enclave.ui.message_card import MessageCard
from enclave.ui.sources_view import NO_ROOM, NOTHING_RELEVANT
from enclave.ui.transcript import Transcript
from enclave.usecases.chat import chat_request, ground_in_documents, history
from enclave.workers.docs_worker import DocsController
from enclave.workers.engine_worker import EngineController

if TYPE_CHECKING:
    from enclave.docs.search import SearchResponse

SAVE_INTERVAL_S = 1.0
NEW_CHAT_TITLE = "New chat"
CONTINUE_PROMPT = "Continue exactly where your last answer was cut off."
SEARCH_K = 8  # passages asked for; overlapping ones are merged and the prompt budget decides how many are sent
SNIPPET_CHARS = 1200  # of each source, stored with the answer for the sources list


def title_from(text: str, words: int = 6) -> str:
    """A chat title from the user's first message (never from the model's reasoning)."""
    parts = text.split()
    title = " ".join(parts[:words])
    if len(parts) > words:
        title += "…"
    return title[:80] or NEW_CHAT_TITLE


def message_stats(stats: GenerationStats, length_limit: int = 0) -> MessageStats:
    return MessageStats(
        length_limit=length_limit,
        completion_tokens=stats.completion_tokens,
        reasoning_tokens=stats.reasoning_tokens,
        tokens_per_second=stats.tokens_per_second,
        prompt_tokens=stats.prompt_tokens,
        context_used=stats.context_used,
        context_size=stats.context_size,
    )


@dataclass
class LiveReply:
    request_id: str
    conversation_id: int
    message_id: int
    model: str
    sent_ids: list[int]
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    last_saved: float = field(default_factory=time.monotonic)
    thinking_started: float | None = None
    thinking_seconds: float | None = None
    pending: GenerationRequest | None = None  # held back until the document search answers
    search_id: str | None = None
    sources: tuple[MessageSource, ...] | None = None
    note: str | None = None  # why the answer has no sources
    max_tokens: int = 0  # the length limit this answer was asked with (0: none)


class ChatSession(QObject):
    busyChanged = Signal(bool)
    statsChanged = Signal(object)  # GenerationStats of the last reply
    conversationsChanged = Signal()
    conversationOpened = Signal(int)
    problem = Signal(str)  # a sentence for the user
    editRequested = Signal(int)  # a user message's Edit button
    regenerateRequested = Signal(int)  # an answer's Regenerate button (the window asks before dropping later ones)
    sourceOpenRequested = Signal(object)  # MessageSource: a source or a citation was clicked

    def __init__(
        self,
        store: ChatStore,
        controller: EngineController,
        transcript: Transcript,
        settings: Callable[[], Settings],
        parent: QObject | None = None,
        documents: DocsController | None = None,
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.controller = controller
        self.transcript = transcript
        self._settings = settings
        self.documents = documents
        self.conversation_id: int | None = None
        self.live: LiveReply | None = None
        if documents is not None:
            documents.searchFinished.connect(self._on_search_finished)
            documents.searchFailed.connect(self._on_search_failed)
        controller.textReady.connect(self._on_text)
        controller.thinkingClosed.connect(self._on_thinking_closed)
        controller.contextTrimmed.connect(self._on_context_trimmed)
        controller.generationFinished.connect(self._on_finished)
        controller.generationFailed.connect(self._on_failed)
        controller.generationInterrupted.connect(self._on_interrupted)

    # --- conversations ----------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.live is not None

    def conversation(self) -> Conversation | None:
        return self.store.conversation(self.conversation_id) if self.conversation_id is not None else None

    def new_conversation(self) -> int:
        conversation = self.store.create_conversation(NEW_CHAT_TITLE, self._settings().default_system_prompt)
        self.open_conversation(conversation.id)
        self.conversationsChanged.emit()
        return conversation.id

    def open_conversation(self, conversation_id: int) -> None:
        if self.conversation_id == conversation_id and self.transcript.cards():
            return
        self.conversation_id = conversation_id
        self._rebuild()
        self.conversationOpened.emit(conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        if self.live is not None and self.live.conversation_id == conversation_id:
            self.stop()
            self._finalize(MessageStatus.CANCELLED, None, None)
        self.store.delete_conversation(conversation_id)
        if self.conversation_id == conversation_id:
            self.conversation_id = None
            self.transcript.clear()
        self.conversationsChanged.emit()

    def _rebuild(self) -> None:
        self.transcript.clear()
        if self.conversation_id is None:
            return
        live = self.live
        for message in self.store.messages(self.conversation_id):
            if message.role == "system":
                continue
            if live is not None and message.id == live.message_id:
                self._add_live_card(live)
            else:
                self._add_card(MessageCard.from_message(message))
        self.transcript.scroll_to_end()

    def _add_live_card(self, live: LiveReply) -> None:
        """Back in the chat that is still streaming: the store lags up to a second, so draw from memory instead."""
        card = self._add_card(MessageCard("assistant", live.message_id))
        card.start_streaming(live.model)
        if live.pending is not None:
            card.show_searching()
        elif live.sources is not None:
            card.set_sources(live.sources, live.note)
        if live.thinking_started is not None:
            card.thinking.start(started_at=live.thinking_started)
            card.append("".join(live.reasoning), "")
            if live.thinking_seconds is not None:
                card.close_thinking(live.thinking_seconds)
        card.append("", "".join(live.content))

    def _add_card(self, card: MessageCard) -> MessageCard:
        card.regenerateRequested.connect(self.regenerateRequested)
        card.continueRequested.connect(lambda _message_id: self.continue_answer())
        card.editRequested.connect(self.editRequested)
        card.answerNowRequested.connect(self.answer_now)
        card.sourceOpenRequested.connect(self.sourceOpenRequested)
        self.transcript.add_card(card)
        return card

    # --- sending ----------------------------------------------------------------------------------------------

    def send(self, text: str, *, replace_from: int | None = None) -> bool:
        """Ask ``text`` in the current chat (creating one if needed); ``replace_from`` edits an earlier message."""
        model = self.controller.model
        if self.live is not None:
            return False
        if model is None:
            self.problem.emit("No model is loaded yet. Open a GGUF model first (File → Open model…).")
            return False
        if self.conversation_id is None:
            self.new_conversation()
        assert self.conversation_id is not None
        if replace_from is not None:
            self.store.delete_messages_from(replace_from)
            self._rebuild()
        conversation = self.store.conversation(self.conversation_id)
        if conversation.title == NEW_CHAT_TITLE:
            self.store.rename_conversation(conversation.id, title_from(text))
        user = self.store.add_message(self.conversation_id, "user", text)
        self._add_card(MessageCard.from_message(user))
        self.conversationsChanged.emit()
        return self._start_reply(model)

    @Slot(int)
    def regenerate(self, message_id: int) -> None:
        """Write the answer ``message_id`` again: it and everything after it are replaced."""
        model = self.controller.model
        if self.live is not None or model is None or self.conversation_id is None:
            return
        self.store.delete_messages_from(message_id)
        self._rebuild()
        self._start_reply(model)

    def messages_after(self, message_id: int) -> int:
        """How many messages of the current chat come after ``message_id`` (Regenerate would delete them)."""
        if self.conversation_id is None:
            return 0
        ids = [m.id for m in self.store.messages(self.conversation_id) if m.role != "system"]
        return len(ids) - ids.index(message_id) - 1 if message_id in ids else 0

    @Slot()
    def continue_answer(self) -> bool:
        """Ask the model to go on after an answer cut off at the length limit (a visible "Continue" message)."""
        return self.send(CONTINUE_PROMPT)

    def _start_reply(self, model: ModelInfo) -> bool:
        assert self.conversation_id is not None
        conversation = self.store.conversation(self.conversation_id)
        sent = history(conversation.system_prompt, self.store.messages(self.conversation_id))
        messages = sent.messages
        settings = self._settings()
        request = chat_request(messages, model, settings)
        reply = self.store.add_message(
            self.conversation_id, "assistant", "", status=MessageStatus.STREAMING, model=model.name
        )
        card = self._add_card(MessageCard(reply.role, reply.id))
        card.start_streaming(model.name)
        live = LiveReply(
            request.request_id,
            self.conversation_id,
            reply.id,
            model.name,
            list(sent.sent_ids),
            max_tokens=settings.max_tokens,
        )
        self.live = live
        documents = self.documents
        if conversation.collections and documents is not None and messages and messages[-1].role == "user":
            live.pending = request
            live.search_id = documents.search(messages[-1].content, collections=conversation.collections, k=SEARCH_K)
            card.show_searching()
        else:
            self._generate(request)
        self.transcript.scroll_to_end()
        self.busyChanged.emit(True)
        return True

    def _generate(self, request: GenerationRequest) -> None:
        if self.documents is not None:
            self.documents.hold(True)  # indexing waits while R1 answers: both want every core
        self.controller.generate(request)

    @Slot(str, object)
    def _on_search_finished(self, search_id: str, response: SearchResponse) -> None:
        live = self.live
        if live is None or live.search_id != search_id or live.pending is None:
            return
        request, live.pending = live.pending, None
        model = self.controller.model
        grounded = ground_in_documents(request, response.results, model.n_ctx if model is not None else None)
        live.sources = tuple(
            MessageSource(s.number, s.path, s.label, s.page, s.text[:SNIPPET_CHARS]) for s in grounded.sources
        )
        self.store.update_message(live.message_id, sources=live.sources)
        live.note = None
        if grounded.nothing_relevant:
            live.note = NOTHING_RELEVANT
        elif grounded.no_room:
            live.note = NO_ROOM
        card = self._card()
        if card is not None:
            card.set_sources(live.sources, live.note)
            count = len(live.sources)
            card.show_progress(f"Reading {count} document excerpt{'s' if count != 1 else ''} and your question…")
        self._generate(grounded.request)

    @Slot(str, str)
    def _on_search_failed(self, search_id: str, message: str) -> None:
        live = self.live
        if live is None or live.search_id != search_id or live.pending is None:
            return
        live.pending = None
        self._finalize(
            MessageStatus.FAILED, None, f"{message} Try again, or turn documents off for this chat and ask again."
        )

    def show_progress(self, request_id: str, text: str) -> None:
        """What the streaming answer is waiting for, shown in its card until the first word."""
        card = self._card()
        if card is not None and self.live is not None and self.live.request_id == request_id:
            card.show_progress(text)

    def stop(self) -> None:
        live = self.live
        if live is None:
            return
        if live.pending is not None:  # still searching: nothing was sent to the model yet
            live.pending = None
            self._finalize(MessageStatus.CANCELLED, None, None)
        else:
            self.controller.cancel(live.request_id)

    @Slot()
    def answer_now(self) -> None:
        if self.live is not None:
            self.controller.answer_now(self.live.request_id)

    # --- streaming results ------------------------------------------------------------------------------------

    def _card(self) -> MessageCard | None:
        if self.live is None or self.live.conversation_id != self.conversation_id:
            return None  # the user switched to another chat: keep saving, stop drawing
        return self.transcript.card_for(self.live.message_id)

    @Slot(str, str, str)
    def _on_text(self, request_id: str, reasoning: str, content: str) -> None:
        live = self.live
        if live is None or live.request_id != request_id:
            return
        if reasoning:
            live.reasoning.append(reasoning)
            if live.thinking_started is None:
                live.thinking_started = time.monotonic()
        if content:
            live.content.append(content)
            if live.thinking_started is not None and live.thinking_seconds is None:
                live.thinking_seconds = time.monotonic() - live.thinking_started
        card = self._card()
        if card is not None:
            card.append(reasoning, content)
        now = time.monotonic()
        if now - live.last_saved >= SAVE_INTERVAL_S:
            live.last_saved = now
            self.store.update_message(live.message_id, content="".join(live.content), reasoning="".join(live.reasoning))

    @Slot(str, bool)
    def _on_thinking_closed(self, request_id: str, forced: bool) -> None:
        live = self.live
        if live is None or live.request_id != request_id:
            return
        if live.thinking_started is not None and live.thinking_seconds is None:
            live.thinking_seconds = time.monotonic() - live.thinking_started
        card = self._card()
        if card is not None:
            card.close_thinking(live.thinking_seconds)

    @Slot(str, int)
    def _on_context_trimmed(self, request_id: str, dropped: int) -> None:
        live = self.live
        if live is None or live.request_id != request_id or not live.sent_ids:
            return
        anchor = live.sent_ids[min(dropped, len(live.sent_ids) - 1)]
        if live.conversation_id == self.conversation_id:
            self.transcript.show_context_marker(dropped, anchor)

    @Slot(str, object)
    def _on_finished(self, request_id: str, finished: Finished) -> None:
        if self.live is None or self.live.request_id != request_id:
            return
        status = MessageStatus.CANCELLED if finished.reason is FinishReason.CANCELLED else MessageStatus.COMPLETE
        limit = 0
        if finished.reason is FinishReason.LENGTH:  # the limit, or the context, ran out: the answer is cut short
            limit = self.live.max_tokens or finished.stats.completion_tokens
        self._finalize(status, finished.stats, None, length_limit=limit)
        self.statsChanged.emit(finished.stats)

    @Slot(str, str)
    def _on_failed(self, request_id: str, message: str) -> None:
        if self.live is None or self.live.request_id != request_id:
            return
        self._finalize(MessageStatus.FAILED, None, message)

    @Slot(str, str)
    def _on_interrupted(self, request_id: str, message: str) -> None:
        """The engine process died mid-answer: keep what was written, say why; the next question restarts it."""
        if self.live is None or self.live.request_id != request_id:
            return
        self._finalize(MessageStatus.INTERRUPTED, None, message)
        self.problem.emit(message)

    def _finalize(
        self, status: MessageStatus, stats: GenerationStats | None, error: str | None, *, length_limit: int = 0
    ) -> None:
        live = self.live
        if live is None:
            return
        if live.thinking_started is not None and live.thinking_seconds is None:
            live.thinking_seconds = time.monotonic() - live.thinking_started
        stored_stats = message_stats(stats, length_limit) if stats is not None else None
        self.store.update_message(
            live.message_id,
            content="".join(live.content),
            reasoning="".join(live.reasoning),
            status=status,
            thinking_seconds=live.thinking_seconds,
            stats=stored_stats,
            error=error,
        )
        card = self._card()
        self.live = None
        if self.documents is not None:
            self.documents.hold(False)
        if card is not None:
            card.finish(status, stored_stats, live.model, error)
        self.busyChanged.emit(False)

    def shutdown(self) -> None:
        """The window is closing: stop the reply and keep what was written so far."""
        if self.live is not None:
            if self.live.pending is None:
                self.controller.cancel(self.live.request_id)
            self._finalize(MessageStatus.CANCELLED, None, None)
