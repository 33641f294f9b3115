"""A ``Backend`` whose llama.cpp runs in a child process, so an abort in llama.cpp never takes the window down.

``IsolatedBackend`` drives ``enclave engine-host`` (engine/host.py, started through ``child_command`` so it works from
a source checkout and from an installed bundle) with the JSON messages of ``host_protocol`` (the message table is
there). It is used the way ``LlamaCppBackend`` is, on the engine thread, and it needs no threads of its own: while it
waits for the host it polls the connection every few milliseconds and forwards ``control.cancel`` and
``control.answer_now`` as soon as they are set, so a stop still lands within one prompt batch or one token.

The host's standard error goes to a temporary file (llama.cpp's abort message lands there, and the host logs
llama.cpp's errors there); only its last few KiB are ever read back, and on POSIX the file is unlinked as soon as the
host has it open, so nothing is left in the temporary folder even if the app itself is killed.

When the host dies during a request, the request fails with a sentence quoting that message (or naming the signal):
``ModelLoadError`` during a load, ``EngineCrashedError`` otherwise. The host is not restarted at once: the next
request starts a new one and loads the last model again, unless that model has crashed the host three times in a row
(then a clear refusal, until the user loads a model again).

Nothing in this module imports llama.cpp: the app's process never does.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from enclave.engine import host_protocol as wire
from enclave.engine.backend import EngineCrashedError, ModelLoadCrashedError
from enclave.engine.types import (
    EngineError,
    Finished,
    GenerationControl,
    GenerationRequest,
    LoadRequest,
    ModelInfo,
    ModelLoadCancelled,
    ModelLoadError,
    StreamEvent,
)

log = logging.getLogger(__name__)

POLL_S = 0.02  # how often control flags are looked at while the host works: well under one token
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 5.0
CRASH_REAP_TIMEOUT_S = 10.0  # an aborting process may take a moment to write a core dump
ABANDON_TIMEOUT_S = 10.0  # a generation the caller stopped reading: how long the host gets to wind it down
LOAD_CANCEL_GRACE_S = 2.0  # a cancelled load that has not stopped by then (still planning, say) ends with its host
STDERR_TAIL_BYTES = 16 * 1024
MAX_CRASHES = 3
NO_MODEL = "No model is loaded. Open a GGUF model first."
# ``file.cpp:123: message``: how ggml_abort (GGML_ASSERT, GGML_ABORT) starts its last words.
_ABORT_LINE = re.compile(r"(?:^|[\s/\\])(?P<where>[\w.+-]+\.(?:c|cc|cpp|cu|h|hpp|m|mm)):(?P<line>\d+): (?P<what>.+)$")
_ERROR_LINE = re.compile(r"error|what\(\)|terminate called|assert|abort|fatal|out of memory", re.IGNORECASE)


class HostDied(Exception):
    """The connection closed (or the process ended) while a request was open."""


class _Cancelled(Exception):
    """The caller's cancel event was set while a load was in progress."""


class HostProcess:
    """One engine host process and the connection to it: start and handshake, requests and their answers, the host's
    standard error, and what a crash says. ``IsolatedBackend`` (the chat model) and the documents' embedder
    (docs/isolated_embedder.py) each drive one; every method runs on the thread that owns the object."""

    def __init__(self, command: Sequence[str] | None = None, *, max_crashes: int = MAX_CRASHES) -> None:
        if command is None:
            from enclave.child_process import child_command

            command = child_command("engine-host")
        self._command = list(command)
        self._max_crashes = max_crashes
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._address: str | None = None
        self._stderr_path: Path | None = None  # removed at once where the OS allows (POSIX): only the fd remains
        self._stderr_fd: int | None = None  # the app's own read-only descriptor of the host's standard error
        self._stderr_mark = 0  # where the current request's part of the host's standard error starts
        self._ids = itertools.count(1)
        self._crashes = 0  # host deaths since the last explicit load or completed request
        self.starts = 0  # host processes started (tests and diagnostics)
        self.last_crash: str | None = None

    # --- state ----------------------------------------------------------------------------------------------------

    @property
    def host_pid(self) -> int | None:
        """The running host's process id, or None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def stderr_tail(self, max_bytes: int = STDERR_TAIL_BYTES, since: int = 0) -> list[str]:
        """The last lines the host wrote to its standard error (at most ``max_bytes``, from offset ``since``)."""
        fd = self._stderr_fd
        if fd is None:
            return []
        try:
            size = os.fstat(fd).st_size
            start = max(since, size - max_bytes)
            os.lseek(fd, start, os.SEEK_SET)  # this descriptor's offset is the app's own: the host writes elsewhere
            data = os.read(fd, max_bytes)
        except OSError:
            return []
        lines = data.decode("utf-8", errors="replace").splitlines()
        if start > since and lines:
            lines = lines[1:]  # the first line was cut in the middle
        return [line for line in lines if line.strip()]

    def _forget_model(self) -> None:
        """The host answered that nothing is resident any more (a subclass drops what it remembers)."""

    # --- the host process -----------------------------------------------------------------------------------------

    def _alive(self) -> bool:
        return self._conn is not None and self._process is not None and self._process.poll() is None

    def _start(self) -> Connection:
        """Start a host and shake hands; raises OSError or EngineError when it cannot be started."""
        self._stop()
        key = secrets.token_bytes(32)
        fd, stderr_name = tempfile.mkstemp(prefix="enclave-engine-", suffix=".log")
        self._stderr_path = Path(stderr_name)
        self._stderr_fd = os.open(stderr_name, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._stderr_mark = 0
        env = dict(os.environ)
        if env.get("ENCLAVE_LLAMA_BACKTRACE") != "1":
            # ggml's abort handler would otherwise attach gdb to the dying host (slow, and a gdb holding the host's
            # connection would keep the crash from being noticed); the one-line message is what the user needs.
            env["GGML_NO_BACKTRACE"] = "1"
        try:
            with os.fdopen(fd, "wb") as stderr_file:
                process = subprocess.Popen(
                    self._command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr_file,
                    env=env,
                    creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # no console window on Windows
                    start_new_session=os.name == "posix",  # Ctrl+C in the app's terminal is the app's to handle
                )
            self._process = process
            self.starts += 1
            if os.name == "posix":  # nothing is left in the temporary folder even if this app is killed
                self._stderr_path.unlink()
                self._stderr_path = None
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(key.hex().encode() + b"\n")
            process.stdin.close()
            if os.name == "posix":  # Windows cannot wait on a pipe; there the host's start is trusted
                import select

                ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT_S)
                if not ready:
                    raise OSError(f"the engine process did not start within {STARTUP_TIMEOUT_S:.0f} s")
            address = process.stdout.readline().decode("utf-8", errors="replace").strip()
            process.stdout.close()
            if not address:
                code = process.wait(timeout=5)
                tail = " ".join(self.stderr_tail()[-3:])
                raise OSError(f"the engine process exited with code {code}: {tail}".rstrip(": "))
            self._address = address
            conn = Client(address, authkey=key)
            self._conn = conn
            conn.send_bytes(wire.encode({"type": "hello", "protocol": wire.PROTOCOL_VERSION}))
            if not conn.poll(STARTUP_TIMEOUT_S):
                raise OSError("the engine process did not answer")
            hello = wire.decode(conn.recv_bytes(wire.MAX_MESSAGE_BYTES))
            protocol = wire.get(hello, "protocol", int) if hello["type"] == "hello" else None
            if protocol != wire.PROTOCOL_VERSION:
                raise EngineError(
                    f"The engine process speaks protocol version {protocol}, this app version {wire.PROTOCOL_VERSION}."
                    " Reinstall Enclave."
                )
        except (EOFError, wire.ProtocolError) as exc:
            self._stop()
            raise OSError(f"the engine process did not shake hands ({exc})") from exc
        except BaseException:
            self._stop()
            raise
        log.info("engine host started (pid %d)", process.pid)
        return conn

    def _stop(self, *, graceful: bool = False) -> None:
        """End the host (asking it first when ``graceful``) and remove what it leaves behind."""
        conn, self._conn = self._conn, None
        process, self._process = self._process, None
        if conn is not None:
            if graceful and process is not None and process.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    conn.send_bytes(wire.encode({"type": "shutdown"}))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=SHUTDOWN_TIMEOUT_S)
            with contextlib.suppress(OSError):
                conn.close()
        if process is not None:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=CRASH_REAP_TIMEOUT_S)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        # A host that was killed cannot clean up multiprocessing's folder for its listener (its socket is already
        # gone: the listener closed after the one connection).
        address, self._address = self._address, None
        if address and os.path.isabs(address):
            folder = Path(address).parent
            if folder.name.startswith("pymp-"):
                shutil.rmtree(folder, ignore_errors=True)
        fd, self._stderr_fd = self._stderr_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        path, self._stderr_path = self._stderr_path, None
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def _crash_message(self) -> str:
        """Reap the dead host and describe its end; the host's files are removed afterwards."""
        process = self._process
        code: int | None = None
        if process is not None:
            try:
                code = process.wait(timeout=CRASH_REAP_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # the connection broke but the process lives on: end it
                process.kill()
                code = process.wait(timeout=CRASH_REAP_TIMEOUT_S)
        lines = self.stderr_tail(since=self._stderr_mark)
        detail = crash_detail(lines, code)
        for line in lines[-20:]:
            log.error("engine host: %s", line)
        self._stop()
        return f"The model stopped unexpectedly (llama.cpp: {detail}). Reload it, or choose another model."

    def _crashed(self, exc: BaseException) -> str:
        """Account for a host that died (or broke the protocol) during a request; returns the sentence to show."""
        cause = exc if isinstance(exc, wire.ProtocolError) else exc.__cause__
        if isinstance(cause, wire.ProtocolError):
            self._stop()
            message = (
                f"The engine process sent an answer Enclave does not understand ({cause}). Reload the model, or "
                "choose another one."
            )
        else:
            message = self._crash_message()
        self._crashes += 1
        self.last_crash = message
        log.error("%s (%d in a row)", message, self._crashes)
        return message

    # --- talking to the host --------------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if self._conn is None:
            raise HostDied()
        try:
            self._conn.send_bytes(wire.encode(message))
        except (OSError, ValueError) as exc:
            raise HostDied() from exc

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        """The host's next message, or None after ``timeout``; raises HostDied when the host is gone."""
        conn, process = self._conn, self._process
        if conn is None or process is None:
            raise HostDied()
        try:
            if not conn.poll(timeout):
                if process.poll() is not None:
                    raise HostDied()
                return None
            data = conn.recv_bytes(wire.MAX_MESSAGE_BYTES)
        except (EOFError, OSError) as exc:  # OSError also for a message over the size limit
            raise HostDied() from exc
        return wire.decode(data)

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _mark(self) -> None:
        """Remember where the host's standard error stands, so a crash quotes only what this request caused."""
        fd = self._stderr_fd
        try:
            self._stderr_mark = os.fstat(fd).st_size if fd is not None else 0
        except OSError:
            self._stderr_mark = 0

    def _call(
        self,
        message: dict[str, Any],
        answer: str,
        cancel: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> dict[str, Any]:
        """Send a request and wait for its answer (passing ``load_progress`` on to ``progress``); raises the
        request's EngineError, or HostDied."""
        request_id = message["id"]
        self._mark()
        self._send(message)
        cancelled_at: float | None = None
        while True:
            if cancel is not None and cancel.is_set() and cancelled_at is None:
                self._send({"type": "cancel", "id": request_id})  # llama.cpp's load progress callback sees it
                cancelled_at = time.monotonic()
            reply = self._receive(POLL_S if cancel is not None else 0.5)
            if reply is None:
                if cancelled_at is not None and time.monotonic() - cancelled_at > LOAD_CANCEL_GRACE_S:
                    raise _Cancelled()
                continue
            if reply.get("id") != request_id:
                log.warning("engine host: ignored %s for request %s", reply["type"], reply.get("id"))
                continue
            if reply["type"] == answer:
                return reply
            if reply["type"] == "load_progress":
                if progress is not None:
                    progress(wire.get(reply, "fraction", float))
                continue
            if reply["type"] == "error":
                if not wire.get(reply, "resident", bool):
                    self._forget_model()
                raise wire.error_from_json(reply)
            raise wire.ProtocolError(f"expected {answer}, got {reply['type']}")


class IsolatedBackend(HostProcess):
    """One resident llama.cpp model in an engine host process; every method runs on the engine thread."""

    def __init__(self, command: Sequence[str] | None = None, *, max_crashes: int = MAX_CRASHES) -> None:
        super().__init__(command, max_crashes=max_crashes)
        self._info: ModelInfo | None = None
        self._load_request: LoadRequest | None = None  # what to load again after a crash

    @property
    def model(self) -> ModelInfo | None:
        return self._info

    def _forget_model(self) -> None:
        self._info = None
        self._load_request = None

    def _load_in_host(
        self,
        request: LoadRequest,
        cancel: threading.Event | None,
        started: float,
        progress: Callable[[float], None] | None = None,
    ) -> ModelInfo:
        message = {"type": "load", "id": self._new_id(), "request": wire.load_request_to_json(request)}
        reply = self._call(message, "loaded", cancel, progress)
        info = wire.model_info_from_json(wire.get(reply, "info", dict))
        # What the user waited for includes the host's start.
        info = replace(info, load_seconds=max(info.load_seconds, time.monotonic() - started))
        self._info = info
        self._load_request = request
        return info

    def _ready(self) -> None:
        """Make sure a host with the model is running: after a crash, start one and load the model again."""
        if self._info is None or self._load_request is None:
            raise EngineError(NO_MODEL)
        if self._alive():
            return
        if self._crashes >= self._max_crashes:
            raise EngineError(
                f"The model stopped unexpectedly {self._crashes} times in a row, so Enclave will not load it again "
                "by itself. Open it again to retry, or choose another model."
            )
        log.warning("engine host is not running: starting it and loading %s again", self._info.name)
        request = self._load_request
        try:
            self._start()
            self._load_in_host(request, None, time.monotonic())
        except (HostDied, wire.ProtocolError) as exc:
            raise EngineCrashedError(self._crashed(exc)) from exc
        except (OSError, EngineError) as exc:
            self._stop()
            self._forget_model()
            raise EngineError(f"The model could not be loaded again: {exc}") from exc

    # --- Backend ----------------------------------------------------------------------------------------------------

    def load(
        self,
        request: LoadRequest,
        cancel: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> ModelInfo:
        self._crashes = 0  # the user asked for this model: automatic reloads may start over
        started = time.monotonic()
        if not self._alive():
            self._forget_model()
            try:
                self._start()
            except (OSError, EngineError) as exc:
                self._stop()
                raise ModelLoadError(f"The engine process could not be started: {exc}") from exc
        try:
            return self._load_in_host(request, cancel, started, progress)
        except (HostDied, wire.ProtocolError) as exc:
            self._forget_model()  # whatever was loaded went down with the host
            raise ModelLoadCrashedError(self._crashed(exc)) from exc
        except _Cancelled as exc:
            self._stop()  # llama.cpp did not stop loading in time: the host goes, and the model with it
            self._forget_model()
            raise ModelLoadCancelled(f"Loading {Path(request.path).name} was cancelled.") from exc

    def unload(self) -> None:
        """Free the model by ending the host (a later load starts a new one)."""
        self._stop(graceful=True)
        self._forget_model()

    def close(self) -> None:
        self.unload()

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        reply = self._request({"type": "tokenize", "text": text, "special": special}, "tokens")
        tokens = wire.get(reply, "tokens", list)
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise EngineError("The engine process sent a malformed answer.")
        return tokens

    def count_tokens(self, text: str) -> int:
        return wire.get(self._request({"type": "count_tokens", "text": text}, "count"), "count", int)

    def _request(self, message: dict[str, Any], answer: str) -> dict[str, Any]:
        self._ready()
        try:
            return self._call({**message, "id": self._new_id()}, answer)
        except (HostDied, wire.ProtocolError) as exc:
            raise EngineCrashedError(self._crashed(exc)) from exc

    def stream_chat(self, request: GenerationRequest, control: GenerationControl) -> Iterator[StreamEvent]:
        self._ready()
        request_id = self._new_id()
        cancel_sent = answer_now_sent = done = False
        try:
            self._mark()
            self._send({"type": "generate", "id": request_id, "request": wire.generation_request_to_json(request)})
            while True:
                if control.cancel.is_set() and not cancel_sent:
                    self._send({"type": "cancel", "id": request_id})
                    cancel_sent = True
                if control.answer_now.is_set() and not answer_now_sent:
                    self._send({"type": "answer_now", "id": request_id})
                    answer_now_sent = True
                message = self._receive(POLL_S)
                if message is None:
                    continue
                if message.get("id") != request_id:
                    log.warning("engine host: ignored %s for request %s", message["type"], message.get("id"))
                    continue
                kind = message["type"]
                if kind == "batch_progress":
                    if control.progress is not None:
                        control.progress(wire.progress_from_json(message))
                    continue
                if kind == "error":
                    done = True
                    if not wire.get(message, "resident", bool):
                        self._forget_model()
                    raise wire.error_from_json(message)
                event = wire.event_from_json(message)
                if event is None:
                    raise wire.ProtocolError(f"unexpected {kind} in a stream")
                if isinstance(event, Finished):
                    done = True
                    self._crashes = 0
                    yield event
                    return
                yield event
        except (HostDied, wire.ProtocolError) as exc:
            done = True
            raise EngineCrashedError(self._crashed(exc)) from exc
        finally:
            if not done:
                self._abandon(request_id, cancel_sent)

    def _abandon(self, request_id: str, cancel_sent: bool) -> None:
        """The caller stopped reading a stream: stop the generation and read up to its end, so the next request
        starts in step. A host that does not wind down in time is ended (the next request starts a new one)."""
        deadline = time.monotonic() + ABANDON_TIMEOUT_S
        try:
            if not cancel_sent:
                self._send({"type": "cancel", "id": request_id})
            while time.monotonic() < deadline:
                message = self._receive(POLL_S)
                if message is not None and message.get("id") == request_id and message["type"] in ("finished", "error"):
                    return
        except (HostDied, wire.ProtocolError):
            pass
        log.warning("engine host did not finish an abandoned answer: ending it")
        self._stop()


def crash_detail(lines: Sequence[str], code: int | None) -> str:
    """What to quote about a dead host: llama.cpp's abort line, else an error line, else the signal or exit code."""
    for line in reversed(lines):
        match = _ABORT_LINE.search(line.strip())
        if match:
            return _clip(f"{match['where']}:{match['line']}: {match['what']}")
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return _clip(line.strip().removeprefix("what():").strip())  # a C++ exception's message
    return exit_description(code)


def exit_description(code: int | None) -> str:
    if code is None:
        return "the process stopped answering"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    if os.name == "nt" and code >= 0x80000000:
        return f"exit code {code:#010x}"  # Windows reports crashes as NTSTATUS codes (0xC0000005: access violation)
    return f"exit code {code}"


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["HostDied", "HostProcess", "IsolatedBackend", "crash_detail", "exit_description"]
