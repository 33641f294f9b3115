"""Chunking, embeddings (checked against a numpy BERT), the SQLite index and hybrid search, end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from enclave.docs.chunking import chunk_pages
from enclave.docs.embedder import Embedder
from enclave.docs.index import DocumentIndex
from enclave.docs.ingest import ingest
from enclave.docs.parsers import Page

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "pdf-samples"

TOPICS = {
    "volcanoes.md": "# Volcanoes\n\nMagma rises through the crust and erupts as lava. Mount Etna in Sicily is one of "
    "the most active volcanoes in Europe; its eruptions are monitored by seismographs.\n",
    "bread.md": "# Baking bread\n\nMix flour, water, salt and yeast. Knead the dough for ten minutes, let it rise "
    "for two hours, then bake at 230 degrees until the crust is brown.\n",
    "taxes.md": "# Filing taxes\n\nThe annual income tax return is due on the fifteenth of April. Keep receipts for "
    "deductible expenses such as charitable donations and home office costs.\n",
    "rust.md": "# Rust ownership\n\nEach value in Rust has a single owner. When the owner goes out of scope the "
    "value is dropped; borrowing lets code use a value without taking ownership.\n",
}
QUESTIONS = [
    ("When is the income tax return due?", "taxes.md"),
    ("Which European volcano is very active?", "volcanoes.md"),
    ("How long should dough rise?", "bread.md"),
    ("What happens to a value when its owner leaves scope?", "rust.md"),
    ("lava eruption monitoring", "volcanoes.md"),
    ("temperature to bake loaf", "bread.md"),
]


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    cache = Path(os.environ.get("ENCLAVE_TEST_MODEL_CACHE", Path.home() / ".cache" / "enclave-tests"))
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "all-minilm-l6-v2-f16.gguf"
    if not target.exists():
        partial = target.with_suffix(".tmp")
        minilm_gguf.convert(partial)
        partial.replace(target)
    return target


@pytest.fixture(scope="module")
def embedder(minilm_path: Path) -> Iterator[Embedder]:
    model = Embedder(minilm_path, n_threads=2)
    yield model
    model.close()


def reference_embedding(text_ids: list[int]) -> np.ndarray:
    """all-MiniLM-L6-v2's forward pass in numpy (float32), mean pooling, normalised."""
    from safetensors.numpy import load_file

    w = {
        k.removeprefix("bert."): v.astype(np.float32)
        for k, v in load_file(str(minilm_gguf.model_dir() / "model.safetensors")).items()
    }

    def norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def gelu(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))

    ids = np.array(text_ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    heads, size = 12, 32
    for layer in range(6):
        p = f"encoder.layer.{layer}."

        def lin(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            lin(x, f"attention.self.{n}").reshape(-1, heads, size).transpose(1, 0, 2) for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = (scores / scores.sum(-1, keepdims=True)) @ v
        x = norm(
            x + lin(attention.transpose(1, 0, 2).reshape(len(ids), -1), "attention.output.dense"),
            p + "attention.output.LayerNorm",
        )
        x = norm(x + lin(gelu(lin(x, "intermediate.dense")), "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_gguf_embeddings_match_a_numpy_reference(embedder: Embedder) -> None:
    for text in ("The quick brown fox jumps over the lazy dog.", "Enclave keeps your documents private."):
        ids = embedder._llm.tokenize(text.encode(), add_bos=True, special=False)
        assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
        ours = embedder.embed_documents([text])[0]
        assert float(ours @ reference_embedding(ids)) > 0.999


def test_chunks_respect_the_budget_and_keep_offsets(embedder: Embedder) -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(300))
    page = Page(3, text)
    chunks = chunk_pages([page], embedder.count_tokens, budget=60, overlap=15)
    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.page == 3
        assert text[chunk.start : chunk.end].strip() == chunk.text
        assert embedder.count_tokens(chunk.text) <= 60 + 4
    assert chunks[1].start < chunks[0].end  # consecutive chunks overlap


def write_topics(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in TOPICS.items():
        (folder / name).write_text(text)


def test_hybrid_search_finds_the_right_document(embedder: Embedder, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    write_topics(folder)
    index = DocumentIndex(tmp_path / "documents.sqlite3")
    outcomes = ingest(index, embedder, [folder])
    assert {o.status for o in outcomes} == {"ok"}
    hits = {"hybrid": 0, "bm25": 0, "vector": 0}
    for question, expected in QUESTIONS:
        vector = embedder.embed_query(question)
        results = index.search(question, vector, embedder.model_id, k=5)
        hits["hybrid"] += Path(results[0].path).name == expected
        keyword_only = index.search(question, None, None, k=1)
        hits["bm25"] += bool(keyword_only) and Path(keyword_only[0].path).name == expected
        vector_only = index.search("", vector, embedder.model_id, k=1)
        hits["vector"] += Path(vector_only[0].path).name == expected
    assert hits["hybrid"] == len(QUESTIONS)
    assert hits["hybrid"] >= max(hits["bm25"], hits["vector"])
    index.close()


def test_rescans_skip_unchanged_files_and_pick_up_changes(embedder: Embedder, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    write_topics(folder)
    index = DocumentIndex(tmp_path / "documents.sqlite3")
    ingest(index, embedder, [folder])
    again = ingest(index, embedder, [folder])
    assert {o.status for o in again} == {"unchanged"}
    (folder / "bread.md").write_text("# Bread\n\nSourdough needs a starter fed with flour and water.\n")
    third = {Path(o.path).name: o.status for o in ingest(index, embedder, [folder])}
    assert third["bread.md"] == "ok" and third["taxes.md"] == "unchanged"
    results = index.search("sourdough starter", embedder.embed_query("sourdough starter"), embedder.model_id, k=1)
    assert Path(results[0].path).name == "bread.md" and "Sourdough" in results[0].text
    assert index.remove(None, str((folder / "bread.md").resolve())) == 1
    assert all(Path(r.path).name != "bread.md" for r in index.search("sourdough", None, None, k=5))
    index.close()


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the shared PDF corpus is not beside this checkout")
def test_pdf_answers_cite_the_page(embedder: Embedder, tmp_path: Path) -> None:
    pdf = CORPUS / "004-pdflatex-4-pages" / "pdflatex-4-pages.pdf"
    index = DocumentIndex(tmp_path / "documents.sqlite3")
    [outcome] = ingest(index, embedder, [pdf])
    assert outcome.status == "ok" and outcome.chunks >= 4
    # Words that appear on one page only: the top hit must cite that page.
    for query, page in (("Huardest gefburn Kjift", 2), ("original language length of words", 4)):
        top = index.search(query, embedder.embed_query(query), embedder.model_id, k=1)[0]
        assert (Path(top.path).name, top.page) == (pdf.name, page)
    index.close()


def test_docs_cli(minilm_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    write_topics(folder)
    (folder / "scan.heic").write_bytes(b"\x00")
    env = {**os.environ, "ENCLAVE_HOME": str(tmp_path / "home"), "ENCLAVE_EMBEDDING_MODEL": str(minilm_path)}

    def enclave(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "enclave", "docs", *args], capture_output=True, text=True, env=env, timeout=120
        )

    added = enclave("add", str(folder), "--json")
    assert added.returncode == 0, added.stderr
    statuses = {Path(o["path"]).name: o["status"] for o in json.loads(added.stdout)}
    assert statuses["scan.heic"] == "unsupported" and statuses["taxes.md"] == "ok"
    found = json.loads(enclave("search", "When are taxes due?", "--json", "--k", "3").stdout)
    assert Path(found[0]["path"]).name == "taxes.md"
    assert {"path", "page", "score", "text"} <= set(found[0])
    listed = json.loads(enclave("list", "--json").stdout)
    assert len(listed) == 5
    assert enclave("remove", str(folder / "taxes.md")).returncode == 0
    assert enclave("remove", str(folder / "taxes.md")).returncode == 3
