"""Opening the chat database: connection settings, schema migrations and damaged files.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` upgrades a database from version ``i`` to
``i + 1``; each runs in its own transaction together with the version bump, so a crash mid-upgrade leaves the previous
version intact. Migrations must use ``execute`` only: ``executescript`` would commit behind our back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CorruptDatabaseError",
    "NewerDatabaseError",
    "NotFoundError",
    "StorageError",
    "open_database",
]

BUSY_TIMEOUT_MS = 5000


class StorageError(Exception):
    """Chats could not be read or written; the message is meant for the user."""


class CorruptDatabaseError(StorageError):
    """The file is not a usable SQLite database: the caller may move it aside with ``fsutil.quarantine``."""


class NewerDatabaseError(StorageError):
    """A newer Enclave wrote the file: it is fine, this version just cannot read it. Never quarantine it."""


class NotFoundError(StorageError, LookupError):
    """The conversation or message asked for does not exist (any more)."""


Migration = Callable[[sqlite3.Connection], None]


def _migration_1_initial_schema(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            system_prompt TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX conversations_by_updated ON conversations (updated_at DESC, id DESC)")
    conn.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL DEFAULT '',
            reasoning TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            model TEXT,
            created_at REAL NOT NULL,
            thinking_seconds REAL,
            stats TEXT,
            error TEXT,
            UNIQUE (conversation_id, position)
        )
        """
    )
    # Partial index: finding messages left streaming by a killed process stays instant however big the history gets.
    conn.execute("CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming'")


def _migration_2_documents(conn: sqlite3.Connection) -> None:
    """Chats that answer from documents: which collections a chat searches, and the sources each answer was given."""
    conn.execute("ALTER TABLE conversations ADD COLUMN collections TEXT NOT NULL DEFAULT '[]'")
    conn.execute("ALTER TABLE messages ADD COLUMN sources TEXT")


MIGRATIONS: list[Migration] = [_migration_1_initial_schema, _migration_2_documents]
SCHEMA_VERSION = len(MIGRATIONS)


def _is_corruption(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    migrations = MIGRATIONS  # read at call time so tests can extend the list
    target = len(migrations)
    current = _user_version(conn)
    if current > target:
        raise NewerDatabaseError(
            f"The chat database {path} was written by a newer Enclave (schema version {current}; this version "
            f"understands up to {target}). Update Enclave to open it; the file was left untouched."
        )
    while current < target:
        # IMMEDIATE takes the write lock first, so two processes opening an old file cannot both run a migration.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _user_version(conn)
            if current < target:
                migrations[current](conn)
                current += 1
                conn.execute(f"PRAGMA user_version = {int(current)}")  # PRAGMA takes no parameters; int only
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and upgrade the chat database.

    The connection is in autocommit mode (``isolation_level=None``): every statement outside an explicit
    ``BEGIN`` is durable at once, which is what lets a killed process lose nothing already written.
    ``check_same_thread`` is off; callers that share the connection between threads must serialise access.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"Could not create the folder for the chat database {path.parent}: {exc}") from exc
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"Could not open the chat database {path}: {exc}") from exc
    try:
        # Reading the header first: a file that is not a database fails here, before any pragma could write to it.
        _user_version(conn)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
        conn.execute("PRAGMA journal_mode = WAL")  # may stay e.g. DELETE on filesystems without shared memory
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable against process death, fast commits
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
    except StorageError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        if _is_corruption(exc):
            raise CorruptDatabaseError(
                f"The chat database {path} is damaged or is not an Enclave database ({exc})."
            ) from exc
        raise StorageError(f"Could not open the chat database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn
