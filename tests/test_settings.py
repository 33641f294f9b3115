"""Settings: validation, JSON round trip, atomic save and recovery from damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.settings.settings import (
    LoadedSettings,
    Settings,
    SettingsError,
    SettingsStore,
    replace,
    settings_from_dict,
    settings_to_dict,
    validate,
)

CUSTOM = Settings(
    model_path="/models/DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf",
    context_length=8192,
    gpu_layers=20,
    threads=6,
    temperature=0.6,
    top_p=0.95,
    max_tokens=2048,
    think_budget=1024,
    default_system_prompt="Réponds en français.",
    appearance="dark",
    window_geometry="AdnQywADAAAAAAAA",
)


@pytest.fixture
def settings_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "settings.json"


def _backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def test_defaults() -> None:
    s = Settings()
    assert s.model_path is None
    assert (s.context_length, s.gpu_layers, s.kv_cache_type, s.threads) == (None, None, None, None)  # all Auto
    assert (s.temperature, s.top_p, s.max_tokens, s.think_budget) == (None, None, 0, 0)
    assert (s.default_system_prompt, s.window_geometry) == ("", "")
    assert validate(s) == s


def test_missing_file_gives_defaults_without_warning(settings_path: Path) -> None:
    assert SettingsStore(settings_path).load() == LoadedSettings(Settings(), None)
    assert not settings_path.parent.exists()  # loading never creates anything


def test_save_and_load_round_trip(settings_path: Path) -> None:
    store = SettingsStore(settings_path)
    store.save(CUSTOM)
    on_disk = json.loads(settings_path.read_text(encoding="utf-8"))
    assert on_disk["version"] == 2
    assert on_disk["default_system_prompt"] == "Réponds en français."
    assert store.load() == LoadedSettings(CUSTOM, None)

    store.save(replace(CUSTOM, temperature=None, threads=None))  # None round-trips as null
    assert store.load().settings == replace(CUSTOM, temperature=None, threads=None)


def test_version_1_defaults_become_auto_and_choices_stay(settings_path: Path) -> None:
    # Version 1 wrote its fixed defaults (4,096 tokens, all layers) as if chosen; they now mean Auto.
    settings_path.parent.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps({"version": 1, "context_length": 4096, "gpu_layers": -1, "threads": 3}))
    loaded = SettingsStore(settings_path).load().settings
    assert (loaded.context_length, loaded.gpu_layers, loaded.threads) == (None, None, 3)
    settings_path.write_text(json.dumps({"version": 1, "context_length": 8192, "gpu_layers": 20}))
    loaded = SettingsStore(settings_path).load().settings
    assert (loaded.context_length, loaded.gpu_layers) == (8192, 20)  # real choices are kept
    settings_path.write_text(json.dumps({"version": 2, "context_length": 4096, "gpu_layers": -1}))
    loaded = SettingsStore(settings_path).load().settings
    assert (loaded.context_length, loaded.gpu_layers) == (4096, -1)  # chosen under version 2: the user's


def test_kv_cache_type_is_checked() -> None:
    with pytest.raises(SettingsError, match="kv_cache_type"):
        validate(replace(Settings(), kv_cache_type="q2_k"))
    assert validate(replace(Settings(), kv_cache_type="q8_0")).kv_cache_type == "q8_0"


def test_dict_round_trip_ignores_unknown_keys_and_fills_defaults() -> None:
    assert settings_from_dict(settings_to_dict(CUSTOM)) == CUSTOM
    loaded = settings_from_dict({"context_length": 2048, "version": 7, "from_the_future": [1, 2]})
    assert loaded == Settings(context_length=2048)


def test_integers_are_accepted_for_float_fields() -> None:
    loaded = settings_from_dict({"temperature": 1, "top_p": 1})
    assert loaded.temperature == 1.0
    assert isinstance(loaded.temperature, float)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("context_length", 511, "context_length must be between 512 and 1048576"),
        ("context_length", 1_048_577, "context_length must be between 512 and 1048576"),
        ("gpu_layers", -2, "gpu_layers must be -1"),
        ("threads", 0, "threads must be between 1 and 1024"),
        ("temperature", -0.1, "temperature must be between 0.0 and 2.0"),
        ("temperature", 2.5, "temperature must be between 0.0 and 2.0"),
        ("temperature", float("nan"), "temperature must be between 0.0 and 2.0"),
        ("top_p", 1.01, "top_p must be between 0.0 and 1.0"),
        ("top_p", -0.5, "top_p must be between 0.0 and 1.0"),
        ("max_tokens", -1, "max_tokens must be between 0 and"),
        ("think_budget", -5, "think_budget must be between 0 and"),
        ("appearance", "sepia", "appearance must be one of system, light, dark"),
    ],
)
def test_validate_rejects_out_of_range(field: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        validate(replace(Settings(), **{field: value}))
    with pytest.raises(SettingsError, match=message):
        settings_from_dict({field: value})


def test_validate_accepts_range_edges() -> None:
    edges = Settings(context_length=512, gpu_layers=0, threads=1, temperature=0.0, top_p=1.0, think_budget=1)
    assert validate(edges) == edges
    assert validate(replace(edges, context_length=1_048_576, temperature=2.0, top_p=0.0)).temperature == 2.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("context_length", "4096"),
        ("context_length", 4096.0),
        ("context_length", True),  # bool is an int subclass but never a valid count
        ("gpu_layers", "all"),
        ("kv_cache_type", 8),
        ("threads", "auto"),
        ("temperature", "0.6"),
        ("model_path", 42),
        ("default_system_prompt", None),
        ("window_geometry", ["not", "text"]),
    ],
)
def test_wrong_types_are_rejected(field: str, value: object) -> None:
    with pytest.raises(SettingsError, match=field):
        settings_from_dict({field: value})
    with pytest.raises(SettingsError, match=field):
        validate(replace(Settings(), **{field: value}))


def test_empty_model_path_means_none() -> None:
    assert validate(Settings(model_path="")).model_path is None


def test_hand_edited_file_with_bom_loads(settings_path: Path) -> None:
    settings_path.parent.mkdir(parents=True)
    settings_path.write_bytes(b'\xef\xbb\xbf{"threads": 4}')
    assert SettingsStore(settings_path).load() == LoadedSettings(Settings(threads=4), None)


def test_save_refuses_invalid_settings_and_keeps_the_old_file(settings_path: Path) -> None:
    store = SettingsStore(settings_path)
    store.save(CUSTOM)
    before = settings_path.read_bytes()
    with pytest.raises(SettingsError):
        store.save(replace(CUSTOM, top_p=3.0))
    assert settings_path.read_bytes() == before


def test_save_leaves_no_temp_files(settings_path: Path) -> None:
    store = SettingsStore(settings_path)
    for i in range(5):
        store.save(replace(CUSTOM, max_tokens=i))
    assert [p.name for p in settings_path.parent.iterdir()] == ["settings.json"]
    assert store.load().settings.max_tokens == 4


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"context_length": 4096,', "invalid JSON"),
        (b"\xff\xfe garbage \x00", "not UTF-8"),
        (b"[1, 2, 3]", "JSON object"),
        (b'{"context_length": "big"}', "context_length must be a whole number"),
        (b'{"temperature": 9.5}', "temperature must be between 0.0 and 2.0"),
    ],
)
def test_damaged_file_is_backed_up_and_replaced_by_defaults(settings_path: Path, content: bytes, reason: str) -> None:
    settings_path.parent.mkdir(parents=True)
    settings_path.write_bytes(content)

    loaded = SettingsStore(settings_path).load()

    assert loaded.settings == Settings()
    (backup,) = _backups(settings_path)
    assert backup.read_bytes() == content
    assert not settings_path.exists()
    assert loaded.warning is not None
    assert loaded.warning.startswith("Your settings file was damaged (")
    assert reason in loaded.warning
    assert "Enclave started with default settings" in loaded.warning
    assert f"the old file was kept as {backup.name}." in loaded.warning


def test_repeated_damage_keeps_every_backup(settings_path: Path) -> None:
    store = SettingsStore(settings_path)
    settings_path.parent.mkdir(parents=True)
    for content in (b"{broken 1", b"{broken 2"):
        settings_path.write_bytes(content)
        assert store.load().warning is not None
    assert sorted(p.read_bytes() for p in _backups(settings_path)) == [b"{broken 1", b"{broken 2"]

    store.save(CUSTOM)  # and saving afterwards works normally
    assert store.load() == LoadedSettings(CUSTOM, None)


def test_unreadable_path_warns_instead_of_crashing(settings_path: Path) -> None:
    settings_path.mkdir(parents=True)  # a folder where the file should be
    loaded = SettingsStore(settings_path).load()
    assert loaded.settings == Settings()
    assert loaded.warning is not None
    assert "could not be read" in loaded.warning
