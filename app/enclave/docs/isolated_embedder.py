"""The documents' embedding model in an engine host process of its own, so the app's process never loads llama.cpp.

``IsolatedEmbedder`` is a ``TextEmbedder`` (what ingestion and search use) whose ``docs.embedder.Embedder`` lives in
``enclave engine-host``, driven with the ``embed_*`` messages of ``engine/host_protocol``.

Why a second host rather than a second role in the chat model's host: the chat host's main thread spends whole
answers inside llama.cpp, and documents are indexed while the user chats; one process would make every batch of
passages wait behind an answer (or the answer behind a batch). Two processes also keep each other's crashes apart: a
hostile document that aborts the embedder does not take the chat model with it, and the reverse. What they share is
one program, one start-up path and one wire protocol (``HostProcess``), so there is nothing new to get right.

A host that dies while embedding is started again (and the model opened again) on the next request; the failed
request raises ``EmbedderError`` quoting llama.cpp's last words, so the ingester marks that one file as failed and
goes on. Three deaths in a row without a completed request in between stop the automatic restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclave.docs.embedder import EmbedderError, ModelFamily
from enclave.engine import host_protocol as wire
from enclave.engine.isolated import HostDied, HostProcess
from enclave.engine.types import EngineError

if TYPE_CHECKING:
    import numpy as np  # imported where used: the window's first paint does not wait for numpy

log = logging.getLogger(__name__)


class IsolatedEmbedder(HostProcess):
    """One embedding model in its own engine host. Not thread-safe: use it from one thread (the documents worker)."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_threads: int | None = None,
        batch_tokens: int | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        super().__init__(command)
        self.path = Path(model_path)
        self._open_message: dict[str, Any] = {
            "type": "embed_open",
            "path": str(self.path),
            "n_threads": n_threads,
            "batch": batch_tokens,
        }
        info = self._open()
        self.name: str = wire.get(info, "name", str)
        self.model_id: str = wire.get(info, "model_id", str)
        self.dimension: int = wire.get(info, "dimension", int)
        self._max_text_tokens = wire.get(info, "max_text_tokens", int)
        family = wire.get(info, "family", dict)
        try:
            self.family = ModelFamily(**family)
        except TypeError as exc:
            self.close()
            raise EmbedderError(f"The engine process described the embedding model oddly ({exc}).") from exc

    # --- the host ---------------------------------------------------------------------------------------------------

    def _open(self) -> dict[str, Any]:
        """Start a host and open the model in it; raises EmbedderError with the reason."""
        try:
            self._start()
        except (OSError, EngineError) as exc:
            self._stop()
            raise EmbedderError(f"The embedding process could not be started: {exc}") from exc
        try:
            reply = self._call({**self._open_message, "id": self._new_id()}, "embedder")
        except (HostDied, wire.ProtocolError) as exc:
            raise EmbedderError(self._crashed(exc)) from exc
        except EngineError as exc:
            self._stop()
            raise EmbedderError(str(exc)) from exc
        return wire.get(reply, "info", dict)

    def _request(self, message: dict[str, Any], answer: str) -> dict[str, Any]:
        if not self._alive():
            if self._crashes >= self._max_crashes:
                raise EmbedderError(
                    f"The embedding model stopped unexpectedly {self._crashes} times in a row ({self.last_crash}). "
                    "Choose another embedding model in Models, or restart Enclave."
                )
            log.warning("embedding host is not running: starting it and opening %s again", self.path.name)
            self._open()
        try:
            reply = self._call({**message, "id": self._new_id()}, answer)
        except (HostDied, wire.ProtocolError) as exc:
            raise EmbedderError(self._crashed(exc).replace("The model", "The embedding model", 1)) from exc
        except EngineError as exc:
            raise EmbedderError(str(exc)) from exc
        self._crashes = 0
        return reply

    # --- TextEmbedder -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop(graceful=True)

    def __enter__(self) -> IsolatedEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return wire.get(self._request({"type": "embed_count", "text": text}, "count"), "count", int)

    def max_text_tokens(self) -> int:
        return self._max_text_tokens

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._vectors(list(texts), "documents")

    def embed_query(self, text: str) -> np.ndarray:
        return self._vectors([text], "query")[0]

    def _vectors(self, texts: list[str], role: str) -> np.ndarray:
        reply = self._request({"type": "embed", "texts": texts, "role": role}, "vectors")
        vectors = wire.vectors_from_json(reply)
        if vectors.shape != (len(texts), self.dimension):
            raise EmbedderError("The embedding process sent vectors of the wrong shape.")
        return vectors


__all__ = ["IsolatedEmbedder"]
