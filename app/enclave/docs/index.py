"""The document index: SQLite (WAL) with an FTS5 table for BM25 and float32 vectors for semantic search.

Vector search is exact (one matrix product over all chunks), which stays well under 50 ms up to a few hundred
thousand chunks on a laptop; beyond that an ANN index rebuilt from these rows is the next step. The two rankings
are fused with reciprocal rank fusion, which needs no score calibration between BM25 and cosine.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enclave.docs.chunking import Chunk

RRF_K = 60
CANDIDATES = 50
SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    page_count INTEGER,
    embedding_model TEXT,
    added_at REAL NOT NULL,
    UNIQUE (collection_id, path)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    page INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    text TEXT NOT NULL,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='id');
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""


@dataclass(frozen=True)
class DocumentRow:
    id: int
    collection: str
    path: str
    sha256: str
    size: int
    mtime: float
    kind: str
    status: str
    error: str | None
    page_count: int | None
    chunks: int


@dataclass(frozen=True)
class SearchResult:
    chunk_id: int
    path: str
    page: int
    start: int
    end: int
    text: str
    score: float  # fused reciprocal-rank score; higher is better
    bm25_rank: int | None
    vector_rank: int | None
    similarity: float | None  # cosine with the query, when the vector side found it


class DocumentIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._matrix: tuple[str, int, np.ndarray, np.ndarray] | None = None  # (model, version, ids, vectors)
        self._version = 0

    def close(self) -> None:
        self._db.close()

    # --- documents --------------------------------------------------------------------------------------------

    def collection_id(self, name: str) -> int:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO collections(name) VALUES (?)", (name,))
            row = self._db.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def document(self, collection: str, path: str) -> DocumentRow | None:
        rows = self.documents(collection, path=path)
        return rows[0] if rows else None

    def documents(self, collection: str | None = None, *, path: str | None = None) -> list[DocumentRow]:
        sql = (
            "SELECT d.id, c.name, d.path, d.sha256, d.size, d.mtime, d.kind, d.status, d.error, d.page_count, "
            "(SELECT count(*) FROM chunks WHERE document_id = d.id) FROM documents d JOIN collections c "
            "ON c.id = d.collection_id WHERE (? IS NULL OR c.name = ?) AND (? IS NULL OR d.path = ?) ORDER BY d.path"
        )
        with self._lock:
            rows = self._db.execute(sql, (collection, collection, path, path)).fetchall()
        return [DocumentRow(*row) for row in rows]

    def store(
        self,
        collection: str,
        *,
        path: str,
        sha256: str,
        size: int,
        mtime: float,
        kind: str,
        status: str,
        error: str | None,
        page_count: int | None,
        chunks: list[Chunk],
        vectors: np.ndarray | None,
        embedding_model: str | None,
    ) -> int:
        """Replace a document and its chunks in one transaction: a crash leaves the old version or the new one."""
        collection_id = self.collection_id(collection)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM documents WHERE collection_id = ? AND path = ?", (collection_id, path))
                cursor = self._db.execute(
                    "INSERT INTO documents(collection_id, path, sha256, size, mtime, kind, status, error, page_count, "
                    "embedding_model, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        collection_id,
                        path,
                        sha256,
                        size,
                        mtime,
                        kind,
                        status,
                        error,
                        page_count,
                        embedding_model,
                        time.time(),
                    ),
                )
                document_id = int(cursor.lastrowid or 0)
                for i, chunk in enumerate(chunks):
                    blob = vectors[i].astype(np.float32).tobytes() if vectors is not None else None
                    self._db.execute(
                        "INSERT INTO chunks(document_id, page, start, end, text, vector) VALUES (?, ?, ?, ?, ?, ?)",
                        (document_id, chunk.page, chunk.start, chunk.end, chunk.text, blob),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._version += 1
        return document_id

    def touch(self, document_id: int, mtime: float) -> None:
        with self._lock:
            self._db.execute("UPDATE documents SET mtime = ? WHERE id = ?", (mtime, document_id))

    def remove(self, collection: str | None, path_or_id: str) -> int:
        with self._lock:
            if path_or_id.isdigit():
                cursor = self._db.execute("DELETE FROM documents WHERE id = ?", (int(path_or_id),))
            else:
                cursor = self._db.execute(
                    "DELETE FROM documents WHERE path = ? AND (? IS NULL OR collection_id = "
                    "(SELECT id FROM collections WHERE name = ?))",
                    (path_or_id, collection, collection),
                )
            self._version += 1
            return cursor.rowcount

    # --- search -----------------------------------------------------------------------------------------------

    def _selective_terms(self, terms: list[str]) -> list[str]:
        """Leave out terms found in more than 2 % of all chunks (and over a thousand): their inverse document
        frequency is low, so they rank little, yet they would make BM25 score a large share of a big index. A query
        of only such words is left to the vector side."""
        marks = ",".join("?" * len(terms))
        with self._lock:
            counts = dict(self._db.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", terms))
            total = self._db.execute("SELECT count(*) FROM chunks").fetchone()[0] or 1
        return [t for t in terms if 0 < counts.get(t, 0) <= max(total / 50, 1000)]

    def _bm25(self, query: str, collection: str | None, limit: int) -> list[int]:
        terms = self._selective_terms(sorted(set(re.findall(r"\w+", query.lower()))))
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)  # quoted: user text is never FTS syntax
        sql = (
            "SELECT f.rowid FROM chunks_fts f JOIN chunks ch ON ch.id = f.rowid JOIN documents d ON d.id = "
            "ch.document_id JOIN collections c ON c.id = d.collection_id WHERE chunks_fts MATCH ? "
            "AND (? IS NULL OR c.name = ?) ORDER BY bm25(chunks_fts) LIMIT ?"
        )
        with self._lock:
            return [int(r[0]) for r in self._db.execute(sql, (match, collection, collection, limit))]

    def _vectors(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        cached = self._matrix
        if cached is not None and cached[0] == model and cached[1] == self._version:
            return cached[2], cached[3]
        with self._lock:
            rows = self._db.execute(
                "SELECT ch.id, ch.vector FROM chunks ch JOIN documents d ON d.id = ch.document_id "
                "WHERE d.embedding_model = ? AND ch.vector IS NOT NULL",
                (model,),
            ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        matrix = matrix.reshape(len(rows), -1) if rows else np.zeros((0, 0), dtype=np.float32)
        self._matrix = (model, self._version, ids, matrix)
        return ids, matrix

    def _collection_chunk_ids(self, collection: str) -> set[int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ch.id FROM chunks ch JOIN documents d ON d.id = ch.document_id JOIN collections c "
                "ON c.id = d.collection_id WHERE c.name = ?",
                (collection,),
            ).fetchall()
        return {int(r[0]) for r in rows}

    def search(
        self,
        query: str,
        query_vector: np.ndarray | None,
        model: str | None,
        *,
        k: int = 5,
        collection: str | None = None,
    ) -> list[SearchResult]:
        """Hybrid search: BM25 and cosine rankings fused by reciprocal rank fusion."""
        bm25 = self._bm25(query, collection, CANDIDATES)
        vector_ranked: list[int] = []
        similarity: dict[int, float] = {}
        if query_vector is not None and model is not None:
            ids, matrix = self._vectors(model)
            if len(ids):
                scores = matrix @ query_vector.astype(np.float32)
                if collection is not None:
                    allowed = self._collection_chunk_ids(collection)
                    scores = np.where(np.isin(ids, list(allowed)), scores, -np.inf)
                count = min(CANDIDATES, len(scores))
                top = np.argpartition(-scores, count - 1)[:count]  # O(n), then sort only the few kept
                top = top[np.argsort(-scores[top])]
                vector_ranked = [int(ids[i]) for i in top if np.isfinite(scores[i])]
                similarity = {int(ids[i]): float(scores[i]) for i in top}
        fused: dict[int, float] = {}
        for ranking in (bm25, vector_ranked):
            for rank, chunk_id in enumerate(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused, key=lambda cid: -fused[cid])[:k]
        if not best:
            return []
        marks = ",".join("?" * len(best))
        with self._lock:
            rows = {
                r[0]: r
                for r in self._db.execute(
                    f"SELECT ch.id, d.path, ch.page, ch.start, ch.end, ch.text FROM chunks ch JOIN documents d "
                    f"ON d.id = ch.document_id WHERE ch.id IN ({marks})",
                    best,
                )
            }
        bm25_rank = {cid: i + 1 for i, cid in enumerate(bm25)}
        vector_rank = {cid: i + 1 for i, cid in enumerate(vector_ranked)}
        return [
            SearchResult(
                cid,
                rows[cid][1],
                rows[cid][2],
                rows[cid][3],
                rows[cid][4],
                rows[cid][5],
                fused[cid],
                bm25_rank.get(cid),
                vector_rank.get(cid),
                similarity.get(cid),
            )
            for cid in best
            if cid in rows
        ]
