"""Embeddings through llama.cpp with a GGUF embedding model, batched, with each model family's prefixes.

llama.cpp aborts the whole process (not an exception) on some misuse, so the rules from its sharp edges are kept
here in one place: n_ubatch == n_batch, and no text longer than the model's context ever reaches it (texts are
truncated by tokens first).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enclave.engine.gguf_check import check_gguf_file


@dataclass(frozen=True)
class Prefixes:
    query: str = ""
    document: str = ""


# By model family, from the model cards: the prefixes the models were trained with.
FAMILY_PREFIXES: dict[str, Prefixes] = {
    "nomic": Prefixes("search_query: ", "search_document: "),
    "bge-m3": Prefixes(),
    "bge": Prefixes("Represent this sentence for searching relevant passages: ", ""),
    "e5": Prefixes("query: ", "passage: "),
}


def prefixes_for(name: str) -> Prefixes:
    lowered = name.lower()
    for family, prefixes in FAMILY_PREFIXES.items():
        if family in lowered:
            return prefixes
    return Prefixes()


class Embedder:
    """One embedding model; not thread-safe: use it from one thread (the documents worker)."""

    def __init__(self, model_path: Path, *, n_threads: int | None = None, batch_tokens: int = 512) -> None:
        from llama_cpp import Llama

        from enclave.engine.llama_backend import _route_llama_logs
        from enclave.models.gguf import read_gguf_header

        check_gguf_file(model_path)
        _route_llama_logs()
        self.path = model_path
        threads = n_threads or max(1, os.cpu_count() or 1)
        header = read_gguf_header(model_path)
        self.n_ctx = min(header.context_length or 512, 8192)
        self.batch_tokens = max(self.n_ctx, batch_tokens)
        self.name = header.name or model_path.stem
        self.prefixes = prefixes_for(f"{self.name} {model_path.name}")
        self._llm: Any = Llama(
            model_path=str(model_path),
            embedding=True,
            n_ctx=self.n_ctx,
            n_batch=self.batch_tokens,
            n_ubatch=self.batch_tokens,  # must equal n_batch, or llama.cpp aborts the process
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=True,
            verbose=False,
        )
        self.dimension = int(self._llm.n_embd())
        self.model_id = f"{self.name}:{model_path.stat().st_size}"

    def close(self) -> None:
        self._llm.close()

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def max_text_tokens(self) -> int:
        """Room for text in one input: the context minus the [CLS]/[SEP]-style special tokens and prefixes."""
        return self.n_ctx - 2 - self.count_tokens(self.prefixes.document) + 1

    def _fit(self, text: str) -> str:
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        limit = self.n_ctx - 4
        if len(tokens) <= limit:
            return text
        return str(self._llm.detokenize(tokens[:limit]).decode("utf-8", errors="ignore"))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self._fit(self.prefixes.document + t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self._fit(self.prefixes.query + text)])[0]

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 vectors; inputs are grouped so each llama.cpp call stays within one batch."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out: list[list[float]] = []
        group: list[str] = []
        used = 0
        for text in texts:
            size = self.count_tokens(text) + 1
            if group and used + size > self.batch_tokens:
                out.extend(self._llm.embed(group, normalize=True))
                group, used = [], 0
            group.append(text)
            used += size
        if group:
            out.extend(self._llm.embed(group, normalize=True))
        return np.asarray(out, dtype=np.float32)
