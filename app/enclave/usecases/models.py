"""The installed-model list's verbs the window and the Models dialog share: plain functions, no Qt, run on their
worker threads (``workers.tasks``) because each reads or writes ``models.json`` and may read a GGUF header.

Each returns the registry as it is afterwards, so the caller shows what is on disk now. The model manager is
imported when a verb first runs (on a worker thread), not by the window's start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enclave.models.installed import InstalledModel, ModelRegistry


def read_registry(registry_path: Path) -> ModelRegistry:
    """The installed-model list as it is on disk now (its folder is created if missing)."""
    from enclave.models.installed import ModelRegistry

    registry_path.parent.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(registry_path)


def import_file(registry_path: Path, path: Path) -> tuple[ModelRegistry, InstalledModel]:
    """Check a GGUF file and list it as an imported model; the list afterwards, and the model. Raises ModelError."""
    from enclave.models.installed import import_model

    registry = read_registry(registry_path)
    return registry, import_model(registry, path)


def remove_model(registry_path: Path, model_id: str, models_dir: Path) -> ModelRegistry:
    """Remove a model (a download's files are deleted, an imported file is kept); the list afterwards."""
    registry = read_registry(registry_path)
    registry.remove(model_id, models_dir)
    return registry


def activate_first_embedder(registry_path: Path, model_id: str, replace_current: bool) -> tuple[ModelRegistry, bool]:
    """Make a downloaded embedding model the active one when there is none (or ``replace_current``); whether it was."""
    registry = read_registry(registry_path)
    if replace_current or registry.active("embedding") is None:
        registry.set_active(model_id, "embedding")
        return registry, True
    return registry, False


def choose_embedder(registry_path: Path, model_id: str | None) -> tuple[ModelRegistry, str | None]:
    """Make ``model_id`` the active embedding model (None: none); the list afterwards, and the model's path."""
    registry = read_registry(registry_path)
    if model_id is None:
        registry.clear_active("embedding")
        return registry, None
    registry.set_active(model_id, "embedding")
    return registry, registry.get(model_id).path


__all__ = ["activate_first_embedder", "choose_embedder", "import_file", "read_registry", "remove_model"]
