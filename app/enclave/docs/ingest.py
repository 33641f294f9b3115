"""Add files and folders to the index: incrementally, resumably, in small steps.

- Incremental: a file whose size and mtime match what the index recorded is skipped without being opened; one whose
  mtime changed but whose sha256 did not is only re-stamped. Unchanged files are never parsed or embedded again.
- Resumable: adding files only puts them on the index's persisted queue. Each file is then parsed, chunked and its
  chunks stored in one transaction, and embedded in batches, each batch committed; so a killed app loses at most one
  batch, and the next start continues from the queue and from the first chunk without a vector.
- Model changes: vectors are tagged with the embedding model's id; with a new model, ``enqueue_stale`` puts every
  document lacking its vectors back on the queue and only the embedding is redone, from the stored chunks.
- Watched folders: a folder added once is remembered; ``rescan()`` adds it again (new and changed files are
  queued) and drops the documents of files deleted from it. A folder that is itself gone is left alone: it may be
  on a drive that is not connected, and re-indexing it all when it comes back would be slow.
- Small steps: ``Ingester.step()`` does one bounded piece of work (poll the parser, or embed one batch) and returns,
  so the GUI worker can answer searches, pause and cancel between steps; ``run()`` loops it for the CLI and tests.
- Every path is per-file and bounded: symbolic-link loops, unreadable files, pipes and devices, files that vanish
  mid-scan and names that are not valid text each end as that file's status with a sentence saying why; the run goes
  on. Smaller files are queued first; a file may make a number of passages proportional to its size
  ("too_many_passages" past it, before anything is embedded) and take an embedding time proportional to its size
  ("too_large" past it); and after a minute of embedding, a file goes to the back of the queue so the files behind
  it are not held up (it resumes where it stopped).
"""

from __future__ import annotations

import enum
import errno
import hashlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from enclave.docs import DEFAULT_COLLECTION
from enclave.docs.chunking import DEFAULT_BUDGET, DEFAULT_OVERLAP, chunk_contexts, chunk_pages
from enclave.docs.embedder import EmbedderError, TextEmbedder
from enclave.docs.index import DocumentIndex, DocumentInfo, QueueItem
from enclave.docs.isolation import FileParser, InProcessParser
from enclave.docs.limits import DEFAULT_LIMITS, Limits
from enclave.docs.parsers import ParsedDocument, ParseStatus, kind_of
from enclave.docs.status import DocStatus

log = logging.getLogger(__name__)


EMBED_BATCH = 16  # chunks per step: ~0.5 s on two cores with MiniLM, so searches and pauses wait at most that
PARSE_POLL_S = 0.05
CONTEXT_TOKENS = 48  # room kept in the embedding model's input for a chunk's context (chunking.MAX_CONTEXT_CHARS)

# Statuses that do not make a file "done": adding it again retries it (a timeout may have been a busy machine).
RETRY = frozenset({DocStatus.INDEXING, DocStatus.CANCELLED, DocStatus.TIMEOUT})


@dataclass(frozen=True)
class FileStatus:
    """What happened to one file; the UI shows one row per file, the CLI one line."""

    path: str
    collection: str
    status: DocStatus  # "ok", "unchanged", "missing", "removed", "cancelled", "encrypted", "damaged", ...
    chunks: int = 0
    pages: int | None = None
    error: str | None = None  # a sentence for the user when the file could not be indexed
    document_id: int | None = None

    @property
    def indexed(self) -> bool:
        return self.status in (DocStatus.OK, DocStatus.UNCHANGED)


@dataclass(frozen=True)
class IngestProgress:
    files_done: int  # files finished since the queue was last empty
    files_total: int  # finished + still queued
    current_path: str  # "" when idle
    current_chunks_done: int  # chunks of the current file with a vector
    current_chunks_total: int
    phase: str  # "reading", "embedding", "idle"


class _Phase(enum.Enum):
    START = "start"
    PARSE = "reading"
    EMBED = "embedding"


@dataclass
class _Job:
    item: QueueItem
    phase: _Phase = _Phase.START
    size: int = 0
    mtime: float = 0.0
    sha256: str = ""
    document_id: int | None = None
    chunks_total: int = 0
    chunks_done: int = 0
    pages: int | None = None
    slice_seconds: float = 0.0  # embedding time since the file last came to the front of the queue


def iter_files(paths: Iterable[Path], on_error: Callable[[OSError], None] | None = None) -> Iterator[Path]:
    """Files, and the files inside folders (recursively, in name order), skipping hidden files and folders.

    Links to folders are not followed (a link loop cannot make the walk endless); a folder that cannot be listed is
    passed to ``on_error`` and skipped.
    """
    for path in paths:
        if is_folder(path):
            for root, dirs, files in os.walk(path, onerror=on_error):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


def is_folder(path: Path) -> bool:
    """``path.is_dir()`` that says False instead of raising (no permission to look, a link loop...)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def real_path(path: Path | str) -> str:
    """The absolute path with links resolved; never raises (a link loop is left as it is, and reported elsewhere)."""
    return os.path.realpath(path)


def shown_path(path: Path | str) -> str:
    """A path as text that can be shown, stored and printed: bytes of a file name that are not valid in the system's
    encoding become U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace") if _bad_name(path) else str(path)


def _bad_name(path: Path | str) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of a file name, kept by Python as lone surrogates
        return True
    return False


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_problem(path: Path) -> tuple[DocStatus | None, str, os.stat_result | None]:
    """(status, reason, stat) for a path that should be a readable document: status None when it is a regular file.

    Nothing is opened, so a pipe or a device can never block the caller.
    """
    if _bad_name(path):
        return (
            DocStatus.UNREADABLE,
            "The file name is not valid text in this system's encoding, so it cannot be stored; rename the file to "
            "add it.",
            None,
        )
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            return DocStatus.UNREADABLE, "This is a link to a file that does not exist.", None
        return DocStatus.MISSING, "The file was not found; it may have been moved or deleted.", None
    except PermissionError:
        return DocStatus.UNREADABLE, "Enclave is not allowed to read this file (permission denied).", None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return (
                DocStatus.UNREADABLE,
                "This is a link that leads back to itself (a symbolic-link loop): no file.",
                None,
            )
        return DocStatus.UNREADABLE, f"The file could not be read ({exc.strerror or exc}).", None
    except ValueError:  # a NUL in the name
        return DocStatus.UNREADABLE, "The file name is not valid.", None
    for test, what in _SPECIAL_FILES:
        if test(info.st_mode):
            return DocStatus.UNREADABLE, f"This is {what}, not a document: it was left alone.", info
    if stat.S_ISDIR(info.st_mode):
        return DocStatus.UNREADABLE, "This is a folder, not a file.", info
    return None, "", info


def is_under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it, compared by whole components ("/a/bc" is not under "/a/b")."""
    return Path(path).is_relative_to(folder)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Ingester:
    """Works through the index's queue. Not thread-safe: one thread drives it (the documents worker, or the CLI)."""

    def __init__(
        self,
        index: DocumentIndex,
        embedder: TextEmbedder | None,
        *,
        parser: FileParser | None = None,
        limits: Limits = DEFAULT_LIMITS,
        batch_size: int = EMBED_BATCH,
        chunk_tokens: int = DEFAULT_BUDGET,
        overlap_tokens: int = DEFAULT_OVERLAP,
        contextual: bool = True,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.parser: FileParser = parser or InProcessParser()
        self.limits = limits
        self.batch_size = batch_size
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.contextual = contextual  # embed each chunk with its document title and section headings
        self._job: _Job | None = None
        self._files_done = 0
        self._embed_seconds: dict[tuple[str, str], float] = {}  # embedding time so far per (collection, path)

    @property
    def model_id(self) -> str | None:
        return self.embedder.model_id if self.embedder is not None else None

    def set_embedder(self, embedder: TextEmbedder | None) -> int:
        """Use another embedding model from now on; returns how many documents were queued for re-embedding."""
        self.embedder = embedder
        return self.enqueue_stale()

    # --- adding -------------------------------------------------------------------------------------------------

    def add(self, paths: Iterable[Path | str], collection: str = DEFAULT_COLLECTION) -> list[FileStatus]:
        """Queue files and folders; returns the statuses known at once (unchanged, skipped, missing).

        The rest are reported by ``step()`` as they finish. A file named explicitly with an unknown type is
        "unsupported"; unknown files met inside a folder are "skipped" (photos in a folder of notes are no error).
        Neither is stored in the index. Folders are remembered for ``rescan()``.
        """
        known = self.index.file_states(collection)
        stale = {path for _, path in self.index.stale_documents(self.model_id)} if self.model_id else set()
        immediate: list[FileStatus] = []
        queue: list[tuple[int, str]] = []  # (size, path): smaller files are indexed first

        def unlistable(exc: OSError) -> None:
            reason = exc.strerror or str(exc)
            immediate.append(
                FileStatus(
                    shown_path(exc.filename or ""),
                    collection,
                    DocStatus.UNREADABLE,
                    error=f"The folder could not be read ({reason}); its files were left out.",
                )
            )

        for given in paths:
            given = Path(given)
            in_folder = is_folder(given)
            if not in_folder:
                status, reason, _ = file_problem(given)
                if status:
                    if status == DocStatus.MISSING:
                        reason = "The file or folder was not found."
                    immediate.append(FileStatus(shown_path(os.path.abspath(given)), collection, status, error=reason))
                    continue
            elif _bad_name(given):
                immediate.append(
                    FileStatus(shown_path(given), collection, DocStatus.UNREADABLE, error=file_problem(given)[1])
                )
                continue
            else:
                self.index.add_folder(collection, real_path(given))
            for file in iter_files([given], unlistable):
                path = real_path(file)
                if kind_of(file) is None:
                    status = DocStatus.SKIPPED if in_folder else DocStatus.UNSUPPORTED
                    error = f"{file.suffix or 'Files without an extension'} files are not supported."
                    immediate.append(FileStatus(shown_path(path), collection, status, error=error))
                    continue
                status, reason, info = file_problem(file)
                if status == DocStatus.MISSING:
                    reason = "The file disappeared while its folder was being read."
                if status or info is None:  # named as the user sees it: a link, not where it (never) leads
                    shown = shown_path(os.path.abspath(file))
                    immediate.append(FileStatus(shown, collection, status or DocStatus.UNREADABLE, error=reason))
                    continue
                state = known.get(path)
                unchanged = state is not None and (info.st_size, info.st_mtime) == state[1:3]
                if state is not None and unchanged and state[3] not in RETRY and path not in stale:
                    immediate.append(FileStatus(path, collection, DocStatus.UNCHANGED, document_id=state[0]))
                    continue
                queue.append((info.st_size, path))
        queue.sort()
        self.index.enqueue(collection, [path for _, path in queue])
        return immediate

    def rescan(self, folders: Iterable[tuple[str, str]] | None = None) -> list[FileStatus]:
        """Bring watched folders ((collection, path) pairs; None: all) up to date with the disk.

        New and changed files are queued (``step()`` reports them), unchanged ones reported "unchanged", and
        documents of files deleted from a folder removed and reported "removed". A folder that is gone keeps its
        documents and is reported "missing": it may be on a drive that is not connected.
        """
        watched = self.index.folders() if folders is None else list(folders)
        statuses: list[FileStatus] = []
        for collection, folder in watched:
            try:
                statuses.extend(self._rescan_folder(collection, real_path(folder)))
            except OSError as exc:  # the folder cannot be listed now (permissions changed, a drive failing)
                error = f"The folder could not be read ({exc.strerror or exc}); its documents are kept."
                statuses.append(FileStatus(shown_path(folder), collection, DocStatus.UNREADABLE, error=error))
        return statuses

    def _rescan_folder(self, collection: str, folder: str) -> list[FileStatus]:
        if not is_folder(Path(folder)):
            error = (
                "The folder was not found; its documents are kept in case it is on a drive that is not connected. "
                "Remove them yourself if the folder was deleted."
            )
            return [FileStatus(folder, collection, DocStatus.MISSING, error=error)]
        if not any(Path(folder).iterdir()) and any(is_under(p, folder) for p in self.index.file_states(collection)):
            error = (
                "The folder is empty now; its documents are kept in case it is the mount point of a drive that is "
                "not connected. Remove them yourself if the files were deleted."
            )
            return [FileStatus(folder, collection, DocStatus.MISSING, error=error)]
        return self._remove_vanished(collection, folder) + self.add([folder], collection)

    def _remove_vanished(self, collection: str, folder: str) -> list[FileStatus]:
        """Remove the documents of files under ``folder`` that no longer exist."""
        gone = {
            path: state[0]
            for path, state in self.index.file_states(collection).items()
            if is_under(path, folder) and not os.path.exists(path)
        }
        for document_id in gone.values():
            self.forget(document_id)
        self.index.remove(gone.values())
        return [
            FileStatus(path, collection, DocStatus.REMOVED, document_id=doc_id) for path, doc_id in sorted(gone.items())
        ]

    def enqueue_stale(self) -> int:
        """Queue documents that lack vectors from the current model (after a model change, or an interrupted run)."""
        if self.model_id is None:
            return 0
        count = 0
        by_collection: dict[str, list[str]] = {}
        for collection, path in self.index.stale_documents(self.model_id):
            by_collection.setdefault(collection, []).append(path)
        for collection, paths in by_collection.items():
            count += self.index.enqueue(collection, paths)
        return count

    # --- working --------------------------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return self._job is None and self.index.queue_size() == 0

    def progress(self) -> IngestProgress:
        queued = self.index.queue_size()
        job = self._job
        if job is None:
            return IngestProgress(self._files_done, self._files_done + queued, "", 0, 0, "idle")
        return IngestProgress(
            self._files_done,
            self._files_done + queued,
            job.item.path,
            job.chunks_done,
            job.chunks_total,
            "embedding" if job.phase is _Phase.EMBED else "reading",
        )

    def step(self) -> FileStatus | None:
        """Do one bounded piece of work. Returns a file's status when a file finished, else None.

        ``idle`` tells when there is nothing left; errors in one file end as that file's status.
        """
        if self._job is None:
            items = self.index.queued(1)
            if not items:
                self._files_done = 0
                return None
            self._job = _Job(items[0])
        job = self._job
        try:
            if job.phase is _Phase.START:
                return self._start(job)
            if job.phase is _Phase.PARSE:
                parsed = self.parser.poll(PARSE_POLL_S)
                return None if parsed is None else self._store(job, parsed)
            return self._embed(job)
        except (EmbedderError, sqlite3.Error):
            raise  # not this file's fault: the caller reports it and stops; the file stays queued
        except OSError as exc:
            if not os.path.lexists(job.item.path):
                return self._finish(
                    job, DocStatus.MISSING, error="The file was deleted or moved while it was being read."
                )
            return self._finish(job, DocStatus.UNREADABLE, error=f"The file could not be read ({exc.strerror or exc}).")
        except Exception as exc:  # a bug or a library failure on this file must not block the queue
            log.exception("indexing %s failed", job.item.path)
            return self._finish(job, DocStatus.DAMAGED, error=f"The file could not be indexed: {exc}")

    def run(
        self,
        stop: threading.Event | None = None,
        on_file: Callable[[FileStatus], None] | None = None,
        on_progress: Callable[[IngestProgress], None] | None = None,
    ) -> list[FileStatus]:
        """Work until the queue is empty or ``stop`` is set (what is done stays done; the rest stays queued)."""
        finished: list[FileStatus] = []
        while not (stop is not None and stop.is_set()):
            status = self.step()
            if status is not None:
                finished.append(status)
                if on_file is not None:
                    on_file(status)
            if on_progress is not None:
                on_progress(self.progress())
            if self.idle:
                break
        return finished

    def cancel(self) -> int:
        """Drop the queue and the file in progress; returns how many queued files were dropped.

        A file stopped half-embedded keeps its chunks (keyword search finds them) and is marked "cancelled";
        adding it again finishes it.
        """
        job, self._job = self._job, None
        self.parser.cancel()
        stopped = [] if job is None or job.document_id is None else [self.index.document_by_id(job.document_id)]
        # Files sent to the back of the queue after their time slice are half-embedded too.
        stopped += [self.index.document(i.collection, i.path) for i in self.index.queued(self.index.queue_size())]
        for doc in stopped:
            if doc is not None and doc.status == DocStatus.INDEXING:
                self.index.set_status(doc.id, DocStatus.CANCELLED, "Indexing was cancelled; add the file again.")
        dropped = self.index.clear_queue()
        self._files_done = 0
        return dropped

    def forget(self, document_id: int) -> None:
        """Stop working on a document that is about to be removed (its queued work goes with it)."""
        job = self._job
        if job is not None and job.document_id == document_id:
            self.parser.cancel()
            self.index.dequeue(job.item.id)
            self._job = None

    def close(self) -> None:
        self.parser.close()

    # --- the phases -------------------------------------------------------------------------------------------

    def _start(self, job: _Job) -> FileStatus | None:
        path = Path(job.item.path)
        existing = self.index.document(job.item.collection, job.item.path)
        status, reason, info = file_problem(path)
        if status or info is None:
            if (
                existing is not None
                and existing.status in (DocStatus.OK, DocStatus.INDEXING, DocStatus.CANCELLED)
                and existing.chunks
            ):
                # The file is gone but its chunks are here (a model change): embedding needs only the stored text.
                return self._resume_embedding(job, existing)
            return self._finish(job, status or DocStatus.UNREADABLE, error=reason)
        job.size, job.mtime = info.st_size, info.st_mtime
        same_stamp = existing is not None and (existing.size, existing.mtime) == (job.size, job.mtime)
        if existing is not None and not same_stamp:
            job.sha256 = sha256_of(path)
            if existing.sha256 == job.sha256:
                self.index.touch(existing.id, job.mtime)  # saved again, not changed
                same_stamp = True
        if existing is not None and same_stamp:
            if existing.status in (DocStatus.OK, DocStatus.INDEXING, DocStatus.CANCELLED) and existing.chunks:
                return self._resume_embedding(job, existing)
            if existing.status not in RETRY:
                return self._finish(job, DocStatus.UNCHANGED, document_id=existing.id, pages=existing.page_count)
        if not job.sha256:
            job.sha256 = sha256_of(path)
        self.parser.submit(path, self.limits)
        job.phase = _Phase.PARSE
        return None

    def _resume_embedding(self, job: _Job, document: DocumentInfo) -> FileStatus | None:
        job.document_id = document.id
        job.pages = document.page_count
        job.chunks_total = document.chunks
        job.size = job.size or document.size
        if self.embedder is None:
            if document.status != DocStatus.OK:
                self.index.set_status(document.id, DocStatus.OK)
            return self._finish(job, DocStatus.UNCHANGED, document_id=document.id, chunks=document.chunks)
        job.chunks_done = self.index.count_vectors(document.id, self.embedder.model_id)
        if document.status == DocStatus.OK and job.chunks_done >= job.chunks_total:  # only re-stamped: nothing to do
            return self._finish(job, DocStatus.UNCHANGED, document_id=document.id, chunks=document.chunks)
        if document.status == DocStatus.CANCELLED:
            self.index.set_status(document.id, DocStatus.INDEXING)
        job.phase = _Phase.EMBED
        return None

    def _store(self, job: _Job, parsed: ParsedDocument) -> FileStatus | None:
        item = job.item
        if parsed.status is not ParseStatus.OK and not os.path.lexists(item.path):
            return self._finish(job, DocStatus.MISSING, error="The file was deleted or moved while it was being read.")
        if parsed.status is not ParseStatus.OK:
            document_id = self.index.store_document(
                item.collection,
                item.path,
                kind=parsed.kind,
                sha256=job.sha256,
                size=job.size,
                mtime=job.mtime,
                status=DocStatus(parsed.status),
                error=parsed.error,
                page_count=parsed.page_count,
            )
            return self._finish(job, DocStatus(parsed.status), error=parsed.error, document_id=document_id)
        if self.embedder is not None:
            room = self.embedder.max_text_tokens() - (CONTEXT_TOKENS if self.contextual else 0)
            budget = max(8, min(self.chunk_tokens, room))
            count_tokens = self.embedder.count_tokens
        else:  # keyword-only index: chunk by an estimate (about four characters per token)
            budget = self.chunk_tokens

            def count_tokens(text: str) -> int:
                return len(text) // 4 + 1

        allowed = self.limits.passage_budget(job.size)
        overlap = min(self.overlap_tokens, budget // 4)
        chunks = chunk_pages(parsed.pages, count_tokens, budget=budget, overlap=overlap, limit=allowed + 1)
        if len(chunks) > allowed:
            error = (
                f"This file would make more than {allowed:,} passages to search, the most allowed for a file of "
                f"{_size_text(job.size)}: it holds far more text than its size suggests (a very wide table, for "
                "example), so it was not indexed."
            )
            document_id = self.index.store_document(
                item.collection,
                item.path,
                kind=parsed.kind,
                sha256=job.sha256,
                size=job.size,
                mtime=job.mtime,
                status=DocStatus.TOO_MANY_PASSAGES,
                error=error,
                page_count=parsed.page_count,
            )
            return self._finish(job, DocStatus.TOO_MANY_PASSAGES, error=error, document_id=document_id)
        job.document_id = self.index.store_document(
            item.collection,
            item.path,
            kind=parsed.kind,
            sha256=job.sha256,
            size=job.size,
            mtime=job.mtime,
            status=DocStatus.INDEXING if self.embedder is not None else DocStatus.OK,
            page_count=parsed.page_count,
            chars=parsed.chars,
            chunks=chunks,
            contexts=chunk_contexts(chunks, parsed.title, parsed.headings) if self.contextual else None,
        )
        job.pages = parsed.page_count if parsed.page_count is not None else len(parsed.pages)
        job.chunks_total = len(chunks)
        if self.embedder is None:
            return self._finish(job, DocStatus.OK, document_id=job.document_id, chunks=len(chunks))
        job.phase = _Phase.EMBED
        return None

    def _embed(self, job: _Job) -> FileStatus | None:
        assert job.document_id is not None
        embedder = self.embedder
        if embedder is None:  # the model was unset mid-file: keep the chunks for keyword search
            self.index.finish_document(job.document_id, None)
            return self._finish(job, DocStatus.OK, document_id=job.document_id, chunks=job.chunks_total)
        batch = self.index.chunks_without_vectors(job.document_id, embedder.model_id, self.batch_size)
        if not batch:
            self._embed_seconds.pop((job.item.collection, job.item.path), None)
            self.index.finish_document(job.document_id, embedder.model_id)
            return self._finish(job, DocStatus.OK, document_id=job.document_id, chunks=job.chunks_total)
        started = time.monotonic()
        vectors = embedder.embed_documents([text for _, text in batch])
        self.index.add_vectors(embedder.model_id, [cid for cid, _ in batch], vectors)
        job.chunks_done += len(batch)
        elapsed = time.monotonic() - started
        key = (job.item.collection, job.item.path)
        spent = self._embed_seconds.get(key, 0.0) + elapsed
        self._embed_seconds[key] = spent
        job.slice_seconds += elapsed
        allowed = self.limits.embed_seconds_budget(job.size)
        if spent > allowed and job.chunks_done < job.chunks_total:
            del self._embed_seconds[key]
            error = (
                f"Embedding this file took longer than the {allowed:,.0f} s allowed for a file of "
                f"{_size_text(job.size)}, so it was stopped after {job.chunks_done:,} of {job.chunks_total:,} "
                "passages. Keyword search still finds all of it."
            )
            self.index.set_status(job.document_id, DocStatus.TOO_LARGE, error)
            return self._finish(
                job, DocStatus.TOO_LARGE, error=error, document_id=job.document_id, chunks=job.chunks_total
            )
        if job.slice_seconds >= self.limits.slice_seconds and self.index.queue_size() > 1:
            # Held the queue long enough: to the back of it, so the files behind it go first. It resumes later from
            # its first passage without a vector (the chunks and vectors so far are stored).
            self.index.dequeue(job.item.id)
            self.index.enqueue(job.item.collection, [job.item.path])
            self._job = None
        return None

    def _finish(
        self,
        job: _Job,
        status: DocStatus,
        *,
        error: str | None = None,
        document_id: int | None = None,
        chunks: int = 0,
        pages: int | None = None,
    ) -> FileStatus:
        self.index.dequeue(job.item.id)
        self._job = None
        self._files_done += 1
        return FileStatus(
            job.item.path,
            job.item.collection,
            status,
            chunks=chunks,
            pages=pages if pages is not None else job.pages,
            error=error,
            document_id=document_id,
        )


def _size_text(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.0f} kB"


def ingest(
    index: DocumentIndex,
    embedder: TextEmbedder | None,
    paths: Iterable[Path | str],
    *,
    collection: str = DEFAULT_COLLECTION,
    parser: FileParser | None = None,
    limits: Limits = DEFAULT_LIMITS,
    stop: threading.Event | None = None,
    on_file: Callable[[FileStatus], None] | None = None,
    on_progress: Callable[[IngestProgress], None] | None = None,
) -> list[FileStatus]:
    """Add ``paths`` and work through the whole queue (including files left from an interrupted run)."""
    ingester = Ingester(index, embedder, parser=parser, limits=limits)
    try:
        ingester.enqueue_stale()
        immediate = ingester.add(paths, collection)
        for status in immediate:
            if on_file is not None:
                on_file(status)
        return immediate + ingester.run(stop, on_file, on_progress)
    finally:
        if parser is None:
            ingester.close()


__all__ = [
    "DEFAULT_COLLECTION",
    "FileStatus",
    "IngestProgress",
    "Ingester",
    "file_problem",
    "ingest",
    "is_folder",
    "is_under",
    "iter_files",
    "real_path",
    "sha256_of",
    "shown_path",
]
