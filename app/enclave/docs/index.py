"""The document index: one SQLite file (WAL) with collections, documents, chunks, an FTS5 table and vectors.

Layout and why:
- ``documents`` remember each file's size, mtime and sha256, so a re-scan skips unchanged files without reading them;
  ``status``/``error`` say what happened to the file in words the UI can show.
- ``chunks`` keep page and character offsets for citations; ``chunks_fts`` (external-content FTS5, kept in step by
  triggers) gives BM25 without storing the text twice.
- ``embeddings`` hold float32 vectors tagged with the embedding model's id: switching models re-embeds (the chunks
  stay, nothing is re-parsed), and a half-embedded document resumes where it stopped.
- ``queue`` is the persisted work list: files added but not finished survive a restart and are resumed.
- ``folders`` remember the folders the user added, so a re-scan can pick up new files and drop deleted ones.
- ``state.generation`` counts deletions of vectors, so a search cache (see search.py) knows when appending new rows is
  not enough and it must reload.

The schema version lives in ``PRAGMA user_version`` with one migration per version, as in storage/db.py. The index
is derived data: a damaged file can be moved aside and rebuilt from the user's documents.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclave.docs.chunking import Chunk
from enclave.docs.status import DocStatus

if TYPE_CHECKING:
    import numpy as np  # imported where used: the window's first paint does not wait for numpy

BUSY_TIMEOUT_MS = 5000
# Porter stemming so "tomatoes" finds "tomato" (English suffixes only; other languages are at worst over-conflated,
# the same way in documents and queries); accents folded so "cafe" finds "café".
TOKENIZER = "porter unicode61 remove_diacritics 2"


class DocumentIndexError(Exception):
    """The index file could not be opened or written; the message is for the user."""

    def __init__(self, message: str, *, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged  # the file itself is unreadable (not a lock, a permission or a newer schema)


def _migration_1(conn: sqlite3.Connection) -> None:
    for statement in (
        "CREATE TABLE collections (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL)",
        """CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            kind TEXT NOT NULL,
            sha256 TEXT NOT NULL DEFAULT '',
            size INTEGER NOT NULL DEFAULT 0,
            mtime REAL NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            error TEXT,
            page_count INTEGER,
            chars INTEGER NOT NULL DEFAULT 0,
            added_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (collection_id, path)
        )""",
        """CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            page INTEGER NOT NULL,
            start INTEGER NOT NULL,
            end INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            text TEXT NOT NULL
        )""",
        "CREATE INDEX chunks_by_document ON chunks(document_id, ordinal)",
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id', "
        f"tokenize='{TOKENIZER}')",
        "CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, 'row')",
        "CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN "
        "INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END",
        "CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN "
        "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
        """CREATE TABLE embeddings (
            chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, chunk_id)
        )""",
        "CREATE INDEX embeddings_by_chunk ON embeddings(chunk_id)",
        """CREATE TABLE queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            queued_at REAL NOT NULL,
            UNIQUE (collection_id, path)
        )""",
        "CREATE TABLE state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO state(key, value) VALUES ('generation', 0)",
    ):
        conn.execute(statement)


def _migration_2(conn: sqlite3.Connection) -> None:
    """Watched folders: a folder added once is re-scanned later for new, changed and deleted files."""
    conn.execute(
        """CREATE TABLE folders (
            id INTEGER PRIMARY KEY,
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            added_at REAL NOT NULL,
            UNIQUE (collection_id, path)
        )"""
    )


def _migration_3(conn: sqlite3.Connection) -> None:
    """Each chunk's context (document title and section headings), embedded with its text but not part of it."""
    conn.execute("ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''")


MIGRATIONS = [_migration_1, _migration_2, _migration_3]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    collection: str
    path: str
    kind: str
    sha256: str
    size: int
    mtime: float
    status: str  # a DocStatus value, as stored: "ok", "indexing", "cancelled", "empty", "damaged", ...
    error: str | None
    page_count: int | None
    chars: int
    chunks: int
    added_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    documents: int
    chunks: int


@dataclass(frozen=True)
class QueueItem:
    id: int
    collection: str
    path: str


@dataclass(frozen=True)
class ChunkRow:
    id: int
    document_id: int
    collection: str
    path: str
    kind: str
    page: int
    start: int
    end: int
    text: str


_DOCUMENT_SELECT = (
    "SELECT d.id, c.name, d.path, d.kind, d.sha256, d.size, d.mtime, d.status, d.error, d.page_count, d.chars, "
    "(SELECT count(*) FROM chunks WHERE document_id = d.id), d.added_at, d.updated_at "
    "FROM documents d JOIN collections c ON c.id = d.collection_id"
)


class DocumentIndex:
    """The SQLite index. Methods may be called from any one thread at a time (a lock serialises them)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise DocumentIndexError(f"Could not open the document index {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            # A scratch FTS table with the index's tokenizer: it stems query words exactly as the index did.
            self._db.execute(f"CREATE VIRTUAL TABLE temp.query_words USING fts5(word, tokenize='{TOKENIZER}')")
            self._db.execute("CREATE VIRTUAL TABLE temp.query_stems USING fts5vocab(temp, 'query_words', 'instance')")
        except sqlite3.Error as exc:
            self._db.close()
            damaged = getattr(exc, "sqlite_errorname", "") in {"SQLITE_NOTADB", "SQLITE_CORRUPT"}
            raise DocumentIndexError(
                f"The document index {self.path} is damaged or unreadable ({exc}).", damaged=damaged
            ) from exc

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise DocumentIndexError(
                f"The document index {self.path} was written by a newer Enclave (schema {version}); update Enclave."
            )
        if version == 0 and self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'documents'").fetchone():
            self._drop_prerelease_tables()
        while version < SCHEMA_VERSION:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                if version < SCHEMA_VERSION:
                    MIGRATIONS[version](self._db)
                    version += 1
                    self._db.execute(f"PRAGMA user_version = {int(version)}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _drop_prerelease_tables(self) -> None:
        """Development builds wrote an unversioned layout; the index is derived data, so start it again."""
        names = [r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")]
        self._db.execute("PRAGMA foreign_keys = OFF")
        for table in ("chunks_vocab", "chunks_fts", "chunks", "documents", "collections"):
            if table in names:
                self._db.execute(f'DROP TABLE IF EXISTS "{table}"')
        self._db.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> DocumentIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # --- collections and documents ----------------------------------------------------------------------------

    def collection_id(self, name: str) -> int:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO collections(name, created_at) VALUES (?, ?)", (name, time.time()))
            row = self._db.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def collections(self) -> list[CollectionInfo]:
        rows = self._query(
            "SELECT c.id, c.name, (SELECT count(*) FROM documents WHERE collection_id = c.id), "
            "(SELECT count(*) FROM chunks ch JOIN documents d ON d.id = ch.document_id WHERE d.collection_id = c.id) "
            "FROM collections c ORDER BY c.name"
        )
        return [CollectionInfo(*row) for row in rows]

    def documents(self, collection: str | None = None) -> list[DocumentInfo]:
        rows = self._query(
            f"{_DOCUMENT_SELECT} WHERE (? IS NULL OR c.name = ?) ORDER BY c.name, d.path", (collection, collection)
        )
        return [DocumentInfo(*row) for row in rows]

    def document(self, collection: str, path: str) -> DocumentInfo | None:
        rows = self._query(f"{_DOCUMENT_SELECT} WHERE c.name = ? AND d.path = ?", (collection, path))
        return DocumentInfo(*rows[0]) if rows else None

    def document_by_id(self, document_id: int) -> DocumentInfo | None:
        rows = self._query(f"{_DOCUMENT_SELECT} WHERE d.id = ?", (document_id,))
        return DocumentInfo(*rows[0]) if rows else None

    def file_states(self, collection: str) -> dict[str, tuple[int, int, float, str]]:
        """path -> (document id, size, mtime, status) for a whole collection: one query for a whole re-scan."""
        rows = self._query(
            "SELECT d.path, d.id, d.size, d.mtime, d.status FROM documents d JOIN collections c "
            "ON c.id = d.collection_id WHERE c.name = ?",
            (collection,),
        )
        return {str(r[0]): (int(r[1]), int(r[2]), float(r[3]), str(r[4])) for r in rows}

    def store_document(
        self,
        collection: str,
        path: str,
        *,
        kind: str,
        sha256: str,
        size: int,
        mtime: float,
        status: DocStatus,
        error: str | None = None,
        page_count: int | None = None,
        chars: int = 0,
        chunks: Sequence[Chunk] = (),
        contexts: Sequence[str] | None = None,
    ) -> int:
        """Replace a document and its chunks in one transaction: a crash leaves the old version or the new one.

        ``contexts`` (one per chunk) are what the embedding model reads before each chunk's text."""
        if contexts is not None and len(contexts) != len(chunks):
            raise ValueError("one context per chunk")
        collection_id = self.collection_id(collection)
        now = time.time()
        with self._transaction() as db:
            old = db.execute(
                "SELECT id, added_at FROM documents WHERE collection_id = ? AND path = ?", (collection_id, path)
            ).fetchone()
            if old is not None:
                self._delete_documents(db, [int(old[0])])
            cursor = db.execute(
                "INSERT INTO documents(collection_id, path, kind, sha256, size, mtime, status, error, page_count, "
                "chars, added_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    collection_id,
                    path,
                    kind,
                    sha256,
                    size,
                    mtime,
                    status,
                    error,
                    page_count,
                    chars,
                    old[1] if old else now,
                    now,
                ),
            )
            document_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO chunks(document_id, ordinal, page, start, end, tokens, text, context) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (document_id, i, c.page, c.start, c.end, c.tokens, c.text, contexts[i] if contexts else "")
                    for i, c in enumerate(chunks)
                ),
            )
        return document_id

    def set_status(self, document_id: int, status: DocStatus, error: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE documents SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                (status, error, time.time(), document_id),
            )

    def touch(self, document_id: int, mtime: float) -> None:
        """The file was saved again without changing (same sha256): remember the new mtime so it is not re-hashed."""
        with self._lock:
            self._db.execute("UPDATE documents SET mtime = ? WHERE id = ?", (mtime, document_id))

    def _delete_documents(self, db: sqlite3.Connection, ids: Sequence[int]) -> None:
        marks = ",".join("?" * len(ids))
        db.execute(f"DELETE FROM documents WHERE id IN ({marks})", list(ids))
        db.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")

    def remove(self, document_ids: Iterable[int]) -> int:
        """Remove documents (their chunks and vectors go with them) and any pending work for their files."""
        ids = [int(i) for i in document_ids]
        if not ids:
            return 0
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT id, collection_id, path FROM documents WHERE id IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
            if rows:
                db.executemany("DELETE FROM queue WHERE collection_id = ? AND path = ?", [(r[1], r[2]) for r in rows])
                self._delete_documents(db, [int(r[0]) for r in rows])
        return len(rows)

    def remove_path(self, path: str, collection: str | None = None) -> int:
        """Remove a file's documents (in one collection or all) and its queued work; returns how many went."""
        rows = self._query(
            "SELECT d.id FROM documents d JOIN collections c ON c.id = d.collection_id "
            "WHERE d.path = ? AND (? IS NULL OR c.name = ?)",
            (path, collection, collection),
        )
        with self._lock:
            dropped = self._db.execute(
                "DELETE FROM queue WHERE path = ? AND (? IS NULL OR collection_id = "
                "(SELECT id FROM collections WHERE name = ?))",
                (path, collection, collection),
            ).rowcount
        removed = self.remove(int(r[0]) for r in rows)
        return removed or dropped

    # --- watched folders ----------------------------------------------------------------------------------------

    def add_folder(self, collection: str, path: str) -> bool:
        """Remember a folder for later re-scans; returns False when it was already remembered."""
        collection_id = self.collection_id(collection)
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO folders(collection_id, path, added_at) VALUES (?, ?, ?)",
                (collection_id, path, time.time()),
            )
        return cursor.rowcount > 0

    def folders(self) -> list[tuple[str, str]]:
        """(collection name, folder path) of every watched folder."""
        rows = self._query(
            "SELECT c.name, f.path FROM folders f JOIN collections c ON c.id = f.collection_id ORDER BY c.name, f.path"
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    def remove_folder(self, collection: str, path: str) -> bool:
        """Stop watching a folder (its documents stay); returns False when it was not watched."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM folders WHERE path = ? AND collection_id = (SELECT id FROM collections WHERE name = ?)",
                (path, collection),
            )
        return cursor.rowcount > 0

    # --- the work queue ---------------------------------------------------------------------------------------

    def enqueue(self, collection: str, paths: Iterable[str]) -> int:
        collection_id = self.collection_id(collection)
        now = time.time()
        with self._transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO queue(collection_id, path, queued_at) VALUES (?, ?, ?)",
                ((collection_id, p, now) for p in paths),
            )
            return db.total_changes - before

    def queued(self, limit: int = 1, *, after: int = 0) -> list[QueueItem]:
        rows = self._query(
            "SELECT q.id, c.name, q.path FROM queue q JOIN collections c ON c.id = q.collection_id WHERE q.id > ? "
            "ORDER BY q.id LIMIT ?",
            (after, limit),
        )
        return [QueueItem(*row) for row in rows]

    def queue_size(self) -> int:
        return int(self._query("SELECT count(*) FROM queue")[0][0])

    def dequeue(self, item_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM queue WHERE id = ?", (item_id,))

    def clear_queue(self) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM queue").rowcount

    def stale_documents(self, model: str) -> list[tuple[str, str]]:
        """(collection, path) of documents with chunks that have no vector from ``model``: they need embedding."""
        rows = self._query(
            "SELECT c.name, d.path FROM documents d JOIN collections c ON c.id = d.collection_id "
            "WHERE d.status IN (?, ?) AND EXISTS (SELECT 1 FROM chunks ch WHERE ch.document_id = d.id AND NOT EXISTS "
            "(SELECT 1 FROM embeddings e WHERE e.model = ? AND e.chunk_id = ch.id)) ORDER BY d.id",
            (DocStatus.OK, DocStatus.INDEXING, model),
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    # --- chunks and vectors -----------------------------------------------------------------------------------

    def chunks_without_vectors(self, document_id: int, model: str, limit: int) -> list[tuple[int, str]]:
        """(chunk id, text to embed): the chunk's context, a line break, and its text."""
        rows = self._query(
            "SELECT ch.id, ch.context, ch.text FROM chunks ch WHERE ch.document_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM embeddings e WHERE e.model = ? AND e.chunk_id = ch.id) ORDER BY ch.ordinal LIMIT ?",
            (document_id, model, limit),
        )
        return [(int(r[0]), f"{r[1]}\n{r[2]}" if r[1] else str(r[2])) for r in rows]

    def count_vectors(self, document_id: int, model: str) -> int:
        rows = self._query(
            "SELECT count(*) FROM embeddings e JOIN chunks ch ON ch.id = e.chunk_id "
            "WHERE ch.document_id = ? AND e.model = ?",
            (document_id, model),
        )
        return int(rows[0][0])

    def add_vectors(self, model: str, chunk_ids: Sequence[int], vectors: np.ndarray) -> None:
        import numpy as np

        if len(chunk_ids) != len(vectors):
            raise ValueError("one vector per chunk")
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO embeddings(chunk_id, model, vector) VALUES (?, ?, ?)",
                ((int(cid), model, matrix[i].tobytes()) for i, cid in enumerate(chunk_ids)),
            )

    def finish_document(self, document_id: int, model: str | None) -> None:
        """Mark a document done; vectors other models left behind are dropped (they would never be searched)."""
        with self._transaction() as db:
            if model is not None:
                cursor = db.execute(
                    "DELETE FROM embeddings WHERE model != ? AND chunk_id IN "
                    "(SELECT id FROM chunks WHERE document_id = ?)",
                    (model, document_id),
                )
                if cursor.rowcount:
                    db.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")
            db.execute(
                "UPDATE documents SET status = ?, error = NULL, updated_at = ? WHERE id = ?",
                (DocStatus.OK, time.time(), document_id),
            )

    def generation(self) -> int:
        return int(self._query("SELECT value FROM state WHERE key = 'generation'")[0][0])

    def vectors_after(self, model: str, after_chunk_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chunk ids ascending, collection ids, float32 matrix) of ``model``'s vectors with chunk id > after."""
        import numpy as np

        rows = self._query(
            "SELECT e.chunk_id, d.collection_id, e.vector FROM embeddings e JOIN chunks ch ON ch.id = e.chunk_id "
            "JOIN documents d ON d.id = ch.document_id WHERE e.model = ? AND e.chunk_id > ? ORDER BY e.chunk_id",
            (model, after_chunk_id),
        )
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        collections = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, collections, np.zeros((0, 0), dtype=np.float32)
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32)
        return ids, collections, matrix.reshape(len(rows), -1)

    def chunk_rows(self, chunk_ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        rows = self._query(
            "SELECT ch.id, d.id, c.name, d.path, d.kind, ch.page, ch.start, ch.end, ch.text FROM chunks ch "
            "JOIN documents d ON d.id = ch.document_id JOIN collections c ON c.id = d.collection_id "
            f"WHERE ch.id IN ({marks})",
            list(chunk_ids),
        )
        return {int(r[0]): ChunkRow(*r) for r in rows}

    def chunk_count(self) -> int:
        return int(self._query("SELECT count(*) FROM chunks")[0][0])

    # --- full-text ----------------------------------------------------------------------------------------------

    def word_document_counts(self, words: Sequence[str]) -> dict[str, int]:
        """For each query word, how many chunks contain it (after stemming, as the index sees it)."""
        if not words:
            return {}
        with self._lock:
            self._db.execute("DELETE FROM temp.query_words")
            self._db.executemany(
                "INSERT INTO temp.query_words(rowid, word) VALUES (?, ?)", list(enumerate(words, start=1))
            )
            stems: dict[int, set[str]] = {}
            for rowid, term in self._db.execute("SELECT doc, term FROM temp.query_stems"):
                stems.setdefault(int(rowid), set()).add(str(term))
            wanted = sorted(set().union(*stems.values())) if stems else []
            marks = ",".join("?" * len(wanted))
            counts = (
                dict(self._db.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", wanted))
                if wanted
                else {}
            )
        # A word that tokenizes into several terms (rare) is as selective as its rarest term.
        return {
            word: min((int(counts.get(t, 0)) for t in stems.get(i, ())), default=0)
            for i, word in enumerate(words, start=1)
        }

    def bm25(self, terms: Sequence[str], collection_ids: Collection[int] | None, limit: int) -> list[int]:
        """Chunk ids matching any of ``terms``, best BM25 first, in the given collections (None: all).

        Terms are quoted: user text is never FTS syntax.
        """
        if not terms or (collection_ids is not None and not collection_ids):
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        if collection_ids is None:
            sql = "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?"
            params: list[object] = [match, limit]
        else:
            ids = sorted({int(i) for i in collection_ids})
            marks = ",".join("?" * len(ids))
            sql = (
                "SELECT f.rowid FROM chunks_fts f JOIN chunks ch ON ch.id = f.rowid JOIN documents d "
                f"ON d.id = ch.document_id WHERE chunks_fts MATCH ? AND d.collection_id IN ({marks}) "
                "ORDER BY f.rank LIMIT ?"
            )
            params = [match, *ids, limit]
        return [int(r[0]) for r in self._query(sql, params)]

    def find_collection_ids(self, names: Iterable[str]) -> dict[str, int]:
        """name -> id for the names that exist; unknown names are left out (nothing is created)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        rows = self._query(f"SELECT name, id FROM collections WHERE name IN ({','.join('?' * len(wanted))})", wanted)
        return {str(r[0]): int(r[1]) for r in rows}


__all__ = [
    "SCHEMA_VERSION",
    "ChunkRow",
    "CollectionInfo",
    "DocumentIndex",
    "DocumentIndexError",
    "DocumentInfo",
    "QueueItem",
]
