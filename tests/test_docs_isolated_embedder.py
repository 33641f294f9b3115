"""The documents' embedding model in an engine host process: the same vectors as in this process, and a crash of the
host is one failed request, not a lost documents thread. Real MiniLM (converted by tests/fixtures/minilm_gguf.py)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from enclave.docs.embedder import Embedder, EmbedderError
from enclave.docs.isolated_embedder import IsolatedEmbedder
from engine_host_helpers import child_pids

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf

TEXTS = [
    "The invoice is due thirty days after delivery.",
    "Photosynthesis turns light into chemical energy in plants.",
    "Reset the router by holding the button for ten seconds.",
    "",
    "naïve café — 東京 🚀",
]


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    return minilm_gguf.cached_model_path()


@pytest.fixture(scope="module")
def local(minilm_path: Path) -> Iterator[Embedder]:
    model = Embedder(minilm_path, n_threads=1)
    yield model
    model.close()


@pytest.fixture
def isolated(minilm_path: Path) -> Iterator[IsolatedEmbedder]:
    before = child_pids()
    model = IsolatedEmbedder(minilm_path, n_threads=1)
    yield model
    model.close()
    assert child_pids() - before == set(), "the embedding host was left running"


def test_same_model_same_vectors(isolated: IsolatedEmbedder, local: Embedder) -> None:
    assert (isolated.name, isolated.model_id, isolated.dimension) == (local.name, local.model_id, local.dimension)
    assert isolated.family == local.family
    assert isolated.max_text_tokens() == local.max_text_tokens()
    for text in TEXTS:
        assert isolated.count_tokens(text) == local.count_tokens(text)
    # A text longer than the model's input limit is cut the same way on both sides.
    long_text = " ".join(TEXTS * 60)
    theirs, ours = isolated.embed_documents([*TEXTS, long_text]), local.embed_documents([*TEXTS, long_text])
    assert theirs.shape == ours.shape == (len(TEXTS) + 1, local.dimension)
    assert theirs.dtype == np.float32
    cosines = np.sum(theirs * ours, axis=1)
    assert cosines.min() >= 0.9999, cosines
    query = isolated.embed_query("when must the invoice be paid?")
    assert query.shape == (local.dimension,)
    assert float(query @ local.embed_query("when must the invoice be paid?")) >= 0.9999
    assert isolated.embed_documents([]).shape == (0, local.dimension)


def test_host_killed_mid_use_fails_one_request_then_recovers(isolated: IsolatedEmbedder, local: Embedder) -> None:
    first_pid = isolated.host_pid
    assert first_pid is not None and first_pid != os.getpid()
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(EmbedderError, match=r"embedding model stopped unexpectedly.*SIGKILL"):
        isolated.embed_documents(TEXTS[:2])
    vectors = isolated.embed_documents(TEXTS[:2])  # a new host, the model opened again
    assert isolated.host_pid not in (None, first_pid)
    assert float(np.sum(vectors[0] * local.embed_documents(TEXTS[:1])[0])) >= 0.9999


def test_not_an_embedding_model_is_refused_with_the_reason(gemma_path: Path) -> None:
    before = child_pids()
    with pytest.raises(EmbedderError, match="is not an embedding model"):
        IsolatedEmbedder(gemma_path, n_threads=1)
    with pytest.raises(EmbedderError, match=r"not found|No such file|does not exist"):
        IsolatedEmbedder(gemma_path.with_name("missing.gguf"), n_threads=1)
    assert child_pids() - before == set()
