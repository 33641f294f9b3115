"""Conversations and messages, persisted as they happen.

Every write commits immediately (WAL, ``synchronous=NORMAL``): a crash or a killed process loses at most the tokens
streamed since the last ``update_message``. Messages a dead process left ``STREAMING`` are marked ``INTERRUPTED``
the next time the store opens, so the UI never shows a spinner that nothing will ever finish.

``updated_at`` tracks activity (messages added or removed), not renames, so renaming a chat does not reorder the list.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from enclave.storage.db import NotFoundError, StorageError, open_database

__all__ = [
    "ROLES",
    "ChatStore",
    "Conversation",
    "Message",
    "MessageSource",
    "MessageStats",
    "MessageStatus",
    "NotFoundError",
    "StorageError",
]

ROLES = frozenset({"system", "user", "assistant"})


class MessageStatus(enum.StrEnum):
    COMPLETE = "complete"
    STREAMING = "streaming"
    INTERRUPTED = "interrupted"  # the process died while it was streaming
    CANCELLED = "cancelled"  # the user pressed Stop
    FAILED = "failed"  # the engine reported an error (see Message.error)


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system_prompt: str
    created_at: float
    updated_at: float
    collections: tuple[str, ...] = ()  # document collections this chat answers from (none: a plain chat)


@dataclass(frozen=True)
class MessageSource:
    """A passage an answer was given to cite as [number]: enough to list it and open the file at that page."""

    number: int
    path: str
    label: str  # "report.pdf, page 3"
    page: int
    snippet: str


@dataclass(frozen=True)
class MessageStats:
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_per_second: float = 0.0
    prompt_tokens: int = 0
    context_used: int = 0
    context_size: int = 0
    length_limit: int = 0  # the answer stopped at this many tokens (the length limit); 0: it ended on its own


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    position: int
    role: str
    content: str
    reasoning: str
    status: MessageStatus
    model: str | None
    created_at: float
    thinking_seconds: float | None
    stats: MessageStats | None
    error: str | None
    # None: no document search for this answer; (): searched, nothing relevant was found
    sources: tuple[MessageSource, ...] | None = None


_STATS_FIELDS = frozenset(f.name for f in fields(MessageStats))

_CONVERSATION_COLUMNS = "id, title, system_prompt, created_at, updated_at, collections"
_MESSAGE_COLUMNS = (
    "id, conversation_id, position, role, content, reasoning, status, model, created_at, thinking_seconds, stats, "
    "error, sources"
)


def _stats_to_json(stats: MessageStats) -> str:
    return json.dumps(asdict(stats), separators=(",", ":"))


def _stats_from_json(raw: str | None) -> MessageStats | None:
    """Lenient on purpose: unreadable stats are cosmetic and must never hide the message itself."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _STATS_FIELDS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        values[name] = float(value) if name == "tokens_per_second" else int(value)
    return MessageStats(**values)


def _names_from_json(raw: str | None) -> tuple[str, ...]:
    try:
        data = json.loads(raw or "[]")
    except ValueError:
        return ()
    return tuple(x for x in data if isinstance(x, str)) if isinstance(data, list) else ()


def _sources_to_json(sources: Sequence[MessageSource]) -> str:
    return json.dumps([asdict(s) for s in sources], separators=(",", ":"), ensure_ascii=False)


def _sources_from_json(raw: str | None) -> tuple[MessageSource, ...] | None:
    """Lenient like the stats: a damaged list of sources hides the sources, never the answer."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return ()
    sources: list[MessageSource] = []
    for item in data if isinstance(data, list) else []:
        try:
            sources.append(
                MessageSource(
                    number=int(item["number"]),
                    path=str(item["path"]),
                    label=str(item["label"]),
                    page=int(item["page"]),
                    snippet=str(item["snippet"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(sources)


def _conversation_from_row(row: Sequence[Any]) -> Conversation:
    return Conversation(
        id=row[0],
        title=row[1],
        system_prompt=row[2],
        created_at=row[3],
        updated_at=row[4],
        collections=_names_from_json(row[5]),
    )


def _message_from_row(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        conversation_id=row[1],
        position=row[2],
        role=row[3],
        content=row[4],
        reasoning=row[5],
        status=MessageStatus(row[6]),
        model=row[7],
        created_at=row[8],
        thinking_seconds=row[9],
        stats=_stats_from_json(row[10]),
        error=row[11],
        sources=_sources_from_json(row[12]),
    )


def _fold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def _like_pattern(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ChatStore:
    """The chat history. Thread-safe: calls are serialised on one connection (each is a few hundred microseconds)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._last_timestamp = 0.0
        self._conn: sqlite3.Connection | None = open_database(self.path)
        try:
            # deterministic=True lets SQLite treat it like a built-in; only used for non-ASCII searches.
            self._conn.create_function("enclave_fold", 1, _fold, deterministic=True)
            with self._guard():
                self._conn.execute(
                    "UPDATE messages SET status = ? WHERE status = ?",
                    (MessageStatus.INTERRUPTED.value, MessageStatus.STREAMING.value),
                )
        except BaseException:
            self.close()
            raise

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent). SQLite checkpoints and removes the WAL when the last connection closes."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass  # only a planner hint; closing matters more
            finally:
                conn.close()

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- helpers -----------------------------------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and turn sqlite3 errors into StorageError, so callers handle one exception type."""
        with self._lock:
            if self._conn is None:
                raise StorageError("The chat store is closed.")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StorageError(f"Could not access the chat database {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._guard() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _now(self) -> float:
        """Wall-clock time, but strictly increasing within this store so "most recent first" never ties."""
        now = max(time.time(), self._last_timestamp + 1e-6)
        self._last_timestamp = now
        return now

    @staticmethod
    def _fetch_conversation(conn: sqlite3.Connection, conversation_id: int) -> Conversation:
        row = conn.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"Conversation {conversation_id} does not exist.")
        return _conversation_from_row(row)

    @staticmethod
    def _fetch_message(conn: sqlite3.Connection, message_id: int) -> Message:
        row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"Message {message_id} does not exist.")
        return _message_from_row(row)

    # --- conversations -----------------------------------------------------------------------------------------

    def create_conversation(self, title: str = "New chat", system_prompt: str = "") -> Conversation:
        with self._guard() as conn:
            now = self._now()
            cursor = conn.execute(
                "INSERT INTO conversations (title, system_prompt, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (title, system_prompt, now, now),
            )
            assert cursor.lastrowid is not None
            return Conversation(cursor.lastrowid, title, system_prompt, now, now)

    def conversation(self, conversation_id: int) -> Conversation:
        with self._guard() as conn:
            return self._fetch_conversation(conn, conversation_id)

    def list_conversations(self) -> list[Conversation]:
        """Most recently updated first."""
        with self._guard() as conn:
            rows = conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations ORDER BY updated_at DESC, id DESC"
            ).fetchall()
        return [_conversation_from_row(row) for row in rows]

    def search_conversations(self, query: str) -> list[Conversation]:
        """Case-insensitive substring match on the title or any message's content (not reasoning); most recent first.

        ASCII queries use SQLite's LIKE (fast, ASCII case folding); others fold both sides in Python so "ÜBER" finds
        "über".
        """
        query = query.strip()
        if not query:
            return self.list_conversations()
        if query.isascii():
            match = "{column} LIKE ? ESCAPE '\\'"
            needle = _like_pattern(query)
        else:
            match = "instr(enclave_fold({column}), ?) > 0"
            needle = query.casefold()
        sql = (
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations AS c "
            f"WHERE {match.format(column='c.title')} "
            f"OR EXISTS (SELECT 1 FROM messages AS m WHERE m.conversation_id = c.id "
            f"AND {match.format(column='m.content')}) "
            "ORDER BY c.updated_at DESC, c.id DESC"
        )
        with self._guard() as conn:
            rows = conn.execute(sql, (needle, needle)).fetchall()
        return [_conversation_from_row(row) for row in rows]

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        with self._guard() as conn:
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
            return self._fetch_conversation(conn, conversation_id)

    def set_system_prompt(self, conversation_id: int, prompt: str) -> Conversation:
        with self._guard() as conn:
            conn.execute("UPDATE conversations SET system_prompt = ? WHERE id = ?", (prompt, conversation_id))
            return self._fetch_conversation(conn, conversation_id)

    def set_collections(self, conversation_id: int, collections: Sequence[str]) -> Conversation:
        """The document collections this chat answers from (in the order given; duplicates dropped)."""
        names = list(dict.fromkeys(str(c) for c in collections))
        with self._guard() as conn:
            conn.execute(
                "UPDATE conversations SET collections = ? WHERE id = ?",
                (json.dumps(names, ensure_ascii=False), conversation_id),
            )
            return self._fetch_conversation(conn, conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete the conversation and its messages. Deleting one that is already gone is not an error."""
        with self._guard() as conn:
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --- messages ----------------------------------------------------------------------------------------------

    def messages(self, conversation_id: int) -> list[Message]:
        """Ordered by position; an unknown conversation has no messages."""
        with self._guard() as conn:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY position",
                (conversation_id,),
            ).fetchall()
        return [_message_from_row(row) for row in rows]

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        reasoning: str = "",
        status: MessageStatus = MessageStatus.COMPLETE,
        model: str | None = None,
    ) -> Message:
        """Append a message at the end of the conversation and bump its ``updated_at``."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
        status = MessageStatus(status)
        with self._transaction() as conn:
            now = self._now()
            bumped = conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
            if bumped.rowcount == 0:
                raise NotFoundError(f"Conversation {conversation_id} does not exist.")
            (position,) = conn.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            cursor = conn.execute(
                "INSERT INTO messages (conversation_id, position, role, content, reasoning, status, model, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, position, role, content, reasoning, status.value, model, now),
            )
            assert cursor.lastrowid is not None
            message_id = cursor.lastrowid
        return Message(
            id=message_id,
            conversation_id=conversation_id,
            position=position,
            role=role,
            content=content,
            reasoning=reasoning,
            status=status,
            model=model,
            created_at=now,
            thinking_seconds=None,
            stats=None,
            error=None,
        )

    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        reasoning: str | None = None,
        status: MessageStatus | None = None,
        thinking_seconds: float | None = None,
        stats: MessageStats | None = None,
        error: str | None = None,
        model: str | None = None,
        sources: Sequence[MessageSource] | None = None,
    ) -> Message:
        """Change the given fields (``None`` leaves a field as it is) in one statement; cheap enough for streaming."""
        assignments: list[str] = []
        params: list[object] = []
        # Column names come from this fixed list, never from the caller; values are always bound parameters.
        for column, value in (
            ("content", content),
            ("reasoning", reasoning),
            ("status", None if status is None else MessageStatus(status).value),
            ("thinking_seconds", thinking_seconds),
            ("stats", None if stats is None else _stats_to_json(stats)),
            ("error", error),
            ("model", model),
            ("sources", None if sources is None else _sources_to_json(sources)),
        ):
            if value is not None:
                assignments.append(f"{column} = ?")
                params.append(value)
        with self._guard() as conn:
            if assignments:
                conn.execute(f"UPDATE messages SET {', '.join(assignments)} WHERE id = ?", (*params, message_id))
            return self._fetch_message(conn, message_id)

    def delete_messages_from(self, message_id: int) -> None:
        """Delete this message and every later one in its conversation (regenerate, or edit and resend)."""
        with self._transaction() as conn:
            row = conn.execute("SELECT conversation_id, position FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"Message {message_id} does not exist.")
            conversation_id, position = row
            conn.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND position >= ?", (conversation_id, position)
            )
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (self._now(), conversation_id))
