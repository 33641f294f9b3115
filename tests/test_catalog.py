"""The shipped catalog loads, keeps its invariants, and rejects broken data."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from enclave.models.catalog import SHARD_RE, CatalogError, load_catalog, parse_catalog


def raw_catalog() -> dict[str, Any]:
    text = resources.files("enclave.models").joinpath("catalog.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def test_loads_and_has_the_expected_entries() -> None:
    catalog = load_catalog()
    ids = {e.id for e in catalog.entries}
    for quant in ("q4_k_m", "q5_k_m", "q6_k", "q8_0"):
        assert f"r1-0528-qwen3-8b-{quant}" in ids
    for slug in ("qwen-1.5b", "qwen-7b", "qwen-14b", "qwen-32b", "llama-8b", "llama-70b"):
        assert f"r1-distill-{slug}-q4_k_m" in ids
    for quant in ("ud-tq1_0", "ud-iq1_s", "ud-iq2_xxs", "ud-q2_k_xl", "q4_k_m"):
        assert f"r1-0528-{quant}" in ids
    assert {e.id for e in catalog.embedding()} == {
        "nomic-embed-text-v1.5",
        "bge-small-en-v1.5",
        "all-minilm-l6-v2",
        "bge-m3",
        "multilingual-e5-base",
    }
    assert load_catalog() is load_catalog()  # parsed once


def test_invariants_hold_for_every_entry() -> None:
    for entry in load_catalog().entries:
        assert entry.files and entry.total_size > 0
        assert all(f.size > 0 for f in entry.files)
        for file in entry.files:
            if file.sha256 is not None:
                assert len(file.sha256) == 64 and set(file.sha256) <= set("0123456789abcdef")
        if entry.revision_pinned:
            assert len(entry.revision) == 40
        else:
            assert entry.revision == "main"
        if entry.is_split:
            count = len(entry.files)
            assert [f.shard for f in entry.files] == [(i, count) for i in range(1, count + 1)]
            assert len({SHARD_RE.sub("", f.path) for f in entry.files}) == 1
        else:
            assert entry.files[0].shard is None
        if entry.role == "chat":
            assert entry.quality_rank is not None and entry.reasoning
        else:
            assert entry.embedding is not None and entry.embedding.dimensions > 0
        if entry.arch.architecture == "deepseek2":
            assert entry.arch.key_length_mla == 192 and entry.arch.head_count_kv == 1  # MLA layout only
            assert entry.is_moe and entry.active_parameters == 37_000_000_000


def test_pinned_facts_from_the_reference() -> None:
    catalog = load_catalog()
    q4 = catalog.get("r1-0528-qwen3-8b-q4_k_m")
    assert q4.revision == "eb48357c179d34dbf515983f798dfb8752a0f261" and q4.revision_pinned
    assert q4.files[0].path == "DeepSeek-R1-0528-Qwen3-8B-Q4_K_M.gguf"
    assert q4.files[0].size == 5_027_785_216 and q4.sizes_exact
    assert q4.files[0].sha256 == "a86349a4180c4e6bb43f874c29c404fa2be3f90b15509bd6d86f697dba724ec1"
    assert q4.files[0].sha256_confirmed
    assert catalog.get("r1-0528-qwen3-8b-q8_0").files[0].size == 8_709_519_872
    assert not catalog.get("r1-0528-qwen3-8b-q6_k").files[0].sha256_confirmed  # single third-party source
    arch = q4.arch
    assert (arch.block_count, arch.head_count_kv, arch.key_length, arch.context_length) == (36, 8, 128, 131072)


def test_full_r1_files() -> None:
    catalog = load_catalog()
    tq1 = catalog.get("r1-0528-ud-tq1_0")
    assert [f.path for f in tq1.files] == ["DeepSeek-R1-0528-UD-TQ1_0.gguf"]
    iq1 = catalog.get("r1-0528-ud-iq1_s")
    assert iq1.files[0].path == "UD-IQ1_S/DeepSeek-R1-0528-UD-IQ1_S-00001-of-00004.gguf"
    assert iq1.files_confirmed and not iq1.sizes_exact
    iq2 = catalog.get("r1-0528-ud-iq2_xxs")
    assert len(iq2.files) == 5 and all(f.sha256 for f in iq2.files)
    assert iq2.files[0].sha256 == "f22d766e3743920db0bc5c4eafb879d54d599fc3917b500616739b4f5352714c"
    q4 = catalog.get("r1-0528-q4_k_m")
    assert len(q4.files) == 9 and q4.files[-1].size == 14_800_000_000
    assert not catalog.get("r1-0528-ud-q2_k_xl").files_confirmed  # shard count is a guess: list the Hub first


def test_lookups() -> None:
    catalog = load_catalog()
    entry = catalog.find_file("unsloth/DeepSeek-R1-0528-GGUF", "UD-IQ1_S/DeepSeek-R1-0528-UD-IQ1_S-00002-of-00004.gguf")
    assert entry is not None and entry.id == "r1-0528-ud-iq1_s"
    assert catalog.find_file_name("DeepSeek-R1-0528-Qwen3-8B-Q8_0.gguf") is catalog.get("r1-0528-qwen3-8b-q8_0")
    assert catalog.find_file("someone/else", "x.gguf") is None
    assert len(catalog.family("deepseek-r1-0528-qwen3-8b")) == 4
    with pytest.raises(KeyError):
        catalog.get("nope")


def _entry(data: dict[str, Any], entry_id: str) -> dict[str, Any]:
    return next(e for e in data["entries"] if e["id"] == entry_id)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: _entry(d, "r1-0528-ud-iq1_s")["files"].reverse(), "numbered"),
        (lambda d: _entry(d, "r1-0528-ud-iq1_s")["files"].pop(), "numbered"),
        (lambda d: _entry(d, "r1-0528-qwen3-8b-q4_k_m")["files"][0].update(sha256="ABC"), "sha256"),
        (lambda d: _entry(d, "r1-0528-qwen3-8b-q4_k_m")["files"][0].update(size=0), "positive"),
        (lambda d: _entry(d, "r1-0528-qwen3-8b-q4_k_m")["files"][0].update(path="../evil.gguf"), "relative"),
        (lambda d: _entry(d, "r1-0528-qwen3-8b-q4_k_m").update(revision="eb48357"), "40-character"),
        (lambda d: _entry(d, "r1-distill-qwen-7b-q4_k_m").update(revision="v1"), "'main'"),
        (lambda d: _entry(d, "r1-distill-qwen-7b-q4_k_m").update(quality_rank=None), "quality_rank"),
        (lambda d: _entry(d, "r1-distill-qwen-7b-q4_k_m").update(arch="nope"), "unknown architecture"),
        (lambda d: _entry(d, "r1-distill-qwen-7b-q4_k_m").update(surprise=1), "malformed"),
        (lambda d: d["entries"].append(copy.deepcopy(d["entries"][0])), "duplicate"),
        (lambda d: d["architectures"]["deepseek2-671b-mla"].pop("key_length_mla"), "MLA"),
        (lambda d: d["architectures"]["qwen3-8b"].update(block_count=0), "positive"),
        (lambda d: d.update(schema=2), "schema"),
    ],
)
def test_rejects_broken_data(mutate: Any, message: str) -> None:
    data = raw_catalog()
    mutate(data)
    with pytest.raises(CatalogError, match=message):
        parse_catalog(data)
