"""Which load to ask the engine for: the user's settings, then the model's own overrides, then explicit arguments.

Everything left unset is Auto and is decided by the engine's load plan (``enclave.models.placement``), so the GUI and
``enclave chat`` ask for the same load for the same model and settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from enclave.engine.types import LoadRequest
from enclave.paths import app_paths
from enclave.settings.settings import Settings, SettingsStore

_OVERRIDE_FIELDS = {"context_length": "n_ctx", "gpu_layers": "n_gpu_layers", "kv_cache_type": "kv_cache_type"}


def model_overrides(path: str | Path, registry_path: Path | None = None) -> dict[str, object]:
    """The per-model settings saved for ``path`` in the installed-model registry (empty if none)."""
    from enclave.models.installed import ModelRegistry

    registry_path = registry_path or app_paths().data / "models.json"
    if not registry_path.exists():
        return {}
    model = ModelRegistry(registry_path).find(str(path))
    return dict(model.overrides) if model is not None else {}


def saved_settings() -> Settings:
    return SettingsStore(app_paths().settings_file).load().settings


def load_request(
    path: str | Path,
    settings: Settings,
    overrides: Mapping[str, object] | None = None,
    **explicit: object,
) -> LoadRequest:
    """Settings < per-model overrides < ``explicit`` (LoadRequest fields, e.g. command-line flags; None = unset)."""
    fields: dict[str, object] = {
        "n_ctx": settings.context_length,
        "n_gpu_layers": settings.gpu_layers,
        "kv_cache_type": settings.kv_cache_type,
        "n_threads": settings.threads,
        "devices": (settings.device,) if settings.device else (),
    }
    for key, field in _OVERRIDE_FIELDS.items():
        if overrides and overrides.get(key) is not None:
            fields[field] = overrides[key]
    fields.update({k: v for k, v in explicit.items() if v is not None})
    return LoadRequest(path=str(path), **fields)  # type: ignore[arg-type]
