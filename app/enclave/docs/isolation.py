"""Read files in a child process, so a hostile or broken file can cost at most that process.

Parsing libraries are C code (PDFium, libxml2) fed with whatever the user dropped on the app. In-process, a file that
makes one spin forever, eat all memory or crash would freeze or kill the app. In a child process, the time limit is
enforced by killing the child, a memory cap applies to it alone, and a crash is reported for that one file; the next
file gets a fresh child. One child is reused across files, so the start-up cost (~0.3 s) is paid once per session.

The child is the app's own entry point (``enclave docs parse-server``, started through ``child_command`` so it works
in a source checkout and in an installed bundle). It listens on a ``multiprocessing.connection`` listener (a Unix
socket, or a named pipe on Windows) with a random key; the parent polls the connection with a timeout, which works on
every platform without helper threads. Messages are JSON, never pickle: a child subverted by a hostile file must not
be able to run code in the app by what it sends back, and the reply's size is capped before it is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Protocol

from enclave.docs.limits import DEFAULT_LIMITS, Limits
from enclave.docs.parsers import Heading, Page, ParsedDocument, ParseStatus, kind_of, parse_file

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0


def _encode_request(path: Path, limits: Limits) -> bytes:
    return json.dumps({"path": str(path), "limits": dataclasses.asdict(limits)}).encode()


def _decode_request(data: bytes) -> tuple[Path, Limits]:
    message = json.loads(data)
    return Path(message["path"]), Limits(**message["limits"])


def _encode_result(result: ParsedDocument) -> bytes:
    return json.dumps(
        {
            "path": result.path,
            "kind": result.kind,
            "status": result.status.value,
            "pages": [[p.number, p.text] for p in result.pages],
            "error": result.error,
            "page_count": result.page_count,
            "title": result.title,
            "headings": [[h.page, h.start, h.level, h.title] for h in result.headings],
        },
        ensure_ascii=False,
    ).encode("utf-8", errors="surrogatepass")


def _decode_result(data: bytes) -> ParsedDocument:
    """Rebuild the result from plain JSON, checking every type: the child is not trusted."""
    message = json.loads(data.decode("utf-8", errors="replace"))
    pages = tuple(Page(int(number), str(text)) for number, text in message["pages"])
    error, page_count = message["error"], message["page_count"]
    headings = tuple(
        Heading(int(page), int(start), int(level), str(title))
        for page, start, level, title in message.get("headings", [])
    )
    return ParsedDocument(
        path=str(message["path"]),
        kind=str(message["kind"]),
        status=ParseStatus(message["status"]),
        pages=pages,
        error=None if error is None else str(error),
        page_count=None if page_count is None else int(page_count),
        title=str(message.get("title", "")),
        headings=headings,
    )


class FileParser(Protocol):
    """Parses one file at a time, without blocking longer than asked: ``submit`` then ``poll`` until a result."""

    def submit(self, path: Path, limits: Limits) -> None: ...

    def poll(self, timeout: float) -> ParsedDocument | None: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class InProcessParser:
    """Parses in the calling thread (tests, scripts): limits apply, but the time limit only between pages."""

    def __init__(self, parse: Callable[[Path, Limits], ParsedDocument] = parse_file) -> None:
        self._parse = parse
        self._pending: tuple[Path, Limits] | None = None
        self.calls = 0  # files parsed (tests check that unchanged files are not)

    def submit(self, path: Path, limits: Limits) -> None:
        self._pending = (path, limits)

    def poll(self, timeout: float) -> ParsedDocument | None:
        if self._pending is None:
            return None
        path, limits = self._pending
        self._pending = None
        self.calls += 1
        return self._parse(path, limits)

    def cancel(self) -> None:
        self._pending = None

    def close(self) -> None:
        self._pending = None


class IsolatedParser:
    """Parses in a child process with a hard time limit; falls back to in-process parsing if no child can start."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        if command is None:
            from enclave.child_process import child_command

            command = child_command("docs", "parse-server")
        self._command = list(command)
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._pending: tuple[Path, Limits, float] | None = None  # path, limits, deadline
        self._fallback: InProcessParser | None = None
        self.calls = 0
        self.restarts = 0

    # --- child lifecycle ----------------------------------------------------------------------------------------

    def _start(self) -> Connection:
        if self._conn is not None and self._process is not None and self._process.poll() is None:
            return self._conn
        self._stop()
        key = secrets.token_bytes(32)
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window flashing up on Windows
        process = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            creationflags=flags,
        )
        self._process = process
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(key.hex().encode() + b"\n")
            process.stdin.close()
            if os.name == "posix":  # Windows cannot wait on a pipe; there the child's start is trusted
                import select

                ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT_S)
                if not ready:
                    raise OSError(f"the parser process did not start within {STARTUP_TIMEOUT_S:.0f} s")
            address = process.stdout.readline().decode("utf-8", errors="replace").strip()
            process.stdout.close()
            if not address:
                raise OSError(f"the parser process exited with code {process.wait(timeout=5)}")
            self._conn = Client(address, authkey=key)
        except BaseException:
            self._stop()
            raise
        self.restarts += 1
        return self._conn

    def _stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    # --- parsing ------------------------------------------------------------------------------------------------

    def submit(self, path: Path, limits: Limits) -> None:
        if self._pending is not None:
            raise RuntimeError("a file is already being parsed")
        self.calls += 1
        if self._fallback is None:
            try:
                self._start().send_bytes(_encode_request(path, limits))
                self._pending = (path, limits, time.monotonic() + limits.max_seconds)
                return
            except (OSError, EOFError, ValueError) as exc:
                log.warning("documents will be read in-process: the parser process did not start (%s)", exc)
                self._stop()
                self._fallback = InProcessParser()
        self._fallback.submit(path, limits)

    def poll(self, timeout: float) -> ParsedDocument | None:
        if self._fallback is not None:
            return self._fallback.poll(timeout)
        if self._pending is None or self._conn is None:
            return None
        path, limits, deadline = self._pending
        wait = max(0.0, min(timeout, deadline - time.monotonic()))
        try:
            ready = self._conn.poll(wait)
            if ready:
                # Text is at most max_chars characters of up to 4 UTF-8 bytes, plus JSON escaping and page numbers.
                data = self._conn.recv_bytes(maxlength=limits.max_chars * 8 + (1 << 20))
                self._pending = None
                return _decode_result(data)
        except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
            self._pending = None
            code = self._process.poll() if self._process is not None else None
            self._stop()
            log.warning("the parser process stopped on %s (%s, exit code %s)", path, exc, code)
            return ParsedDocument(
                str(path),
                kind_of(path) or "unknown",
                ParseStatus.DAMAGED,
                error="Reading this file crashed the document reader; the file is probably damaged or hostile.",
            )
        if time.monotonic() >= deadline:
            self._pending = None
            self._stop()  # the only way to stop C code that does not return
            return ParsedDocument(
                str(path),
                kind_of(path) or "unknown",
                ParseStatus.TIMEOUT,
                error=f"Reading this file took longer than {limits.max_seconds:.0f} s; it was stopped.",
            )
        return None

    def parse(self, path: Path, limits: Limits = DEFAULT_LIMITS) -> ParsedDocument:
        """Blocking convenience: submit and wait."""
        self.submit(path, limits)
        while True:
            result = self.poll(0.5)
            if result is not None:
                return result

    def cancel(self) -> None:
        """Abandon the file being read (the child is killed if it is busy; a fresh one starts for the next file)."""
        if self._pending is not None:
            self._pending = None
            self._stop()
        if self._fallback is not None:
            self._fallback.cancel()

    def close(self) -> None:
        self._pending = None
        self._stop()


def _limit_memory(limit: int) -> None:
    try:
        import resource
    except ImportError:  # Windows
        return
    with contextlib.suppress(ValueError, OSError, AttributeError):
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def serve(parse: Callable[[Path, Limits], ParsedDocument] = parse_file) -> int:
    """The child's side: read the key from stdin, print the listener's address, answer requests until EOF."""
    key = bytes.fromhex(sys.stdin.readline().strip())
    with Listener(authkey=key) as listener:
        print(listener.address, flush=True)
        # Nothing else may write to the pipe the parent stopped reading: a full pipe would block the child.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        conn = listener.accept()
    memory_limit = 0
    with conn:
        while True:
            try:
                path, limits = _decode_request(conn.recv_bytes())
            except (EOFError, OSError):
                return 0
            if limits.max_memory_bytes != memory_limit:
                memory_limit = limits.max_memory_bytes
                _limit_memory(memory_limit)
            conn.send_bytes(_encode_result(parse(path, limits)))


__all__ = ["FileParser", "InProcessParser", "IsolatedParser", "serve"]
