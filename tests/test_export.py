"""Markdown and JSON export of a real stored conversation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.storage.chats import ChatStore, Conversation, MessageSource, MessageStats, MessageStatus
from enclave.storage.export import conversation_to_json, conversation_to_markdown, export_conversation


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChatStore]:
    chat_store = ChatStore(tmp_path / "chats.sqlite3")
    yield chat_store
    chat_store.close()


@pytest.fixture
def conv(store: ChatStore) -> Conversation:
    conv = store.create_conversation("Sky colour", system_prompt="Answer like a physicist.")
    store.add_message(conv.id, "user", "Why is the sky blue?")
    answer = store.add_message(conv.id, "assistant", "", model="DeepSeek-R1-Distill-Qwen-7B")
    store.update_message(
        answer.id,
        content="Because of **Rayleigh scattering**.",
        reasoning="Blue light has a shorter wavelength, so it scatters more.",
        thinking_seconds=4.0,
        stats=MessageStats(completion_tokens=20, reasoning_tokens=12, tokens_per_second=9.5),
    )
    store.add_message(conv.id, "user", "And at sunset? Ünïcödé ✓")
    store.add_message(conv.id, "assistant", "Longer path thr", status=MessageStatus.INTERRUPTED)
    store.add_message(conv.id, "user", "Try again")
    store.add_message(conv.id, "assistant", "The light", status=MessageStatus.CANCELLED)
    return store.conversation(conv.id)


def test_markdown_has_title_roles_thinking_and_status_marks(store: ChatStore, conv: Conversation) -> None:
    md = conversation_to_markdown(conv, store.messages(conv.id))
    assert md.startswith("# Sky colour\n")
    assert "Answer like a physicist." in md
    assert md.count("## You") == 3
    assert md.count("## Assistant") == 3
    assert "DeepSeek-R1-Distill-Qwen-7B" in md
    thinking = "<details><summary>Thinking (4 s)</summary>\n\nBlue light has a shorter wavelength"
    assert thinking in md
    assert md.index("</details>") < md.index("Because of **Rayleigh scattering**.")
    assert "Ünïcödé ✓" in md
    assert "Longer path thr\n\n*⚠ Interrupted" in md
    assert "The light\n\n*⚠ Stopped" in md
    # Only the one answer with reasoning gets a details block.
    assert md.count("<details>") == 1


def test_markdown_cannot_be_broken_out_of_the_thinking_block(store: ChatStore) -> None:
    conv = store.create_conversation("x")
    store.add_message(conv.id, "assistant", "answer", reasoning="sneaky </details> text")
    md = conversation_to_markdown(conv, store.messages(conv.id))
    assert md.count("</details>") == 1


def test_json_round_trips_every_field(store: ChatStore, conv: Conversation) -> None:
    messages = store.messages(conv.id)
    data = json.loads(conversation_to_json(conv, messages))
    assert data["format"] == "enclave-chat"
    assert data["version"] == 1
    assert data["conversation"] == {
        "title": conv.title,
        "system_prompt": conv.system_prompt,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
    }
    assert len(data["messages"]) == len(messages) == 6
    for exported, original in zip(data["messages"], messages, strict=True):
        assert exported["role"] == original.role
        assert exported["content"] == original.content
        assert exported["reasoning"] == original.reasoning
        assert exported["status"] == original.status.value
        assert exported["model"] == original.model
        assert exported["created_at"] == original.created_at
        assert exported["thinking_seconds"] == original.thinking_seconds
        assert exported["error"] == original.error
        if original.stats is None:
            assert exported["stats"] is None
        else:
            assert MessageStats(**exported["stats"]) == original.stats
    assert [m["status"] for m in data["messages"]][-3:] == ["interrupted", "complete", "cancelled"]


def test_json_output_is_deterministic(store: ChatStore, conv: Conversation) -> None:
    messages = store.messages(conv.id)
    assert conversation_to_json(conv, messages) == conversation_to_json(conv, messages)


@pytest.mark.parametrize("name", ["chat.md", "chat.MARKDOWN", "chat.json"])
def test_export_conversation_writes_atomically_by_suffix(
    store: ChatStore, conv: Conversation, tmp_path: Path, name: str
) -> None:
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    target = out_dir / name
    target.write_text("old contents", encoding="utf-8")  # replaced, not appended to

    export_conversation(store, conv.id, target)

    text = target.read_text(encoding="utf-8")
    if name.endswith(".json"):
        assert json.loads(text)["conversation"]["title"] == "Sky colour"
    else:
        assert text.startswith("# Sky colour")
    assert "old contents" not in text
    assert [p.name for p in out_dir.iterdir()] == [name]  # no temp files left behind


def test_export_rejects_unknown_suffix(store: ChatStore, conv: Conversation, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.md or \.json"):
        export_conversation(store, conv.id, tmp_path / "chat.txt")
    assert not (tmp_path / "chat.txt").exists()
    assert list(tmp_path.glob(".chat.txt*")) == []


def test_document_sources_are_stored_and_exported(store: ChatStore) -> None:
    conv = store.create_conversation("Kettle")
    assert conv.collections == ()
    conv = store.set_collections(conv.id, ["Manuals", "Receipts", "Manuals"])
    assert conv.collections == ("Manuals", "Receipts")
    store.add_message(conv.id, "user", "How long is the warranty?")
    answer = store.add_message(conv.id, "assistant", "")
    sources = (
        MessageSource(1, "/home/me/warranty.pdf", "warranty.pdf, page 2", 2, "Five years from purchase."),
        MessageSource(2, "/home/me/notes.md", "notes.md", 1, "Keep the receipt."),
    )
    store.update_message(answer.id, content="Five years [1].", sources=sources)
    plain = store.add_message(conv.id, "assistant", "No documents here.")
    nothing = store.add_message(conv.id, "assistant", "")
    store.update_message(nothing.id, content="Not in your documents.", sources=())
    messages = store.messages(conv.id)
    assert messages[1].sources == sources
    assert messages[2].sources is None and messages[2].id == plain.id
    assert messages[3].sources == ()
    assert store.conversation(conv.id).collections == ("Manuals", "Receipts")

    md = conversation_to_markdown(store.conversation(conv.id), messages)
    assert "**Sources**\n\n1. warranty.pdf, page 2 — `/home/me/warranty.pdf`\n2. notes.md" in md
    data = json.loads(conversation_to_json(store.conversation(conv.id), messages))
    assert data["messages"][1]["sources"][0] == {
        "number": 1,
        "path": "/home/me/warranty.pdf",
        "label": "warranty.pdf, page 2",
        "page": 2,
    }
    assert data["messages"][2]["sources"] is None and data["messages"][3]["sources"] == []


def test_a_damaged_sources_column_hides_the_sources_not_the_answer(store: ChatStore) -> None:
    conv = store.create_conversation("x")
    answer = store.add_message(conv.id, "assistant", "An answer [1].")
    with store._guard() as conn:
        conn.execute("UPDATE messages SET sources = ? WHERE id = ?", ('[{"number": "x"}, 5, "junk"]', answer.id))
        conn.execute("UPDATE conversations SET collections = ? WHERE id = ?", ("{not json", conv.id))
    [message] = store.messages(conv.id)
    assert message.content == "An answer [1]." and message.sources == ()
    assert store.conversation(conv.id).collections == ()
