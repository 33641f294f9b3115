"""Installed models: importing the user's GGUFs safely, the registry file, the CLI, and the token in the keyring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends.fail import Keyring as FailKeyring

from enclave.models import hf_token
from enclave.models.installed import InstalledModel, ModelError, ModelRegistry, import_model


def test_import_validates_and_labels_unverified(gemma_path: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    model = import_model(registry, gemma_path)
    assert model.source == "imported" and not model.verified
    assert model.architecture == "gemma3" and model.role == "chat" and model.quant == "Q4_K_M"
    assert model.path == str(gemma_path.resolve()) and model.size == gemma_path.stat().st_size
    assert import_model(registry, gemma_path) == model  # importing twice does not duplicate


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a model at all" * 10, "not a GGUF"), (b"GGUF" + (3).to_bytes(4, "little") + bytes(2), "too small")],
)
def test_import_refuses_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        import_model(ModelRegistry(tmp_path / "models.json"), bad)


def test_import_refuses_a_truncated_model(gemma_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with gemma_path.open("rb") as handle:
        cut.write_bytes(handle.read(10_000_000))
    with pytest.raises(ModelError, match="incomplete"):
        import_model(ModelRegistry(tmp_path / "models.json"), cut)


def _model(tmp_path: Path, model_id: str, source: str, role: str = "chat") -> InstalledModel:
    file = tmp_path / "models" / f"{model_id}.gguf"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"x")
    return InstalledModel(
        id=model_id,
        name=model_id,
        paths=(str(file),),
        size=1,
        quant="Q4_K_M",
        architecture="qwen3",
        role=role,  # type: ignore[arg-type]
        source=source,
        verified=source == "catalog",
        added_at=1.0,
    )


def test_registry_remembers_and_removes_safely(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    downloaded = registry.add(_model(tmp_path, "r1-8b", "catalog"))
    imported = registry.add(_model(tmp_path, "mine", "imported"))
    registry.set_active("r1-8b")
    with pytest.raises(ModelError, match="cannot be used for embedding"):
        registry.set_active("mine", "embedding")
    reopened = ModelRegistry(tmp_path / "models.json")
    assert [m.id for m in reopened.models()] == ["r1-8b", "mine"] and reopened.active() == downloaded
    reopened.remove("r1-8b", tmp_path / "models")
    assert not Path(downloaded.path).exists()  # Enclave's own download: deleted
    reopened.remove("mine", tmp_path / "models")
    assert Path(imported.path).exists()  # the user's file: only forgotten
    assert reopened.active() is None and reopened.models() == []


def test_damaged_registry_is_kept_aside_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text("{ this is not json")
    registry = ModelRegistry(path)
    assert registry.models() == [] and registry.warning is not None and "damaged" in registry.warning
    backups = list(tmp_path.glob("models.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_text() == "{ this is not json"


def enclave(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENCLAVE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "enclave", *args], capture_output=True, text=True, env=env, timeout=60)


def test_models_cli(gemma_path: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    imported = enclave(home, "models", "import", str(gemma_path), "--json")
    assert imported.returncode == 0, imported.stderr
    model_id = json.loads(imported.stdout)["id"]
    assert enclave(home, "models", "use", model_id).returncode == 0
    listing = json.loads(enclave(home, "models", "list", "--json").stdout)
    assert listing["active"]["chat"] == model_id and listing["models"][0]["verified"] is False
    missing = enclave(home, "models", "import", str(tmp_path / "nope.gguf"))
    assert missing.returncode == 3 and "not found" in missing.stderr
    unknown = enclave(home, "models", "download", "no-such-model")
    assert unknown.returncode == 3 and "not in the catalog" in unknown.stderr
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model\n" * 100)
    assert enclave(home, "models", "import", str(not_gguf)).returncode == 4  # there, but not a usable model
    assert enclave(home, "models", "use", "no-such-model").returncode == 3
    wrong_role = enclave(home, "models", "use", model_id, "--role", "embedding")
    assert wrong_role.returncode == 4 and "cannot be used for embedding" in wrong_role.stderr
    removed = enclave(home, "models", "remove", model_id)
    assert removed.returncode == 0 and "kept" in removed.stdout and gemma_path.exists()


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


@pytest.fixture
def restore_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)


def test_token_lives_only_in_the_keyring(restore_keyring: None, tmp_path: Path) -> None:
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    hf_token.set_token("hf_secret123")
    assert backend.store == {("Enclave", "huggingface"): "hf_secret123"}
    assert hf_token.get_token() == "hf_secret123"
    with pytest.raises(hf_token.TokenStoreError, match="start with 'hf_'"):
        hf_token.set_token("password")
    hf_token.delete_token()
    assert hf_token.get_token() is None


def test_no_keyring_gives_a_clear_message_and_public_downloads_still_work(restore_keyring: None) -> None:
    keyring.set_keyring(FailKeyring())
    assert hf_token.get_token() is None
    with pytest.raises(hf_token.TokenStoreError, match="No system keyring"):
        hf_token.set_token("hf_abc")


def test_per_model_overrides_are_validated_and_kept(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    registry.add(_model(tmp_path, "r1", "catalog"))
    registry.set_overrides("r1", {"context_length": 32768, "gpu_layers": 20, "kv_cache_type": "q4_0"})
    assert ModelRegistry(tmp_path / "models.json").get("r1").overrides == {
        "context_length": 32768,
        "gpu_layers": 20,
        "kv_cache_type": "q4_0",
    }
    for bad in ({"kv_cache_type": "q3"}, {"context_length": 10}, {"gpu_layers": -5}, {"threads": 4}):
        with pytest.raises(ModelError):
            registry.set_overrides("r1", bad)  # type: ignore[arg-type]


def test_two_processes_adding_models_at_once_lose_nothing(tmp_path: Path) -> None:
    """Each process holds its own registry (as the GUI's threads and the CLI do) and adds 40 models; every change is
    made on the newest file under a lock, so all 80 are there afterwards."""
    import subprocess
    import sys
    import textwrap

    registry_file = tmp_path / "models.json"
    code = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from enclave.models.installed import InstalledModel, ModelRegistry
        registry = ModelRegistry(Path(sys.argv[1]))
        for i in range(40):
            registry.add(InstalledModel(
                id=f"{sys.argv[2]}-{i}", name="m", paths=(f"/models/{sys.argv[2]}-{i}.gguf",), size=1, quant="Q4_K_M",
                architecture="llama", role="chat", source="imported", verified=False, added_at=time.time(),
            ))
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(registry_file), name], stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    ids = {m.id for m in ModelRegistry(registry_file).models()}
    assert ids == {f"{name}-{i}" for name in ("a", "b") for i in range(40)}
