"""Real Gemma files with one header value broken: the check refuses each with the reason, the model manager's import
runs the same check, and the cases checked here against llama.cpp itself really do abort its loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from enclave.engine.gguf_check import check_gguf_file
from enclave.engine.types import ModelLoadError
from enclave.models.installed import ModelError, ModelRegistry, import_model
from engine_host_helpers import patch_header_u32

# (key, value written in place, what the refusal says)
MUTANTS = {
    "no-layers": ("gemma3.block_count", 0, "claims 0 layers"),
    "too-many-layers": ("gemma3.block_count", 600, "claims 600 layers, and llama.cpp runs models with 1 to 512"),
    "no-heads": ("gemma3.attention.head_count", 0, "no attention heads"),
    "more-kv-heads-than-heads": ("gemma3.attention.head_count_kv", 8, "8 key/value heads for 4 attention heads"),
    "kv-heads-not-dividing": ("gemma3.attention.head_count_kv", 3, "3 key/value heads for 4 attention heads"),
    "no-embedding": ("gemma3.embedding_length", 0, "embedding length is 0"),
    "absurd-key-length": ("gemma3.attention.key_length", 1 << 30, "key_length is not a sensible number"),
}


@pytest.fixture(scope="module")
def mutants(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mutants")
    return {
        name: patch_header_u32(gemma_path, folder / f"{name}.gguf", key, value)
        for name, (key, value, _) in MUTANTS.items()
    }


@pytest.mark.parametrize("name", MUTANTS)
def test_the_check_refuses_with_the_reason(mutants: dict[str, Path], name: str) -> None:
    with pytest.raises(ModelLoadError) as refused:
        check_gguf_file(mutants[name])
    message = str(refused.value)
    assert message.startswith(f"{name}.gguf cannot be opened: ")
    assert MUTANTS[name][2] in message
    assert message.endswith("download it again, or choose another model.")


@pytest.mark.parametrize("name", ["too-many-layers", "no-heads"])
def test_import_runs_the_same_check(mutants: dict[str, Path], name: str, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    with pytest.raises(ModelError, match=MUTANTS[name][2]):
        import_model(registry, mutants[name])
    assert registry.models() == []


def test_the_real_files_pass(gemma_path: Path) -> None:
    check_gguf_file(gemma_path)
    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    import minilm_gguf

    check_gguf_file(minilm_gguf.cached_model_path())


@pytest.mark.parametrize("name", ["no-layers", "too-many-layers"])
def test_what_the_check_refuses_aborts_llama_cpp(mutants: dict[str, Path], name: str) -> None:
    """Why the check exists: llama.cpp's loader stops the whole process on these (a child process here)."""
    code = f"import llama_cpp; llama_cpp.Llama(model_path={str(mutants[name])!r}, n_ctx=256, verbose=False)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"GGML_NO_BACKTRACE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode in (-6, 134), (done.returncode, done.stderr[-500:])
