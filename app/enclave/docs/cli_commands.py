"""``enclave docs add|search|list|remove``: the document index from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from enclave.docs.index import DocumentIndex
from enclave.docs.ingest import DEFAULT_COLLECTION, IngestProgress, ingest
from enclave.paths import app_paths

EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND = 0, 2, 3

NO_EMBEDDER = (
    "No embedding model is set. Run `enclave models use FILE.gguf --role embedding` (or download one, e.g. "
    "`enclave models download all-minilm-l6-v2-f16`). Without one, documents are searched by keywords only."
)


def index_path() -> Path:
    return app_paths().ensure().data / "documents.sqlite3"


def embedding_model_path() -> Path | None:
    """The active embedding model: ENCLAVE_EMBEDDING_MODEL, else the one chosen with `models use --role embedding`."""
    override = os.environ.get("ENCLAVE_EMBEDDING_MODEL")
    if override:
        return Path(override)
    from enclave.models.installed import ModelRegistry

    registry_file = app_paths().data / "models.json"
    if not registry_file.exists():
        return None
    model = ModelRegistry(registry_file).active("embedding")
    return Path(model.path) if model is not None else None


def register(subparsers: Any) -> None:
    docs = subparsers.add_parser("docs", help="index your documents and search them")
    docs.set_defaults(handler=lambda args: (docs.print_help(sys.stderr), EXIT_USAGE)[1])
    sub = docs.add_subparsers(dest="docs_command", metavar="SUBCOMMAND")
    add = sub.add_parser("add", help="add files or folders (unchanged files are skipped)")
    add.add_argument("paths", nargs="+", type=Path)
    add.add_argument("--collection", default=DEFAULT_COLLECTION)
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=lambda a: run_add(a, sys.stdout, sys.stderr))
    search = sub.add_parser("search", help="hybrid (keyword + meaning) search")
    search.add_argument("query")
    search.add_argument("--collection", default=None)
    search.add_argument("--k", type=int, default=5)
    search.add_argument("--json", action="store_true")
    search.set_defaults(handler=lambda a: run_search(a, sys.stdout, sys.stderr))
    listing = sub.add_parser("list", help="indexed documents and their status")
    listing.add_argument("--collection", default=None)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=lambda a: run_list(a, sys.stdout))
    remove = sub.add_parser("remove", help="remove a document (by path or id) from the index")
    remove.add_argument("target")
    remove.add_argument("--collection", default=None)
    remove.add_argument("--json", action="store_true")
    remove.set_defaults(handler=lambda a: run_remove(a, sys.stdout, sys.stderr))


def _embedder(err: TextIO) -> Any:
    path = embedding_model_path()
    if path is None:
        err.write(f"enclave: note: {NO_EMBEDDER}\n")
        return None
    from enclave.docs.embedder import Embedder

    return Embedder(path)


def run_add(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        err.write(f"enclave: not found: {', '.join(missing)}\n")
        return EXIT_NOT_FOUND
    embedder = _embedder(err)
    index = DocumentIndex(index_path())

    def progress(p: IngestProgress) -> None:
        if p.current:
            err.write(f"\r[{p.done + 1}/{p.total}] {Path(p.current).name[:60]:60}")
            err.flush()

    try:
        outcomes = ingest(index, embedder, args.paths, collection=args.collection, on_progress=progress)
    finally:
        index.close()
        if embedder is not None:
            embedder.close()
    err.write("\n")
    if args.json:
        json.dump([asdict(o) for o in outcomes], out, indent=2)
        out.write("\n")
    else:
        for o in outcomes:
            detail = f"{o.chunks} chunks" if o.status in ("ok", "unchanged") else (o.error or "")
            out.write(f"{o.status:11} {o.path}  {detail}\n")
    return EXIT_OK


def run_search(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.k <= 0:
        err.write("enclave: --k must be positive\n")
        return EXIT_USAGE
    embedder = _embedder(err)
    index = DocumentIndex(index_path())
    try:
        vector = embedder.embed_query(args.query) if embedder is not None else None
        model = embedder.model_id if embedder is not None else None
        results = index.search(args.query, vector, model, k=args.k, collection=args.collection)
    finally:
        index.close()
        if embedder is not None:
            embedder.close()
    if args.json:
        json.dump([asdict(r) for r in results], out, indent=2, ensure_ascii=False)
        out.write("\n")
        return EXIT_OK
    if not results:
        out.write("Nothing relevant was found in your documents.\n")
    for i, r in enumerate(results, 1):
        snippet = " ".join(r.text.split())[:240]
        out.write(f"[{i}] {r.path}, page {r.page} (score {r.score:.3f})\n    {snippet}\n")
    return EXIT_OK


def run_list(args: argparse.Namespace, out: TextIO) -> int:
    index = DocumentIndex(index_path())
    try:
        rows = index.documents(args.collection)
    finally:
        index.close()
    if args.json:
        json.dump([asdict(r) for r in rows], out, indent=2)
        out.write("\n")
        return EXIT_OK
    for r in rows:
        out.write(f"{r.id:5} {r.status:11} {r.chunks:6} chunks  {r.collection}: {r.path}\n")
    return EXIT_OK


def run_remove(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    index = DocumentIndex(index_path())
    try:
        removed = index.remove(
            args.collection, str(Path(args.target).resolve()) if not args.target.isdigit() else args.target
        )
    finally:
        index.close()
    if not removed:
        err.write(f"enclave: {args.target} is not in the index\n")
        return EXIT_NOT_FOUND
    if args.json:
        json.dump({"removed": removed}, out)
        out.write("\n")
    else:
        out.write(f"Removed {removed} document(s).\n")
    return EXIT_OK
