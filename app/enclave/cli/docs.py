"""``enclave docs add|search|list|remove|folders|rescan``: the document index from the command line.

``docs add`` reads files in a child process (``docs parse-server``, hidden), like the app, so a hostile file cannot
hang or crash the command; Ctrl+C stops after the current step and the next ``docs add`` resumes the rest.
Folders given to ``docs add`` are remembered: ``docs rescan`` picks up their new, changed and deleted files.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from enclave.cli.exit_codes import ExitCode
from enclave.docs.ingest import DEFAULT_COLLECTION, FileStatus, IngestProgress
from enclave.docs.status import DocStatus

if TYPE_CHECKING:
    from enclave.docs.ingest import Ingester

NO_EMBEDDER = (
    "No embedding model is set, so documents are searched by keywords only. Choose one with "
    "`enclave models use MODEL --role embedding`, or set ENCLAVE_EMBEDDING_MODEL to a GGUF embedding model."
)


def index_path() -> Path:
    from enclave.paths import app_paths

    return app_paths().ensure().documents_db


def register(subparsers: Any) -> None:
    """Add the ``docs`` group and its subcommands (cli._command_groups calls this)."""
    docs = subparsers.add_parser("docs", help="index your documents and search them")
    docs.set_defaults(handler=lambda args: (docs.print_help(sys.stderr), ExitCode.USAGE)[1])
    sub = docs.add_subparsers(dest="docs_command", metavar="SUBCOMMAND")

    add = sub.add_parser("add", help="add files or folders (unchanged files are skipped; interrupted runs resume)")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add.add_argument("--collection", default=DEFAULT_COLLECTION, metavar="NAME")
    add.add_argument("--json", action="store_true", help="print a JSON list with one object per file")
    add.set_defaults(handler=lambda a: run_add(a, sys.stdout, sys.stderr))

    search = sub.add_parser("search", help="hybrid (keyword + meaning) search")
    search.add_argument("query")
    search.add_argument("--collection", default=None, metavar="NAME")
    search.add_argument("--k", type=int, default=5, metavar="N", help="results to show (default 5)")
    search.add_argument("--json", action="store_true", help="print a JSON list (path, page, score, text, ...)")
    search.set_defaults(handler=lambda a: run_search(a, sys.stdout, sys.stderr))

    listing = sub.add_parser("list", help="indexed documents and their status")
    listing.add_argument("--collection", default=None, metavar="NAME")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=lambda a: run_list(a, sys.stdout))

    remove = sub.add_parser("remove", help="remove a document (by path or id) from the index")
    remove.add_argument("target", metavar="PATH|ID")
    remove.add_argument("--collection", default=None, metavar="NAME")
    remove.add_argument("--json", action="store_true")
    remove.set_defaults(handler=lambda a: run_remove(a, sys.stdout, sys.stderr))

    folders = sub.add_parser("folders", help="folders remembered by `docs add`, which `docs rescan` re-reads")
    folders.add_argument("--json", action="store_true")
    folders.set_defaults(handler=lambda a: run_folders(a, sys.stdout))

    rescan = sub.add_parser("rescan", help="re-read remembered folders: add new and changed files, drop deleted ones")
    rescan.add_argument("--json", action="store_true", help="print a JSON list with one object per file")
    rescan.set_defaults(handler=lambda a: run_rescan(a, sys.stdout, sys.stderr))

    # The isolated file reader (isolation.py). Added without help, then taken out of the listing: on Python < 3.13
    # help=SUPPRESS on a subcommand prints "==SUPPRESS==" instead of hiding it.
    server = sub.add_parser("parse-server")
    server.set_defaults(handler=lambda a: _serve())
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "parse-server"]


def _serve() -> int:
    from enclave.docs.isolation import serve

    return serve()


def _open_embedder(err: TextIO) -> Any:
    """The active embedding model, or None (keyword-only) with a note; raises SystemExit on a broken model."""
    from enclave.docs.embedder import EmbedderError, active_embedding_model_path

    path = active_embedding_model_path()
    if path is None:
        err.write(f"enclave: note: {NO_EMBEDDER}\n")
        return None
    from enclave.docs.embedder import Embedder

    try:
        return Embedder(path)
    except EmbedderError as exc:
        err.write(f"enclave: {exc}\n")
        raise SystemExit(ExitCode.MODEL) from exc


def run_add(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    return _run_ingest(args, out, err, lambda ingester: ingester.add(args.paths, args.collection), "docs add")


def run_rescan(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    def rescan(ingester: Ingester) -> list[FileStatus]:
        if not ingester.index.folders():
            err.write("enclave: note: no folders are watched; `enclave docs add FOLDER` adds one.\n")
        return ingester.rescan()

    return _run_ingest(args, out, err, rescan, "docs rescan")


def _run_ingest(
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    start: Callable[[Ingester], list[FileStatus]],
    command: str,
) -> ExitCode:
    """Queue work with ``start`` (reporting what it knows at once), then run the queue to the end, showing progress."""
    from enclave.docs.index import DocumentIndex
    from enclave.docs.ingest import Ingester
    from enclave.docs.isolation import IsolatedParser

    embedder = _open_embedder(err)
    index = DocumentIndex(index_path())
    ingester = Ingester(index, embedder, parser=IsolatedParser())
    statuses: list[FileStatus] = []
    stop = threading.Event()
    interactive = err.isatty()

    def on_file(status: FileStatus) -> None:
        statuses.append(status)
        if not args.json:
            detail = f"{status.chunks} chunks" if status.status == DocStatus.OK else (status.error or "")
            err.write("\r\033[K" if interactive else "")
            out.write(f"{status.status:11} {status.path}  {detail}".rstrip() + "\n")
            out.flush()

    def on_progress(p: IngestProgress) -> None:
        if interactive and p.current_path:
            share = f" {p.current_chunks_done}/{p.current_chunks_total} chunks" if p.current_chunks_total else ""
            err.write(f"\r\033[K[{p.files_done + 1}/{p.files_total}] {Path(p.current_path).name[:50]}{share}")
            err.flush()

    interrupted = False
    try:
        ingester.enqueue_stale()
        for status in start(ingester):
            on_file(status)
        ingester.run(stop, on_file, on_progress)
    except KeyboardInterrupt:
        interrupted = True
        err.write(f"\nenclave: stopped; run `enclave {command}` again to resume.\n")
    finally:
        ingester.close()
        index.close()
        if embedder is not None:
            embedder.close()
    if interactive:
        err.write("\r\033[K")
    if args.json:
        json.dump([asdict(s) for s in statuses], out, indent=2, ensure_ascii=False)
        out.write("\n")
    missing = [s for s in statuses if s.status == DocStatus.MISSING]
    if interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.NOT_FOUND if missing and len(missing) == len(statuses) else ExitCode.OK


def run_search(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    from enclave.docs.index import DocumentIndex
    from enclave.docs.search import Searcher

    if args.k <= 0:
        err.write("enclave: --k must be positive\n")
        return ExitCode.USAGE
    embedder = _open_embedder(err)
    index = DocumentIndex(index_path())
    try:
        response = Searcher(index).search_with(embedder, args.query, k=args.k, collection=args.collection)
    finally:
        index.close()
        if embedder is not None:
            embedder.close()
    if args.json:
        json.dump([asdict(r) for r in response.results], out, indent=2, ensure_ascii=False)
        out.write("\n")
        return ExitCode.OK
    if response.nothing_relevant:
        out.write("Nothing relevant was found in your documents.\n")
    for i, r in enumerate(response.results, 1):
        snippet = " ".join(r.text.split())[:240]
        weak = "" if r.relevant else ", weak match"
        out.write(f"[{i}] {r.path}, page {r.page} (score {r.score:.4f}{weak})\n    {snippet}\n")
    return ExitCode.OK


def run_list(args: argparse.Namespace, out: TextIO) -> ExitCode:
    from enclave.docs.index import DocumentIndex

    with DocumentIndex(index_path()) as index:
        rows = index.documents(args.collection)
        queued = index.queue_size()
    if args.json:
        json.dump([asdict(r) for r in rows], out, indent=2, ensure_ascii=False)
        out.write("\n")
        return ExitCode.OK
    for r in rows:
        pages = f"{r.page_count} pages" if r.page_count is not None else ""
        out.write(f"{r.id:5} {r.status:10} {r.chunks:6} chunks {pages:>11}  {r.collection}: {r.path}\n")
        if r.error:
            out.write(f"      {r.error}\n")
    if queued:
        out.write(f"{queued} file(s) waiting to be indexed: run `enclave docs add` to resume.\n")
    return ExitCode.OK


def run_remove(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    from enclave.docs.index import DocumentIndex

    with DocumentIndex(index_path()) as index:
        if args.target.isdigit() and not Path(args.target).exists():
            removed = index.remove([int(args.target)])
        else:
            removed = index.remove_path(str(Path(args.target).resolve()), args.collection)
    if not removed:
        err.write(f"enclave: {args.target} is not in the index\n")
        return ExitCode.NOT_FOUND
    if args.json:
        json.dump({"removed": removed}, out)
        out.write("\n")
    else:
        out.write(f"Removed {removed} document(s).\n")
    return ExitCode.OK


def run_folders(args: argparse.Namespace, out: TextIO) -> ExitCode:
    from enclave.docs.index import DocumentIndex

    with DocumentIndex(index_path()) as index:
        folders = index.folders()
    rows = [{"collection": c, "path": p, "exists": Path(p).is_dir()} for c, p in folders]
    if args.json:
        json.dump(rows, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return ExitCode.OK
    if not rows:
        out.write("No folders are watched: `enclave docs add FOLDER` adds one.\n")
    for row in rows:
        gone = "" if row["exists"] else "  (not found)"
        out.write(f"{row['collection']}: {row['path']}{gone}\n")
    return ExitCode.OK
