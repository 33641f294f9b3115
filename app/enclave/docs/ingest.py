"""Add files and folders to the index, incrementally.

Files are identified by content hash: an unchanged file (same size and modification time, or same sha256) is never
parsed or embedded again, so re-scanning a large folder is cheap. Each file is stored in one transaction, so a
killed process keeps every file finished before it, and the next run picks up the rest.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from enclave.docs.chunking import chunk_pages
from enclave.docs.embedder import Embedder
from enclave.docs.index import DocumentIndex
from enclave.docs.parsers import DEFAULT_LIMITS, Limits, ParseStatus, kind_of, parse_file

DEFAULT_COLLECTION = "Documents"


@dataclass(frozen=True)
class FileOutcome:
    path: str
    status: str  # a ParseStatus value, or "unchanged"
    chunks: int
    error: str | None


@dataclass(frozen=True)
class IngestProgress:
    done: int
    total: int
    current: str


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files, and the files inside folders (recursively), skipping hidden ones; unknown types are kept so they can
    be reported as skipped."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not any(part.startswith(".") for part in child.relative_to(path).parts):
                    yield child
        else:
            yield path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def ingest(
    index: DocumentIndex,
    embedder: Embedder | None,
    paths: Iterable[Path],
    *,
    collection: str = DEFAULT_COLLECTION,
    limits: Limits = DEFAULT_LIMITS,
    on_progress: Callable[[IngestProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> list[FileOutcome]:
    files = list(iter_files(paths))
    outcomes: list[FileOutcome] = []
    model_id = embedder.model_id if embedder is not None else None
    for done, path in enumerate(files):
        if stop is not None and stop.is_set():
            break  # paused: everything stored so far stays; the next run continues from here
        if on_progress is not None:
            on_progress(IngestProgress(done, len(files), str(path)))
        outcomes.append(_one(index, embedder, model_id, path.resolve(), collection, limits))
    if on_progress is not None:
        on_progress(IngestProgress(len(outcomes), len(files), ""))
    return outcomes


def _one(
    index: DocumentIndex,
    embedder: Embedder | None,
    model_id: str | None,
    path: Path,
    collection: str,
    limits: Limits,
) -> FileOutcome:
    try:
        stat = path.stat()
    except OSError as exc:
        return FileOutcome(str(path), ParseStatus.DAMAGED.value, 0, f"The file could not be read: {exc}")
    existing = index.document(collection, str(path))
    if existing is not None and existing.size == stat.st_size and existing.mtime == stat.st_mtime:
        return FileOutcome(str(path), "unchanged", existing.chunks, None)
    digest = sha256_of(path) if kind_of(path) is not None else ""
    if existing is not None and existing.sha256 == digest and digest:
        index.touch(existing.id, stat.st_mtime)  # touched but not changed
        return FileOutcome(str(path), "unchanged", existing.chunks, None)
    parsed = parse_file(path, limits)
    chunks = []
    vectors = None
    if parsed.status is ParseStatus.OK and embedder is not None:
        budget = min(200, embedder.max_text_tokens())
        chunks = chunk_pages(parsed.pages, embedder.count_tokens, budget=budget, overlap=max(16, budget // 5))
        vectors = embedder.embed_documents([c.text for c in chunks])
    index.store(
        collection,
        path=str(path),
        sha256=digest,
        size=stat.st_size,
        mtime=stat.st_mtime,
        kind=parsed.kind,
        status=parsed.status.value,
        error=parsed.error,
        page_count=parsed.page_count,
        chunks=chunks,
        vectors=vectors,
        embedding_model=model_id,
    )
    return FileOutcome(str(path), parsed.status.value, len(chunks), parsed.error)
