"""The engine host: the child process that owns llama.cpp for the app (``enclave engine-host``, hidden from --help).

llama.cpp stops the whole process when something is badly wrong (a ``GGML_ASSERT`` on a malformed model, an
out-of-memory abort on a GPU): in the app's own process that would take the window down. Here it takes down this
process only; the app (``IsolatedBackend``) sees the connection close, quotes llama.cpp's last words from this
process's standard error, and starts a new host when it is next needed.

Start-up is the documents parser's (docs/isolation.py): the app writes a random key on stdin, the host prints its
listener's address on stdout and accepts one connection. Messages are the JSON set of ``host_protocol``.

Two threads: the main thread runs one request at a time on a ``LlamaCppBackend`` and is the only one that sends; a
reader thread receives everything, queues requests for the main thread, and sets ``cancel``/``answer_now`` on the
running generation's ``GenerationControl`` at once, so a stop lands inside the prompt batch llama.cpp is reading
(its abort callback sees the flag) or before the next token. When the app goes away (its end of the connection
closes) the running generation is stopped and the host exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

from enclave import __version__
from enclave.engine import host_protocol as wire
from enclave.engine.types import EngineError, GenerationControl, PromptProgress

log = logging.getLogger(__name__)

# After the app has gone, how long a busy main thread (a load in progress) gets before the host exits regardless.
ORPHAN_EXIT_S = 10.0


class _Host:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._requests: queue.Queue[tuple[dict[str, Any], GenerationControl | None] | None] = queue.Queue()
        self._controls: dict[str, GenerationControl] = {}
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._closed = False
        self._backend: Any = None  # LlamaCppBackend, created (and llama.cpp imported) on the first request
        self._embedder: Any = None  # docs.embedder.Embedder, when the app asked this host for embeddings

    # --- sending (main thread only) -------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            self._conn.send_bytes(wire.encode(message))
        except (OSError, ValueError):
            self._closed = True  # the app is gone; the reader sees the same and ends the loop

    # --- the reader thread ----------------------------------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                message = wire.decode(self._conn.recv_bytes(wire.MAX_MESSAGE_BYTES))
                kind = message["type"]
                if kind in ("cancel", "answer_now"):
                    with self._lock:
                        control = self._controls.get(str(message.get("id")))
                    if control is not None:
                        (control.cancel if kind == "cancel" else control.answer_now).set()
                    continue
                control = None
                if kind in ("generate", "load"):  # registered here, so a cancel right behind it finds it
                    control = GenerationControl()
                    with self._lock:
                        self._controls[wire.get(message, "id", str)] = control
                self._requests.put((message, control))
                if kind == "shutdown":
                    return
            except (EOFError, OSError, wire.ProtocolError) as exc:
                if not isinstance(exc, EOFError):
                    log.error("engine host: connection closed (%s)", exc)
                break
        # The app closed the connection (or died): stop the work in progress and leave.
        with self._lock:
            for control in self._controls.values():
                control.cancel.set()
        self._requests.put(None)
        if not self._finished.wait(ORPHAN_EXIT_S):
            os._exit(0)  # the main thread is stuck in llama.cpp (a long load): nobody is waiting for it

    # --- the main thread ------------------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            hello = wire.decode(self._conn.recv_bytes(wire.MAX_MESSAGE_BYTES))
            protocol = wire.get(hello, "protocol", int) if hello["type"] == "hello" else None
        except (EOFError, OSError, wire.ProtocolError) as exc:
            log.error("engine host: no handshake (%s)", exc)
            return 2
        self._send({"type": "hello", "protocol": wire.PROTOCOL_VERSION, "pid": os.getpid(), "version": __version__})
        if protocol != wire.PROTOCOL_VERSION:
            log.error("engine host: the app speaks protocol %s, this host %s", protocol, wire.PROTOCOL_VERSION)
            return 2
        reader = threading.Thread(target=self._read, name="engine-host-reader", daemon=True)
        reader.start()
        try:
            while not self._closed:
                item = self._requests.get()
                if item is None or item[0]["type"] == "shutdown":
                    break
                self._handle(*item)
        finally:
            if self._backend is not None:
                self._backend.unload()
            if self._embedder is not None:
                self._embedder.close()
            self._finished.set()
        return 0

    def _engine(self) -> Any:
        if self._backend is None:
            from enclave.engine.llama_backend import LlamaCppBackend

            self._backend = LlamaCppBackend()
            _report_aborts()
        return self._backend

    def _handle(self, message: dict[str, Any], control: GenerationControl | None) -> None:
        kind = message["type"]
        request_id = str(message.get("id"))
        try:
            if kind == "load":
                request = wire.load_request_from_json(wire.get(message, "request", dict))
                info = self._engine().load(
                    request,
                    control.cancel if control is not None else None,
                    lambda fraction: self._send({"type": "load_progress", "id": request_id, "fraction": fraction}),
                )
                self._send({"type": "loaded", "id": request_id, "info": wire.model_info_to_json(info)})
            elif kind == "unload":
                if self._backend is not None:
                    self._backend.unload()
                self._send({"type": "unloaded", "id": request_id})
            elif kind == "tokenize":
                text, special = wire.get(message, "text", str), wire.get(message, "special", bool)
                self._send(
                    {"type": "tokens", "id": request_id, "tokens": self._engine().tokenize(text, special=special)}
                )
            elif kind == "count_tokens":
                count = self._engine().count_tokens(wire.get(message, "text", str))
                self._send({"type": "count", "id": request_id, "count": count})
            elif kind == "generate" and control is not None:
                self._generate(request_id, message, control)
            elif kind in ("embed_open", "embed", "embed_count"):
                self._embedding(kind, request_id, message)
            else:
                raise wire.ProtocolError(f"unknown request {kind!r}")
        except EngineError as exc:
            self._send(wire.error_to_json(request_id, exc, resident=self._resident()))
        except Exception as exc:  # a bug must come back as an answer, not leave the app waiting
            log.exception("engine host: %s failed", kind)
            self._send(wire.error_to_json(request_id, exc, resident=self._resident()))
        finally:
            with self._lock:
                self._controls.pop(request_id, None)

    def _embedding(self, kind: str, request_id: str, message: dict[str, Any]) -> None:
        """The documents' embedding model: a host started for embeddings holds one (and never a chat model)."""
        from enclave.docs.embedder import DEFAULT_BATCH_TOKENS, Embedder, EmbedderError

        try:
            if kind == "embed_open":
                old, self._embedder = self._embedder, None
                if old is not None:
                    old.close()
                batch = wire.get_optional(message, "batch", int) or DEFAULT_BATCH_TOKENS
                threads = wire.get_optional(message, "n_threads", int)
                self._embedder = Embedder(Path(wire.get(message, "path", str)), n_threads=threads, batch_tokens=batch)
                self._send({"type": "embedder", "id": request_id, "info": wire.embedder_info_to_json(self._embedder)})
                return
            embedder = self._embedder
            if embedder is None:
                raise EngineError("No embedding model is open.")
            if kind == "embed_count":
                count = embedder.count_tokens(wire.get(message, "text", str))
                self._send({"type": "count", "id": request_id, "count": count})
                return
            texts = wire.get(message, "texts", list)
            if not all(isinstance(text, str) for text in texts):
                raise wire.ProtocolError("embed: texts should be strings")
            if wire.get(message, "role", str) == "query":
                if len(texts) != 1:
                    raise wire.ProtocolError("embed: a query is one text")
                vectors = embedder.embed_query(texts[0]).reshape(1, -1)
            else:
                vectors = embedder.embed_documents(texts)
            self._send(wire.vectors_to_json(request_id, vectors))
        except EmbedderError as exc:
            raise EngineError(str(exc)) from exc

    def _resident(self) -> bool:
        return self._backend is not None and self._backend.model is not None

    def _generate(self, request_id: str, message: dict[str, Any], control: GenerationControl) -> None:
        def progress(event: PromptProgress) -> None:  # called inside a batch, from llama.cpp's abort callback
            self._send(wire.progress_to_json(request_id, event, inside_batch=True))

        control.progress = progress
        request = wire.generation_request_from_json(wire.get(message, "request", dict))
        for event in self._engine().stream_chat(request, control):
            self._send(wire.event_to_json(request_id, event))
            if self._closed:
                control.cancel.set()


_abort_reporter: Any = None  # ggml keeps a pointer to it for the life of the process
_stderr_copy: int | None = None


def _report_aborts() -> None:
    """Make sure llama.cpp's last words reach the app even while a model loads.

    llama-cpp-python points file descriptor 2 at /dev/null while it constructs a model (``verbose=False``), exactly
    when a malformed model file hits a ``GGML_ASSERT``. ggml hands its abort message to a callback when one is set
    (``ggml_set_abort_callback``); ours writes it to a copy of the original standard error, which that redirection
    does not touch, and then ggml aborts as before.
    """
    global _abort_reporter
    if _abort_reporter is not None or _stderr_copy is None:
        return
    import ctypes

    from enclave.engine.llama_runtime import ggml_library

    copy = _stderr_copy
    callback_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p)

    def report(message: bytes | None) -> None:
        with contextlib.suppress(OSError):
            os.write(copy, (message or b"ggml aborted") + b"\n")

    lib = ggml_library()
    lib.ggml_set_abort_callback.argtypes = [callback_type]
    lib.ggml_set_abort_callback.restype = ctypes.c_void_p
    _abort_reporter = callback_type(report)
    lib.ggml_set_abort_callback(_abort_reporter)


def serve() -> int:
    """Read the key from stdin, print the listener's address, serve one app until it disconnects or says shutdown."""
    key = bytes.fromhex(sys.stdin.readline().strip())
    with Listener(authkey=key) as listener:
        print(listener.address, flush=True)
        # Nothing else may write to the pipe the app stopped reading: a full pipe would block the host.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        conn = listener.accept()
    # Standard error is a file the app reads after a crash: llama.cpp's errors (routed through logging by
    # llama_runtime) and its abort message land there; its chatter (INFO, WARNING) does not. Both are written to a
    # copy of the descriptor, which llama-cpp-python's silencing of descriptor 2 during a load leaves alone.
    global _stderr_copy
    _stderr_copy = os.dup(sys.stderr.fileno())
    stream = open(_stderr_copy, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    logging.basicConfig(level=logging.WARNING, stream=stream, format="%(name)s: %(message)s")
    with conn:
        return _Host(conn).run()


__all__ = ["serve"]
