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

    registry_path = registry_path or app_paths().models_file
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


class LoadGuard:
    """Keeps a model that crashed while loading from being opened again by itself at every start (a crash loop).

    ``begin(path)`` writes a small marker before a load; ``succeeded()`` and ``failed(crashed=False)`` remove it; a
    load that crashed the engine (``failed(crashed=True)``), or one that never ended because the whole app went
    down, leaves it. At the next start, ``blocked(path)`` says why that model is not opened automatically; opening
    it by hand tries again (and a success clears the marker).
    """

    def __init__(self, marker: Path | None = None) -> None:
        self.marker = marker or app_paths().load_marker

    def begin(self, path: str | Path) -> None:
        self._write({"path": str(path), "state": "loading"})

    def succeeded(self) -> None:
        self.marker.unlink(missing_ok=True)

    def failed(self, *, crashed: bool, message: str = "") -> None:
        if not crashed:
            self.marker.unlink(missing_ok=True)
            return
        current = self._read()
        if current is not None:
            self._write({**current, "state": "crashed", "message": message})

    def blocked(self, path: str | Path) -> str | None:
        """Why ``path`` should not be opened automatically now, or None."""
        current = self._read()
        if current is None or current.get("path") != str(path):
            return None
        name = Path(str(path)).name
        detail = current.get("message") or ""
        if current.get("state") == "crashed":
            return (
                f"{name} was not opened automatically: last time it stopped the engine while loading. {detail} "
                "Open it again to retry, or choose another model."
            ).replace("  ", " ")
        return (
            f"{name} was not opened automatically: Enclave closed unexpectedly while it was loading last time. Open "
            "it again to retry, or choose another model."
        )

    def _read(self) -> dict[str, str] | None:
        import json

        try:
            data = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None

    def _write(self, data: dict[str, str]) -> None:
        import json

        from enclave.fsutil import atomic_write_text

        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.marker, json.dumps(data))
        except OSError:
            pass  # the guard is a safety net; a read-only profile must not stop the load
