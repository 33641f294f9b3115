"""The tiny random-weight DeepSeek (``deepseek2``) GGUF of tests/fixtures/deepseek2_gguf.py, against the real llama.cpp:
it loads, decodes greedily and deterministically, honours expert tensor overrides, and our header reader and fit
estimate agree with what llama.cpp allocates for it."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enclave.engine.llama_runtime import ModelParamsExtra, ggml_library, open_llama
from enclave.models.fit import FitOptions, Verdict, estimate_fit, facts_from_headers, kv_cache_bytes
from enclave.models.gguf import read_gguf_header
from enclave.models.hardware import Hardware

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import deepseek2_gguf as ds2

MIB = 1 << 20
N_CTX = 256
MOE_BLOCKS = range(ds2.DENSE_LEAD, ds2.BLOCKS)
# llama.cpp's MLA cache keeps one row of kv_lora_rank + rope dims per token and layer (K only, f16); V is a view of it.
MLA_KV_BYTES = ds2.BLOCKS * N_CTX * (ds2.KV_LORA + ds2.ROPE) * 2


@pytest.fixture(scope="module")
def model_path() -> Path:
    return ds2.cached_model_path()


def _llama_log(caplog: pytest.LogCaptureFixture, path: Path, extra: ModelParamsExtra | None = None) -> str:
    """Load ``path`` through the params bridge and return what llama.cpp logged meanwhile."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="enclave.llama_cpp"):
        llm = open_llama(extra, model_path=str(path), n_ctx=N_CTX, n_threads=2, verbose=False)
        llm.close()
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "enclave.llama_cpp")


def _greedy(llm: Any, prompt: bytes, n: int) -> list[int]:
    tokens: list[int] = []
    for token in llm.generate(llm.tokenize(prompt), top_k=1, temp=0.0, reset=True):
        tokens.append(token)
        if len(tokens) == n:
            break
    return tokens


def test_the_writer_is_small_and_deterministic(tmp_path: Path) -> None:
    a = ds2.write_deepseek2_gguf(tmp_path / "a.gguf")
    b = ds2.write_deepseek2_gguf(tmp_path / "b.gguf", seed=0)
    c = ds2.write_deepseek2_gguf(tmp_path / "c.gguf", seed=1)
    assert a.stat().st_size < 1_000_000
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert c.stat().st_size == a.stat().st_size  # only the weights differ


def test_llama_cpp_loads_it_as_deepseek2(model_path: Path) -> None:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=N_CTX, n_threads=2, verbose=False)
    try:
        assert llm.metadata["general.architecture"] == "deepseek2"
        assert llm.metadata["general.name"] == ds2.NAME
        assert llm.metadata["deepseek2.expert_count"] == "8"
        assert llm.metadata["deepseek2.attention.key_length_mla"] == str(ds2.K_MLA)  # MLA on
        assert llama_cpp.llama_model_n_layer(llm.model) == 3
        assert llm.n_vocab() == len(ds2.vocabulary()[0])
        # The SentencePiece vocabulary merges up to the word pieces and falls back to bytes elsewhere.
        pieces = [llm.detokenize([t]) for t in llm.tokenize(b"hello world", add_bos=False)]
        assert pieces == [b" hello", b" world"]
        assert llm.detokenize(llm.tokenize(b"Hi, z!", add_bos=False)) == b" Hi, z!"
    finally:
        llm.close()


def test_greedy_decoding_is_deterministic_across_loads(model_path: Path) -> None:
    import llama_cpp

    runs = []
    for _ in range(2):
        llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=N_CTX, n_threads=2, verbose=False)
        try:
            prompt = llm.tokenize(b"the model is a test")
            llm.eval(prompt)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
            assert np.isfinite(logits).all()
            tokens = _greedy(llm, b"the model is a test", 6)
            assert tokens and tokens[0] == int(np.argmax(logits))  # greedy: the most likely token first
            runs.append(tokens)
        finally:
            llm.close()
    assert runs[0] == runs[1]


def test_routed_experts_follow_a_buffer_type_override(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lib = ggml_library()
    cpu = lib.ggml_backend_dev_by_type(0)
    buft = lib.ggml_backend_dev_buffer_type(cpu)
    log = _llama_log(caplog, model_path, ModelParamsExtra(tensor_overrides=[(r"_exps\.", buft)]))
    overridden = set(re.findall(r"tensor (blk\.\d+\.\w+\.weight) \(.*?\) buffer type overridden to CPU", log))
    expected = {f"blk.{i}.ffn_{kind}_exps.weight" for i in MOE_BLOCKS for kind in ("gate", "up", "down")}
    assert overridden == expected, log[-3000:]


def test_header_reader_and_fit_estimate(model_path: Path) -> None:
    header = read_gguf_header(model_path)
    assert header.architecture == "deepseek2"
    assert header.name == ds2.NAME
    assert (header.block_count, header.embedding_length, header.head_count, header.head_count_kv) == (3, 64, 4, 1)
    assert (header.key_length, header.value_length, header.kv_lora_rank) == (48, 32, 32)
    assert (header.expert_count, header.expert_used_count) == (8, 2)
    assert header.vocab_size == len(ds2.vocabulary()[0])
    assert header.quant_label == "F32"

    facts = facts_from_headers([header])
    assert facts.weights_bytes == header.total_tensor_bytes > 0
    expert_block = 3 * ds2.EMBD * ds2.FF_EXP * ds2.EXPERTS * 4  # gate, up, down; f32
    assert facts.expert_bytes == (0, expert_block, expert_block)
    assert facts.is_moe and facts.expert_read_share == pytest.approx(2 / 8)
    assert 0 < facts.parameters < header.total_tensor_bytes // 4  # active parameters: 2 of 8 routed experts

    cpu_only = estimate_fit(facts, Hardware.from_numbers(ram_gib=16, cpu_cores=2))
    assert cpu_only.verdict is Verdict.CPU_ONLY
    assert cpu_only.context_length == ds2.CONTEXT
    assert cpu_only.breakdown.weights == facts.weights_bytes
    assert cpu_only.tokens_per_second > 0
    gpu = estimate_fit(facts, Hardware.from_numbers(vram_gib=8, ram_gib=16))
    assert gpu.verdict is Verdict.FULL_GPU and gpu.n_gpu_layers == ds2.BLOCKS + 1


def test_llama_cpp_allocates_the_mla_kv_cache_and_the_weights(
    model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = _llama_log(caplog, model_path)
    size = re.search(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers.*?K \(f16\): +([\d.]+) MiB, "
                     r"V \(f16\): +([\d.]+) MiB", log)  # fmt: skip
    assert size, log[-3000:]
    total, cells, layers, k_mib, v_mib = (float(g) for g in size.groups())
    assert (cells, layers) == (N_CTX, ds2.BLOCKS)
    assert k_mib == pytest.approx(MLA_KV_BYTES / MIB, abs=0.005)  # 0.07 MiB: 3 · 256 · 48 · 2 bytes
    assert v_mib == 0.0 and total == k_mib  # MLA: no separate V cache
    weights = re.search(r"CPU_Mapped model buffer size = +([\d.]+) MiB", log)
    assert weights, log[-3000:]
    facts = facts_from_headers([read_gguf_header(model_path)])
    assert float(weights.group(1)) == pytest.approx(facts.weights_bytes / MIB, abs=0.005)
    # fit.py stays on the safe side of what llama.cpp allocates.
    assert kv_cache_bytes(facts, N_CTX, FitOptions()) >= MLA_KV_BYTES


def test_fit_kv_estimate_matches_llama_cpp_for_mla(model_path: Path) -> None:
    facts = facts_from_headers([read_gguf_header(model_path)])
    assert kv_cache_bytes(facts, N_CTX) == MLA_KV_BYTES
