"""The chat use case: what of a stored conversation is sent, which sampling wins, how documents ground a question."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from enclave.docs.prompt import NO_ROOM, NOTHING_FOUND
from enclave.docs.search import SearchResult
from enclave.engine.types import R1_SAMPLING, ChatMessage, GenerationRequest, ModelInfo
from enclave.settings.settings import Settings
from enclave.storage.chats import ChatStore, MessageStatus
from enclave.usecases.chat import chat_request, ground_in_documents, history, sampling_for

R1 = ModelInfo(
    path="/models/r1.gguf",
    name="r1",
    architecture="qwen3",
    file_size=1,
    n_ctx=4096,
    n_ctx_train=131072,
    chat_format="DeepSeek R1",
    chat_format_source="built-in",
    reasoning=True,
    default_sampling=R1_SAMPLING,
)


def test_history_sends_questions_and_usable_answers_only(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.sqlite3")
    try:
        chat = store.create_conversation(system_prompt="Be brief.")
        q1 = store.add_message(chat.id, "user", "first?")
        a1 = store.add_message(chat.id, "assistant", "one", reasoning="secret thoughts")
        store.add_message(chat.id, "assistant", "", status=MessageStatus.FAILED)
        q2 = store.add_message(chat.id, "user", "second?")
        a2 = store.add_message(chat.id, "assistant", "half", status=MessageStatus.INTERRUPTED)
        store.add_message(chat.id, "assistant", "broken", status=MessageStatus.FAILED)
        store.add_message(chat.id, "assistant", "   ", status=MessageStatus.COMPLETE)
        q3 = store.add_message(chat.id, "user", "third?")
        sent = history(chat.system_prompt, store.messages(chat.id))
    finally:
        store.close()
    assert sent.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "first?"),
        ChatMessage("assistant", "one"),
        ChatMessage("user", "second?"),
        ChatMessage("assistant", "half"),
        ChatMessage("user", "third?"),
    )
    assert sent.sent_ids == (q1.id, a1.id, q2.id, a2.id, q3.id)
    assert all("secret" not in m.content for m in sent.messages)  # earlier reasoning is never sent back
    assert history("  ", []).messages == ()


def test_sampling_is_the_models_then_the_settings_then_explicit_values() -> None:
    assert sampling_for(R1, None) == R1_SAMPLING
    assert sampling_for(R1, Settings()) == R1_SAMPLING  # unset settings keep DeepSeek's recommendation
    chosen = Settings(temperature=0.2, top_p=0.5)
    assert sampling_for(R1, chosen) == replace(R1_SAMPLING, temperature=0.2, top_p=0.5)
    assert sampling_for(R1, chosen, temperature=1.1, seed=7) == replace(R1_SAMPLING, temperature=1.1, top_p=0.5, seed=7)
    assert sampling_for(R1, chosen, temperature=0.0).temperature == 0.0  # 0 is a value, not "unset"


def test_limits_come_from_settings_unless_given_and_zero_means_none() -> None:
    question = [ChatMessage("user", "hi")]
    assert chat_request(question, R1, Settings()).max_tokens is None
    assert chat_request(question, R1, Settings()).think_budget is None
    limited = Settings(max_tokens=300, think_budget=100)
    request = chat_request(question, R1, limited)
    assert (request.max_tokens, request.think_budget, request.messages) == (300, 100, tuple(question))
    assert chat_request(question, R1, limited, max_tokens=20, think_budget=5).max_tokens == 20
    assert chat_request(question, R1, None, max_tokens=20).sampling == R1_SAMPLING


def result(number: int, text: str, similarity: float = 0.8) -> SearchResult:
    return SearchResult(number, number, "docs", f"/docs/manual{number}.pdf", "pdf", 3, 0, len(text), text, 1.0 / number,
                        number, number, similarity, similarity >= 0.3)  # fmt: skip


def test_grounding_puts_numbered_sources_before_the_question_within_the_room_left() -> None:
    request = GenerationRequest((ChatMessage("system", "sys"), ChatMessage("user", "How do I reset it?")))
    grounded = ground_in_documents(request, [result(1, "Hold the button ten seconds."), result(2, "Unplug it.")], 4096)
    assert [s.number for s in grounded.sources] == [1, 2]
    assert not grounded.nothing_relevant and not grounded.no_room
    *earlier, question = grounded.request.messages
    assert earlier == [ChatMessage("system", "sys")] and question.role == "user"
    assert "[1] manual1.pdf" in question.content and "Hold the button ten seconds." in question.content
    assert question.content.rstrip().endswith("How do I reset it?")
    assert grounded.request.request_id == request.request_id

    nothing = ground_in_documents(request, [result(1, "Unrelated.", similarity=0.05)], 4096)
    assert nothing.nothing_relevant and not nothing.sources and NOTHING_FOUND in nothing.request.messages[-1].content

    long_chat = GenerationRequest((ChatMessage("assistant", "word " * 3000), ChatMessage("user", "And now?")))
    crowded = ground_in_documents(long_chat, [result(1, "Relevant text. " * 50)], 4096)
    assert crowded.no_room and not crowded.sources and NO_ROOM in crowded.request.messages[-1].content


def test_only_a_question_can_be_grounded() -> None:
    with pytest.raises(ValueError, match="only a question"):
        ground_in_documents(GenerationRequest((ChatMessage("assistant", "hi"),)), [], 4096)
