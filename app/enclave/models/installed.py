"""The models on this computer: downloaded from the catalog (verified) or imported from the user's files (unverified).

Kept as a small JSON file beside the chats, written atomically; a damaged file is set aside with a warning, never a
crash. Which model is active for chat and for document embeddings is recorded here too.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from enclave.fsutil import atomic_write_text, quarantine
from enclave.models.catalog import CatalogEntry
from enclave.models.downloader import DownloadControl, ProgressCallback, download_files, final_path
from enclave.models.gguf import GGUFError, read_gguf_header
from enclave.models.hub_client import RemoteFile, fetch_snapshot

Role = Literal["chat", "embedding"]
SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 10.0


class ModelError(Exception):
    """A model could not be imported, found or removed; the message says why."""


@dataclass(frozen=True)
class InstalledModel:
    id: str
    name: str
    paths: tuple[str, ...]  # every shard, first one first
    size: int
    quant: str
    architecture: str
    role: Role
    source: str  # "catalog" or "imported"
    verified: bool  # sha256 checked against the Hub's; imported files are not
    added_at: float
    catalog_id: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    # Per-model settings that win over the global ones: context_length, gpu_layers, kv_cache_type.
    overrides: dict[str, int | str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.paths[0]


class ModelRegistry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.warning: str | None = None
        self._models: dict[str, InstalledModel] = {}
        self._active: dict[str, str] = {}
        self._load()

    # --- persistence ------------------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            models = [InstalledModel(**{**m, "paths": tuple(m["paths"])}) for m in data.get("models", [])]
            self._models = {m.id: m for m in models}
            self._active = {str(k): str(v) for k, v in data.get("active", {}).items() if v in self._models}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            backup = quarantine(self.path)
            self._models, self._active = {}, {}
            self.warning = (
                f"The list of installed models was damaged ({exc}); it was kept as {backup.name} and started empty. "
                "Your model files were not touched: import them again."
            )

    @contextlib.contextmanager
    def _change(self) -> Iterator[None]:
        """Every change is made under a file lock, on the newest state on disk, and written back atomically: the GUI's
        threads, the CLI and a second app may each hold a registry, and none loses another's update."""
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(f"{self.path}.lock", timeout=LOCK_TIMEOUT_S):
                self._load()
                yield
                self._save()
        except Timeout as exc:
            raise ModelError(
                f"The list of installed models ({self.path}) is locked by another Enclave process. Try again."
            ) from exc

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": SCHEMA_VERSION,
            "models": [asdict(m) for m in self._models.values()],
            "active": self._active,
        }
        atomic_write_text(self.path, json.dumps(data, indent=2))

    # --- queries ----------------------------------------------------------------------------------------------

    def models(self, role: Role | None = None) -> list[InstalledModel]:
        return sorted((m for m in self._models.values() if role is None or m.role == role), key=lambda m: m.added_at)

    def get(self, model_id: str) -> InstalledModel:
        try:
            return self._models[model_id]
        except KeyError:
            raise ModelError(f"No installed model is called {model_id!r}. See `enclave models list`.") from None

    def find(self, id_or_path: str) -> InstalledModel | None:
        if id_or_path in self._models:
            return self._models[id_or_path]
        resolved = str(Path(id_or_path).expanduser().resolve())
        return next((m for m in self._models.values() if m.path == resolved), None)

    def active(self, role: Role = "chat") -> InstalledModel | None:
        model_id = self._active.get(role)
        return self._models.get(model_id) if model_id else None

    # --- changes ----------------------------------------------------------------------------------------------

    def add(self, model: InstalledModel) -> InstalledModel:
        with self._change():
            self._models[model.id] = model
        return model

    def set_overrides(self, model_id: str, overrides: dict[str, int | str]) -> InstalledModel:
        from enclave.engine.types import KV_CACHE_TYPES

        allowed = {"context_length", "gpu_layers", "kv_cache_type"}
        unknown = set(overrides) - allowed
        if unknown:
            raise ModelError(f"Unknown model settings: {', '.join(sorted(unknown))}.")
        if "kv_cache_type" in overrides and overrides["kv_cache_type"] not in KV_CACHE_TYPES:
            raise ModelError(f"The KV cache type must be one of {', '.join(KV_CACHE_TYPES)}.")
        context = overrides.get("context_length")
        if context is not None and (not isinstance(context, int) or not 256 <= context <= 1 << 20):
            raise ModelError("The context length must be between 256 and 1,048,576 tokens.")
        layers = overrides.get("gpu_layers")
        if layers is not None and (not isinstance(layers, int) or layers < -1):
            raise ModelError("GPU layers must be -1 (all) or more.")
        with self._change():
            model = replace(self.get(model_id), overrides=dict(overrides))
            self._models[model_id] = model
        return model

    def set_active(self, model_id: str, role: Role = "chat") -> InstalledModel:
        with self._change():
            model = self.get(model_id)
            if model.role != role:
                raise ModelError(f"{model.name} is a {model.role} model; it cannot be used for {role}.")
            self._active[role] = model_id
        return model

    def clear_active(self, role: Role) -> None:
        """No model for ``role`` (for embeddings: document search falls back to keywords only)."""
        with self._change():
            self._active.pop(role, None)

    def remove(self, model_id: str, models_dir: Path) -> InstalledModel:
        """Forget a model; delete its files only when Enclave downloaded them (inside ``models_dir``)."""
        with self._change():
            model = self.get(model_id)
            root = models_dir.resolve()
            for path in model.paths:
                file = Path(path)
                if model.source == "catalog" and file.resolve().is_relative_to(root):
                    file.unlink(missing_ok=True)
            del self._models[model_id]
            self._active = {role: mid for role, mid in self._active.items() if mid != model_id}
        return model


def _role_of(architecture: str, pooling: object) -> Role:
    return "embedding" if architecture in {"bert", "nomic-bert", "jina-bert-v2"} or pooling is not None else "chat"


def import_model(registry: ModelRegistry, path: Path) -> InstalledModel:
    """Register a GGUF the user already has, in place (no copy), after validating its header and shards."""
    from enclave.engine.gguf_check import check_gguf_file
    from enclave.engine.types import ModelLoadError

    path = path.expanduser().resolve()
    try:
        check_gguf_file(path)  # magic, version, counts against the file size, every shard present
        header = read_gguf_header(path)
    except (ModelLoadError, GGUFError) as exc:
        raise ModelError(str(exc)) from exc
    existing = registry.find(str(path))
    if existing is not None:
        return existing
    paths = [path]
    if header.is_split:
        from enclave.models.gguf import shard_paths

        paths = shard_paths(path, header.split_count) or [path]
    architecture = header.architecture or "unknown"
    pooling = header.metadata.get(f"{architecture}.pooling_type")
    model = InstalledModel(
        id=_unique_id(registry, path.stem),
        name=header.name or path.stem,
        paths=tuple(str(p) for p in paths),
        size=sum(p.stat().st_size for p in paths),
        quant=header.quant_label or "?",
        architecture=architecture,
        role=_role_of(architecture, pooling),
        source="imported",
        verified=False,
        added_at=time.time(),
    )
    return registry.add(model)


def _unique_id(registry: ModelRegistry, base: str) -> str:
    candidate, n = base, 2
    while registry.find(candidate) is not None:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def download_entry(
    registry: ModelRegistry,
    entry: CatalogEntry,
    models_dir: Path,
    *,
    token: str | None = None,
    control: DownloadControl | None = None,
    on_progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
) -> InstalledModel:
    """Download every file of a catalog entry at its pinned revision; register it once all are verified."""
    snapshot = fetch_snapshot(entry.repo_id, entry.revision, token=token)
    files: list[RemoteFile] = []
    for catalog_file in entry.files:
        remote = snapshot.file(catalog_file.path)
        sha = remote.sha256 or catalog_file.sha256  # the Hub's LFS oid wins: repositories get re-uploaded
        if log is not None and catalog_file.sha256 and remote.sha256 and catalog_file.sha256 != remote.sha256:
            log(f"note: the Hub's sha256 for {catalog_file.path} differs from the catalog's; using the Hub's")
        files.append(replace(remote, sha256=sha))
    paths = download_files(
        entry.repo_id, snapshot.commit, files, models_dir, token=token, control=control, on_progress=on_progress
    )
    model = InstalledModel(
        id=entry.id,
        name=entry.display_name,
        paths=tuple(str(p) for p in paths),
        size=sum(f.size for f in files),
        quant=entry.quant,
        architecture=entry.arch.architecture,
        role=entry.role,
        source="catalog",
        verified=all(f.sha256 for f in files),
        added_at=time.time(),
        catalog_id=entry.id,
        repo_id=entry.repo_id,
        revision=snapshot.commit,
    )
    registry.add(model)
    if registry.active(entry.role) is None:
        registry.set_active(model.id, entry.role)
    return model


__all__ = ["InstalledModel", "ModelError", "ModelRegistry", "download_entry", "final_path", "import_model"]
