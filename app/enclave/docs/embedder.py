"""Embeddings through llama.cpp with a GGUF embedding model: batched, normalised, with each model family's prefixes.

llama.cpp aborts the whole process (not an exception) on some misuse, so the rules from its sharp edges live here in
one place: ``n_ubatch == n_batch``; no text longer than the model's input limit ever reaches it (texts are measured
and cut by tokens first); thread counts are set explicitly. Flash attention is on: without it, attention spans the
whole batch and larger batches get slower.

The model family (prefixes, real input limit, what cosine counts as "relevant") is read from the GGUF's own
``general.name``/``general.architecture`` and the file name, not from the model catalog, so an imported file works.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np  # imported where used: the window's first paint does not wait for numpy


MAX_INPUT_TOKENS = 512  # chunks are a few hundred tokens; more context would only cost memory
# llama.cpp batch (n_batch == n_ubatch). Attention spans the whole batch, so bigger is not faster: on 2 cores MiniLM
# ran at ~3,600 tokens/s with 256-512 and ~2,900 with 2,048 (docs/benchmarks.md, "Documents").
DEFAULT_BATCH_TOKENS = 512
EMBEDDING_ARCHITECTURES = frozenset({"bert", "nomic-bert", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert"})


class EmbedderError(Exception):
    """The embedding model could not be loaded or used; the message is for the user."""


@dataclass(frozen=True)
class ModelFamily:
    name: str
    query_prefix: str = ""
    document_prefix: str = ""
    max_tokens: int | None = None  # what the model was trained for, when the GGUF header claims more
    # Cosine below which a passage counts as unrelated to the query ("nothing relevant found"). None: not calibrated,
    # every result counts. MiniLM's is measured on the test question set (related pairs >= 0.3, unrelated < 0.2);
    # the others follow their model cards' remarks on score ranges (bge-v1.5 and e5 put unrelated text high).
    min_similarity: float | None = None


_RETRIEVAL_INSTRUCTION = "Represent this sentence for searching relevant passages: "
# Checked in order: the first family whose pattern matches "name file-name architecture" wins.
FAMILIES: tuple[tuple[str, ModelFamily], ...] = (
    (r"nomic", ModelFamily("nomic", "search_query: ", "search_document: ", min_similarity=0.45)),
    (r"bge-?m3", ModelFamily("bge-m3", max_tokens=8192, min_similarity=0.4)),
    (r"\bbge\b|bge-", ModelFamily("bge", _RETRIEVAL_INSTRUCTION, "", max_tokens=512, min_similarity=0.55)),
    (r"mxbai-embed", ModelFamily("mxbai", _RETRIEVAL_INSTRUCTION, "", max_tokens=512)),
    (r"arctic-embed", ModelFamily("arctic-embed", _RETRIEVAL_INSTRUCTION, "", max_tokens=512)),
    (r"(?<![a-z0-9])e5(?![a-z0-9])", ModelFamily("e5", "query: ", "passage: ", max_tokens=512, min_similarity=0.75)),
    (r"minilm", ModelFamily("minilm", max_tokens=256, min_similarity=0.25)),
)
GENERIC = ModelFamily("generic")


def detect_family(name: str, file_name: str = "", architecture: str = "") -> ModelFamily:
    haystack = f"{name} {file_name} {architecture}".lower().replace("_", "-")
    for pattern, family in FAMILIES:
        if re.search(pattern, haystack):
            return family
    return GENERIC


class TextEmbedder(Protocol):
    """What ingestion and search need from an embedding model (tests use a small fake)."""

    name: str
    model_id: str
    dimension: int
    family: ModelFamily

    def close(self) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    def max_text_tokens(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class Embedder:
    """One GGUF embedding model. Not thread-safe: use it from one thread (the documents worker, or the CLI)."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_threads: int | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        n_gpu_layers: int = 0,  # 0: the CPU; -1: every layer on llama.cpp's GPU device
    ) -> None:
        from enclave.engine.gguf_check import check_gguf_file
        from enclave.engine.llama_runtime import init_llama_runtime, open_llama
        from enclave.engine.types import ModelLoadError
        from enclave.models.gguf import GGUFError, read_gguf_header

        model_path = Path(model_path)
        try:
            check_gguf_file(model_path)
            header = read_gguf_header(model_path)
        except (ModelLoadError, GGUFError) as exc:
            raise EmbedderError(str(exc)) from exc
        architecture = header.architecture
        if architecture not in EMBEDDING_ARCHITECTURES and header.arch_int("pooling_type") is None:
            raise EmbedderError(
                f"{model_path.name} is not an embedding model (architecture {architecture or 'unknown'}). Choose an "
                "embedding model such as all-MiniLM-L6-v2, bge-small-en-v1.5 or nomic-embed-text."
            )
        init_llama_runtime()
        self.path = model_path
        self.name = header.name or model_path.stem
        self.family = detect_family(self.name, model_path.name, architecture)
        limits = [MAX_INPUT_TOKENS, header.context_length or 512]
        if self.family.max_tokens:
            limits.append(self.family.max_tokens)
        self.max_input_tokens = min(limits)  # [CLS] + text + [SEP], prefixes included
        self.batch_tokens = max(batch_tokens, self.max_input_tokens)  # one whole input always fits a batch
        threads = n_threads or default_threads()
        self.n_threads = threads
        try:
            self._llm: Any = open_llama(
                model_path=str(model_path),
                embedding=True,
                n_ctx=self.batch_tokens,
                n_batch=self.batch_tokens,
                n_ubatch=self.batch_tokens,  # must equal n_batch, or llama.cpp aborts the process
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=n_gpu_layers,
                flash_attn=True,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EmbedderError(f"llama.cpp could not load {model_path.name}: {exc}") from exc
        self.dimension = int(self._llm.n_embd())
        self.model_id = f"{self.name}:{model_path.stat().st_size}:{self.dimension}"
        self._specials = len(self._tokenize("", add_specials=True))  # [CLS] and [SEP] for BERT
        self._query_prefix_tokens = self.count_tokens(self.family.query_prefix)
        self._document_prefix_tokens = self.count_tokens(self.family.document_prefix)

    def close(self) -> None:
        self._llm.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tokenize(self, text: str, *, add_specials: bool = False) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_specials, special=False))

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` alone: no [CLS]/[SEP], no prefix (chunk budgets are measured this way)."""
        return len(self._tokenize(text)) if text else 0

    def max_text_tokens(self) -> int:
        """Room for a document's text in one input: the limit minus special tokens and the document prefix."""
        return self.max_input_tokens - self._specials - self._document_prefix_tokens

    def _fit(self, prefix: str, prefix_tokens: int, text: str) -> str:
        """``prefix + text``, with ``text`` cut by tokens so the whole input stays within the model's limit."""
        room = self.max_input_tokens - self._specials - prefix_tokens
        tokens = self._tokenize(text)
        if len(tokens) <= room:
            return prefix + text
        keep = room
        while keep > 0:
            cut = self._llm.detokenize(tokens[:keep]).decode("utf-8", errors="ignore")
            if len(self._tokenize(cut)) <= room:
                return prefix + cut
            keep -= 8  # detokenising and tokenising again can come out a few tokens longer
        return prefix

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        prefix, size = self.family.document_prefix, self._document_prefix_tokens
        return self._embed([self._fit(prefix, size, t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self._fit(self.family.query_prefix, self._query_prefix_tokens, text)])[0]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts as given (no query or document prefix), each cut to the model's input limit: the API's embeddings."""
        return self._embed([self._fit("", 0, t) for t in texts])

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 vectors, one row per text; llama-cpp-python packs them into batches of n_batch tokens."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        try:
            vectors = self._llm.embed(list(texts), normalize=True, truncate=False)
        except (ValueError, RuntimeError) as exc:
            raise EmbedderError(f"The embedding model failed: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)


def active_embedding_model_path() -> Path | None:
    """The embedding model to use: ``$ENCLAVE_EMBEDDING_MODEL``, else the one chosen in the model manager."""
    override = os.environ.get("ENCLAVE_EMBEDDING_MODEL")
    if override:
        return Path(override)
    from enclave.models.installed import ModelRegistry
    from enclave.paths import app_paths

    registry_file = app_paths().models_file
    if not registry_file.exists():
        return None
    model = ModelRegistry(registry_file).active("embedding")
    return Path(model.path) if model is not None else None


__all__ = [
    "FAMILIES",
    "Embedder",
    "EmbedderError",
    "ModelFamily",
    "TextEmbedder",
    "active_embedding_model_path",
    "detect_family",
]
