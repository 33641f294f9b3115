"""Running the API server: uvicorn on a socket bound here, the queue, the embedding model, and a clean shutdown.

``ApiServer.start()`` serves from a background thread (the GUI, tests); ``serve_forever()`` serves in the foreground
(``enclave serve``, where uvicorn handles Ctrl+C and SIGTERM). Binding anything but a loopback address requires an
API key.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from enclave.server.app import ChatEngine, ServerOptions, create_app
from enclave.server.protocol import ApiError
from enclave.server.scheduler import Activity, Scheduler

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
DEFAULT_MAX_WAIT_S = 300.0
STARTUP_TIMEOUT_S = 10.0


class ServerConfigError(ValueError):
    """The server cannot start with these settings; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise ServerConfigError(
            f"Serving on {host} makes the model reachable from other computers; set an API key to do that "
            "(--api-key, or ENCLAVE_API_KEY), or serve on 127.0.0.1."
        )


class EmbeddingService:
    """The embedding model for ``/v1/embeddings``, loaded on first use on the embedding queue's thread."""

    def __init__(self, path: Path | None, *, n_threads: int | None = None) -> None:
        self.path = path
        self._n_threads = n_threads
        self._embedder: Any = None

    @property
    def names(self) -> Sequence[str]:
        return [self.path.name.removesuffix(".gguf")] if self.path is not None else []

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        from enclave.docs.embedder import Embedder, EmbedderError

        if self.path is None:
            raise ApiError(400, "No embedding model is configured in Enclave.")
        try:
            if self._embedder is None:
                self._embedder = Embedder(self.path, n_threads=self._n_threads)
            vectors = self._embedder.embed_texts(texts)
        except EmbedderError as exc:
            raise ApiError(500, str(exc), kind="server_error") from exc
        tokens = sum(min(self._embedder.count_tokens(t), self._embedder.max_input_tokens) for t in texts)
        return vectors.tolist(), tokens

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None


class _Uvicorn(uvicorn.Server):
    """Stops the queue as soon as an exit is asked for, so a streaming answer does not hold the shutdown open."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)
        # uvicorn raises the signal again once it has stopped; Ctrl+C or SIGTERM is how a server is meant to stop,
        # so ``enclave serve`` cleans up (the engine host included) and exits with 0 instead.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


class ApiServer:
    def __init__(
        self,
        engine: ChatEngine,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        options: ServerOptions | None = None,
        embeddings: EmbeddingService | None = None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_waiting: int = 64,
        on_activity: Callable[[Activity], None] | None = None,
    ) -> None:
        options = options or ServerOptions()
        check_bind(host, options.api_key)
        self.host = host
        self.embeddings = embeddings
        self.scheduler = Scheduler(max_wait_s=max_wait_s, max_waiting=max_waiting, on_activity=on_activity)
        self._embedding_scheduler = Scheduler(max_wait_s=max_wait_s, name="enclave-api-embeddings")
        app = create_app(engine, self.scheduler, options, embeddings, self._embedding_scheduler)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        try:
            self._socket: socket.socket = config.bind_socket()
        except SystemExit:  # uvicorn logs the OSError and exits; turn that into an error for the caller
            self.scheduler.close()
            self._embedding_scheduler.close()
            message = f"Could not listen on {host}:{port}: the address is in use or not available."
            raise ServerConfigError(message) from None
        self._socket.listen(config.backlog)  # connections wait in the backlog until uvicorn serves: none is refused
        self._server = _Uvicorn(config, self._stop_queues)
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def _stop_queues(self) -> None:
        self.scheduler.shutdown_nowait()
        self._embedding_scheduler.shutdown_nowait()

    def start(self) -> None:
        """Serve from a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])), name="enclave-api-server"
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.close()
            raise ServerConfigError("The API server stopped while starting; see the log for details.")

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl+C or SIGTERM."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self.close()

    def close(self) -> None:
        """Stop generating, stop serving, join every thread and free the embedding model."""
        if self._closed:
            return
        self._closed = True
        self._stop_queues()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
            if self._thread.is_alive():
                log.error("the API server thread did not stop within 30 s")
        self.scheduler.close()
        self._embedding_scheduler.close()
        self._socket.close()
        if self.embeddings is not None:
            self.embeddings.close()
