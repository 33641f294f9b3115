"""User settings: one frozen dataclass, validated, stored as JSON and written atomically.

A damaged settings file must never stop Enclave from starting: ``SettingsStore.load`` keeps the bad file as a
backup, falls back to defaults and returns a sentence the UI can show. Change settings with
``dataclasses.replace(settings, field=value)`` (re-exported here as ``replace``), then ``SettingsStore.save``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from enclave.fsutil import atomic_write_bytes, quarantine, quarantine_name

__all__ = [
    "SETTINGS_VERSION",
    "LoadedSettings",
    "Settings",
    "SettingsError",
    "SettingsStore",
    "replace",
    "settings_from_dict",
    "settings_to_dict",
    "validate",
]

SETTINGS_VERSION = 2
# Version 1 stored the old fixed defaults (4,096-token context, "all" GPU layers) as if the user had chosen them;
# from version 2 those mean Auto (the load plan decides), so a version-1 file's defaults are read as Auto.
_V1_DEFAULTS = {"context_length": 4096, "gpu_layers": -1}
KV_CACHE_CHOICES = ("f16", "q8_0", "q4_0")
APPEARANCE_CHOICES = ("system", "light", "dark")

CONTEXT_LENGTH_RANGE = (512, 1_048_576)
THREADS_RANGE = (1, 1024)
DEVICE_NAME_MAX = 64
TOKEN_LIMIT_MAX = 1_048_576  # max_tokens and think_budget: no use beyond the largest context
TEMPERATURE_RANGE = (0.0, 2.0)
TOP_P_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class Settings:
    model_path: str | None = None
    context_length: int | None = None  # None = Auto (the load plan's choice); else 512..1_048_576
    gpu_layers: int | None = None  # None = Auto (what fits); -1 = every layer, 0 = CPU only, N = that many layers
    kv_cache_type: str | None = None  # None = Auto; "f16", "q8_0" or "q4_0"
    threads: int | None = None  # None = automatic
    device: str | None = None  # "Run on": None = Auto, "CPU" = CPU only, else a llama.cpp device name ("Vulkan0")
    temperature: float | None = None  # None = the model's recommended default; else 0.0..2.0
    top_p: float | None = None  # None = the model's default; else 0.0..1.0
    max_tokens: int = 0  # 0 = no limit
    think_budget: int = 0  # 0 = off (unlimited thinking); else max thinking tokens per message
    default_system_prompt: str = ""
    window_geometry: str = ""  # base64 Qt geometry, opaque here
    # The local API server (enclave.server): off unless the user switches it on; other addresses need the key.
    api_server_enabled: bool = False
    api_server_host: str = "127.0.0.1"
    api_server_port: int = 11435
    api_server_key: str = ""
    appearance: str = "system"  # "system" (follow the desktop), "light" or "dark"


class SettingsError(ValueError):
    """A setting has the wrong type or is out of range; the message names the field and what is allowed."""


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    warning: str | None  # a sentence for the user when the file had to be replaced by defaults


# Field name -> (accepted types, whether None is allowed). bool is rejected separately: it is an int subclass.
_FIELD_TYPES: dict[str, tuple[type, bool]] = {
    "model_path": (str, True),
    "context_length": (int, True),
    "gpu_layers": (int, True),
    "kv_cache_type": (str, True),
    "threads": (int, True),
    "device": (str, True),
    "temperature": (float, True),
    "top_p": (float, True),
    "max_tokens": (int, False),
    "think_budget": (int, False),
    "default_system_prompt": (str, False),
    "window_geometry": (str, False),
    "api_server_enabled": (bool, False),
    "api_server_host": (str, False),
    "api_server_port": (int, False),
    "api_server_key": (str, False),
    "appearance": (str, False),
}
assert set(_FIELD_TYPES) == {f.name for f in fields(Settings)}

_TYPE_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


def _check_type(name: str, value: object) -> Any:
    """Return ``value`` (ints widened to float for float fields) or raise SettingsError. Any: checked at runtime."""
    expected, nullable = _FIELD_TYPES[name]
    if value is None:
        if nullable:
            return None
    elif isinstance(value, bool):
        if expected is bool:
            return value
    elif isinstance(value, expected):
        return value
    elif expected is float and isinstance(value, int):
        return float(value)
    allowed = _TYPE_NAMES[expected] + (" or null" if nullable else "")
    raise SettingsError(f"{name} must be {allowed}, not {type(value).__name__} ({value!r:.40})")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    # Written so NaN fails too (every comparison with NaN is false).
    if not (low <= value <= high) or math.isnan(value):
        raise SettingsError(f"{name} must be between {low} and {high}, not {value}")


def validate(settings: Settings) -> Settings:
    """Check every field's type and range; returns the settings normalised (ints → floats, "" model path → None)."""
    checked = replace(settings, **{f.name: _check_type(f.name, getattr(settings, f.name)) for f in fields(Settings)})
    if checked.model_path == "":
        checked = replace(checked, model_path=None)
    if checked.context_length is not None:
        _check_range("context_length", checked.context_length, *CONTEXT_LENGTH_RANGE)
    if checked.kv_cache_type is not None and checked.kv_cache_type not in KV_CACHE_CHOICES:
        raise SettingsError(f"kv_cache_type must be one of {', '.join(KV_CACHE_CHOICES)} or null")
    if checked.gpu_layers is not None and checked.gpu_layers < -1:
        raise SettingsError(
            f"gpu_layers must be -1 (all layers), 0 (CPU only) or a positive number of layers, not {checked.gpu_layers}"
        )
    if checked.threads is not None:
        _check_range("threads", checked.threads, *THREADS_RANGE)
    if checked.device == "":
        checked = replace(checked, device=None)
    if checked.device is not None and (len(checked.device) > DEVICE_NAME_MAX or not checked.device.isprintable()):
        raise SettingsError(
            f"device must be a device name such as CPU or Vulkan0 (at most {DEVICE_NAME_MAX} characters), or null"
        )
    if checked.temperature is not None:
        _check_range("temperature", checked.temperature, *TEMPERATURE_RANGE)
    if checked.top_p is not None:
        _check_range("top_p", checked.top_p, *TOP_P_RANGE)
    if checked.appearance not in APPEARANCE_CHOICES:
        raise SettingsError(
            f"appearance must be one of {', '.join(APPEARANCE_CHOICES)}, not {checked.appearance!r:.40}"
        )
    _check_range("max_tokens", checked.max_tokens, 0, TOKEN_LIMIT_MAX)
    _check_range("think_budget", checked.think_budget, 0, TOKEN_LIMIT_MAX)
    _check_range("api_server_port", checked.api_server_port, 1, 65535)
    if not checked.api_server_host.strip():
        raise SettingsError("api_server_host must not be empty (127.0.0.1 serves this computer only)")
    return checked


def settings_from_dict(data: Mapping[str, object]) -> Settings:
    """Build validated settings; missing keys take defaults and unknown keys are ignored (files from newer versions)."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"settings must be a JSON object, not {type(data).__name__}")
    known = {f.name for f in fields(Settings)}
    values = {name: _check_type(name, value) for name, value in data.items() if name in known}
    return validate(replace(Settings(), **values))


def settings_to_dict(settings: Settings) -> dict[str, object]:
    return asdict(settings)


class SettingsStore:
    """Loads and saves ``Settings`` at one path (usually ``AppPaths.settings_file``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> LoadedSettings:
        """Never raises for bad content: a damaged file is kept as ``<name>.corrupt-<timestamp>``, defaults are used."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LoadedSettings(Settings(), None)
        except OSError as exc:
            # Unreadable (permissions, a folder in the way): nothing we can back up, so leave it where it is.
            return LoadedSettings(
                Settings(),
                f"Your settings file could not be read ({exc.strerror or exc}). Enclave started with default settings.",
            )
        try:
            data = json.loads(raw.decode("utf-8-sig"))  # -sig: tolerate a BOM from Windows editors
            if not isinstance(data, dict):
                raise SettingsError(f"expected a JSON object, found {type(data).__name__}")
            if data.get("version", 1) == 1:
                data = {k: v for k, v in data.items() if not (k in _V1_DEFAULTS and v == _V1_DEFAULTS[k])}
            return LoadedSettings(settings_from_dict(data), None)
        except UnicodeDecodeError:
            reason = "it is not UTF-8 text"
        except json.JSONDecodeError as exc:
            reason = f"invalid JSON at line {exc.lineno}, column {exc.colno}"
        except SettingsError as exc:
            reason = str(exc)
        except (ValueError, RecursionError) as exc:  # e.g. absurdly long numbers or nesting
            reason = f"unreadable content: {type(exc).__name__}"
        return LoadedSettings(Settings(), self._back_up_damaged(raw, reason))

    def _back_up_damaged(self, raw: bytes, reason: str) -> str:
        """Move the bad file aside (falling back to a copy of the bytes) and return the warning for the user."""
        try:
            backup = quarantine(self.path)
        except OSError:
            backup = quarantine_name(self.path)
            try:
                with open(backup, "xb") as handle:
                    handle.write(raw)
            except OSError:
                return (
                    f"Your settings file was damaged ({reason}). Enclave started with default settings; the old file "
                    "could not be backed up and will be overwritten when settings are saved."
                )
        return (
            f"Your settings file was damaged ({reason}). Enclave started with default settings; "
            f"the old file was kept as {backup.name}."
        )

    def save(self, settings: Settings) -> None:
        """Validate, then write ``{"version": 1, ...fields}`` atomically. Raises SettingsError or OSError."""
        settings = validate(settings)
        document: dict[str, object] = {"version": SETTINGS_VERSION, **settings_to_dict(settings)}
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, text.encode("utf-8"))
