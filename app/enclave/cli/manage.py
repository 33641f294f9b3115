"""``enclave models list|download|import|remove|use``: the installed models from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from enclave.cli.exit_codes import ExitCode
from enclave.models.downloader import DownloadError, DownloadProgress
from enclave.models.hub_client import HubError
from enclave.models.installed import InstalledModel, ModelError, ModelRegistry, download_entry, import_model
from enclave.paths import app_paths


def registry() -> ModelRegistry:
    paths = app_paths().ensure()
    return ModelRegistry(paths.models_file)


def register_models_commands(models: Any) -> None:
    """Add ``list``, ``download``, ``import``, ``remove`` and ``use`` to the ``models`` group (cli.models.register)."""
    listing = models.add_parser("list", help="installed models")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=lambda a: run_list(a, sys.stdout))
    download = models.add_parser("download", help="download a model from the catalog (see `models recommend`)")
    download.add_argument("id", help="catalog id, e.g. deepseek-r1-0528-qwen3-8b-q4_k_m")
    download.add_argument("--json", action="store_true", help="print the installed model as JSON")
    download.set_defaults(handler=lambda a: run_download(a, sys.stdout, sys.stderr))
    importing = models.add_parser("import", help="use a GGUF file you already have (kept where it is)")
    importing.add_argument("path", type=Path)
    importing.add_argument("--json", action="store_true")
    importing.set_defaults(handler=lambda a: run_import(a, sys.stdout, sys.stderr))
    remove = models.add_parser("remove", help="forget a model (downloaded files are deleted, imported ones kept)")
    remove.add_argument("id")
    remove.set_defaults(handler=lambda a: run_remove(a, sys.stdout, sys.stderr))
    use = models.add_parser("use", help="make a model the active one for chat or document embeddings")
    use.add_argument("id_or_path")
    use.add_argument("--role", choices=("chat", "embedding"), default="chat")
    use.set_defaults(handler=lambda a: run_use(a, sys.stdout, sys.stderr))


def run_list(args: argparse.Namespace, out: TextIO) -> ExitCode:
    reg = registry()
    models = reg.models()
    if args.json:
        active = {role: (m.id if (m := reg.active(role)) else None) for role in ("chat", "embedding")}
        json.dump({"models": [asdict(m) for m in models], "active": active}, out, indent=2)
        out.write("\n")
        return ExitCode.OK
    if not models:
        out.write(
            "No models installed. `enclave models recommend` suggests one; `enclave models import FILE` adds yours.\n"
        )
    for m in models:
        marker = "*" if reg.active(m.role) == m else " "
        trust = "verified" if m.verified else "unverified"
        out.write(f"{marker} {m.id:40} {m.role:9} {m.quant:8} {m.size / 1e9:6.1f} GB  {trust}  {m.path}\n")
    return ExitCode.OK


def _print_progress(err: TextIO) -> Any:
    def show(p: DownloadProgress) -> None:
        eta = f", {p.eta_s / 60:.0f} min left" if p.eta_s else ""
        err.write(
            f"\r{p.file} ({p.file_index + 1}/{p.file_count}): {p.bytes_done / 1e9:.2f} / {p.bytes_total / 1e9:.2f} GB"
            f" at {p.speed_bps / 1e6:.1f} MB/s{eta}   "
        )
        err.flush()

    return show


def run_download(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    from enclave.models.catalog import load_catalog
    from enclave.models.hf_token import get_token

    try:
        entry = load_catalog().get(args.id)
    except KeyError:
        err.write(f"enclave: {args.id!r} is not in the catalog. `enclave models recommend --all` lists them.\n")
        return ExitCode.NOT_FOUND
    reg = registry()
    try:
        model = download_entry(
            reg,
            entry,
            app_paths().models_dir,
            token=get_token(),
            on_progress=_print_progress(err),
            log=lambda line: print(line, file=err),
        )
    except (HubError, DownloadError) as exc:
        err.write(f"\nenclave: {exc}\n")
        return ExitCode.NETWORK
    err.write("\n")
    return _report(
        model, args.json, out, f"Installed {model.name} ({model.size / 1e9:.1f} GB, sha256 verified) at {model.path}"
    )


def run_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    try:
        model = import_model(registry(), args.path)
    except ModelError as exc:
        return _failed(exc, err, ExitCode.MODEL if args.path.expanduser().exists() else ExitCode.NOT_FOUND)
    return _report(
        model, args.json, out, f"Imported {model.name} as {model.id} ({model.quant}, {model.architecture}; unverified)"
    )


def _report(model: InstalledModel, as_json: bool, out: TextIO, sentence: str) -> ExitCode:
    if as_json:
        json.dump(asdict(model), out, indent=2)
        out.write("\n")
    else:
        out.write(sentence + "\n")
    return ExitCode.OK


def run_remove(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    try:
        model = registry().remove(args.id, app_paths().models_dir)
    except ModelError as exc:
        return _failed(exc, err, ExitCode.NOT_FOUND)
    kept = " (your file was kept)" if model.source == "imported" else ""
    out.write(f"Removed {model.id}{kept}\n")
    return ExitCode.OK


def run_use(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    reg = registry()
    model = reg.find(args.id_or_path)
    if model is None and not Path(args.id_or_path).expanduser().is_file():
        err.write(f"enclave: No installed model or file called {args.id_or_path!r}.\n")
        return ExitCode.NOT_FOUND
    try:
        if model is None:
            model = import_model(reg, Path(args.id_or_path))
        reg.set_active(model.id, args.role)  # refuses a model of the other role
    except ModelError as exc:
        return _failed(exc, err, ExitCode.MODEL)
    out.write(f"{model.name} is now the {args.role} model.\n")
    return ExitCode.OK


def _failed(exc: ModelError, err: TextIO, code: ExitCode) -> ExitCode:
    """Print why; ``code`` unless the list of installed models was locked by another Enclave (FAILED: try again)."""
    from filelock import Timeout

    err.write(f"enclave: {exc}\n")
    return ExitCode.FAILED if isinstance(exc.__cause__, Timeout) else code
