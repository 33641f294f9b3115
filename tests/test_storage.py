"""Chat storage against real SQLite files in tmp_path."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.fsutil import quarantine
from enclave.storage import db
from enclave.storage.chats import ChatStore, MessageStats, MessageStatus
from enclave.storage.db import (
    SCHEMA_VERSION,
    CorruptDatabaseError,
    NewerDatabaseError,
    NotFoundError,
    StorageError,
    open_database,
)

APP_DIR = Path(__file__).resolve().parents[1] / "app"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "chats.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[ChatStore]:
    chat_store = ChatStore(db_path)
    yield chat_store
    chat_store.close()


def _raw_count(path: Path, sql: str, params: tuple[object, ...] = ()) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


# --- database file ----------------------------------------------------------------------------------------------


def test_open_database_creates_schema_and_sets_pragmas(db_path: Path) -> None:
    conn = open_database(db_path)
    try:
        assert db_path.exists()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"conversations", "messages"} <= tables
    finally:
        conn.close()


def test_reopening_does_not_rerun_migrations(db_path: Path) -> None:
    open_database(db_path).close()
    conn = open_database(db_path)  # CREATE TABLE would fail if migration 1 ran again
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_failed_migration_is_rolled_back(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_database(db_path).close()

    def broken_migration(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        conn.execute("THIS IS NOT SQL")

    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, broken_migration])
    with pytest.raises(StorageError):
        open_database(db_path)
    assert _raw_count(db_path, "PRAGMA user_version") == SCHEMA_VERSION
    assert _raw_count(db_path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'") == 0


def test_database_from_newer_version_is_refused_and_left_alone(db_path: Path) -> None:
    with ChatStore(db_path) as store:
        store.create_conversation("Keep me")
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()

    with pytest.raises(NewerDatabaseError, match="newer Enclave") as excinfo:
        ChatStore(db_path)
    assert isinstance(excinfo.value, StorageError)
    assert not isinstance(excinfo.value, CorruptDatabaseError)  # the caller must not quarantine it
    assert _raw_count(db_path, "PRAGMA user_version") == SCHEMA_VERSION + 5
    assert _raw_count(db_path, "SELECT COUNT(*) FROM conversations") == 1


def test_garbage_file_raises_and_can_be_quarantined(db_path: Path) -> None:
    garbage = b"this is definitely not a database\n" * 100
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(garbage)

    with pytest.raises(CorruptDatabaseError, match="not an Enclave database") as excinfo:
        ChatStore(db_path)
    assert isinstance(excinfo.value, StorageError)
    assert db_path.read_bytes() == garbage  # opening must not have written anything

    moved = quarantine(db_path, sqlite_sidecars=True)
    assert not db_path.exists()
    assert moved.parent == db_path.parent
    assert moved.name.startswith("chats.sqlite3.corrupt-")
    assert moved.read_bytes() == garbage

    with ChatStore(db_path) as fresh:  # a new, empty database now opens fine
        assert fresh.list_conversations() == []


# --- conversations and messages ---------------------------------------------------------------------------------


def test_data_survives_reopen(db_path: Path) -> None:
    with ChatStore(db_path) as store:
        conv = store.create_conversation("Physics", system_prompt="Be brief.")
        store.add_message(conv.id, "user", "Why is the sky blue?")
        answer = store.add_message(conv.id, "assistant", "", status=MessageStatus.STREAMING, model="r1-8b")
        stats = MessageStats(completion_tokens=42, reasoning_tokens=30, tokens_per_second=12.5, context_size=4096)
        store.update_message(
            answer.id,
            content="Rayleigh scattering.",
            reasoning="Short wavelengths scatter more.",
            status=MessageStatus.COMPLETE,
            thinking_seconds=3.25,
            stats=stats,
        )

    with ChatStore(db_path) as store:
        (reloaded,) = store.list_conversations()
        assert (reloaded.id, reloaded.title, reloaded.system_prompt) == (conv.id, "Physics", "Be brief.")
        assert reloaded.created_at == conv.created_at
        user, assistant = store.messages(conv.id)
        assert (user.role, user.content, user.position) == ("user", "Why is the sky blue?", 0)
        assert assistant.position == 1
        assert assistant.content == "Rayleigh scattering."
        assert assistant.reasoning == "Short wavelengths scatter more."
        assert assistant.status is MessageStatus.COMPLETE
        assert assistant.model == "r1-8b"
        assert assistant.thinking_seconds == 3.25
        assert assistant.stats == stats
        assert assistant.error is None


def test_streaming_message_of_killed_process_becomes_interrupted(db_path: Path) -> None:
    child = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from enclave.storage.chats import ChatStore, MessageStatus
        store = ChatStore(Path({str(db_path)!r}))
        conv = store.create_conversation("Crashy")
        store.add_message(conv.id, "user", "Tell me a story")
        msg = store.add_message(conv.id, "assistant", "", status=MessageStatus.STREAMING)
        store.update_message(msg.id, content="Once upon a", reasoning="A story, then.")
        os._exit(0)  # killed: no close(), no checkpoint, no cleanup
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(APP_DIR), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", child], check=True, env=env, timeout=30)
    assert Path(f"{db_path}-wal").exists()  # the child really died without a clean close

    with ChatStore(db_path) as store:
        (conv,) = store.list_conversations()
        user, answer = store.messages(conv.id)
        assert user.status is MessageStatus.COMPLETE
        assert answer.status is MessageStatus.INTERRUPTED
        assert answer.content == "Once upon a"
        assert answer.reasoning == "A story, then."


def test_list_is_most_recently_updated_first(store: ChatStore) -> None:
    older = store.create_conversation("older")
    newer = store.create_conversation("newer")
    assert [c.id for c in store.list_conversations()] == [newer.id, older.id]

    store.add_message(older.id, "user", "bump")
    assert [c.id for c in store.list_conversations()] == [older.id, newer.id]
    assert store.conversation(older.id).updated_at > older.updated_at


def test_rename_and_system_prompt(store: ChatStore) -> None:
    conv = store.create_conversation()
    assert conv.title == "New chat"
    assert store.rename_conversation(conv.id, "Renamed").title == "Renamed"
    updated = store.set_system_prompt(conv.id, "You are terse.")
    assert (updated.title, updated.system_prompt) == ("Renamed", "You are terse.")
    assert store.conversation(conv.id) == updated


def test_missing_ids_raise_not_found(store: ChatStore) -> None:
    with pytest.raises(NotFoundError):
        store.conversation(999)
    with pytest.raises(NotFoundError):
        store.rename_conversation(999, "x")
    with pytest.raises(NotFoundError):
        store.add_message(999, "user", "hi")
    with pytest.raises(NotFoundError):
        store.update_message(999, content="x")
    with pytest.raises(NotFoundError):
        store.delete_messages_from(999)
    assert store.messages(999) == []
    store.delete_conversation(999)  # deleting what is already gone is fine


def test_add_message_rejects_unknown_role(store: ChatStore) -> None:
    conv = store.create_conversation()
    with pytest.raises(ValueError, match="role"):
        store.add_message(conv.id, "tool", "hi")
    assert store.messages(conv.id) == []


def test_update_message_changes_only_given_fields(store: ChatStore) -> None:
    conv = store.create_conversation()
    msg = store.add_message(conv.id, "assistant", "", status=MessageStatus.STREAMING, model="m1")
    step1 = store.update_message(msg.id, content="partial", reasoning="thinking")
    assert (step1.content, step1.reasoning, step1.status, step1.model) == (
        "partial",
        "thinking",
        MessageStatus.STREAMING,
        "m1",
    )
    step2 = store.update_message(msg.id, status=MessageStatus.FAILED, error="Out of memory")
    assert (step2.content, step2.reasoning) == ("partial", "thinking")
    assert (step2.status, step2.error) == (MessageStatus.FAILED, "Out of memory")
    assert store.update_message(msg.id) == step2  # no changes: just reads
    assert store.messages(conv.id) == [step2]


def test_search_matches_title_and_content_but_not_reasoning(store: ChatStore) -> None:
    by_title = store.create_conversation("Quantum Physics")
    by_content = store.create_conversation("Homework")
    store.add_message(by_content.id, "user", "Explain quantum tunnelling")
    by_reasoning = store.create_conversation("Cooking")
    store.add_message(by_reasoning.id, "assistant", "Boil the pasta.", reasoning="quantum of salt?")

    found = {c.id for c in store.search_conversations("QUANTUM")}
    assert found == {by_title.id, by_content.id}
    assert store.search_conversations("  ") == store.list_conversations()
    assert len(store.search_conversations("")) == 3
    assert store.search_conversations("no such words") == []


def test_search_treats_wildcards_literally_and_folds_unicode_case(store: ChatStore) -> None:
    plain = store.create_conversation("Plain title")
    percent = store.create_conversation("50% off")
    german = store.create_conversation("Notizen")
    store.add_message(german.id, "user", "Was heißt ÜBERMUT?")

    assert [c.id for c in store.search_conversations("%")] == [percent.id]
    assert store.search_conversations("_") == []
    assert [c.id for c in store.search_conversations("übermut")] == [german.id]
    assert plain.id not in {c.id for c in store.search_conversations("ü")}


def test_delete_conversation_cascades_to_messages(store: ChatStore, db_path: Path) -> None:
    doomed = store.create_conversation("doomed")
    kept = store.create_conversation("kept")
    for text in ("a", "b", "c"):
        store.add_message(doomed.id, "user", text)
    store.add_message(kept.id, "user", "stay")

    store.delete_conversation(doomed.id)
    assert [c.id for c in store.list_conversations()] == [kept.id]
    assert store.messages(doomed.id) == []
    assert _raw_count(db_path, "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (doomed.id,)) == 0
    assert [m.content for m in store.messages(kept.id)] == ["stay"]


def test_delete_messages_from_truncates_only_that_conversation(store: ChatStore) -> None:
    conv = store.create_conversation()
    other = store.create_conversation()
    msgs = [store.add_message(conv.id, role, text) for role, text in [("user", "q1"), ("assistant", "a1")] * 2]
    store.add_message(other.id, "user", "untouched")

    store.delete_messages_from(msgs[1].id)
    assert [m.content for m in store.messages(conv.id)] == ["q1"]
    assert [m.content for m in store.messages(other.id)] == ["untouched"]

    again = store.add_message(conv.id, "assistant", "a1, take two")
    assert again.position == 1
    assert [m.content for m in store.messages(conv.id)] == ["q1", "a1, take two"]


def test_closed_store_raises_storage_error(db_path: Path) -> None:
    store = ChatStore(db_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.list_conversations()


def test_writes_are_fast(store: ChatStore) -> None:
    conv = store.create_conversation()
    msg = store.add_message(conv.id, "assistant", "", status=MessageStatus.STREAMING)
    rounds = 200
    start = time.perf_counter()
    for i in range(rounds):
        store.update_message(msg.id, content="token " * i, reasoning="hmm " * i)
    per_update = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for i in range(rounds):
        store.add_message(conv.id, "user", f"message {i}")
    per_add = (time.perf_counter() - start) / rounds
    # Generous bounds (CI disks vary); typical is ~0.05 ms each on WAL.
    assert per_update < 0.005
    assert per_add < 0.005
