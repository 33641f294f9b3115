"""A local stand-in for the Hugging Face Hub on 127.0.0.1, for download tests (never the real Hub).

It answers what huggingface_hub's ``model_info(files_metadata=True)`` asks (``/api/models/{repo}/revision/{rev}``)
and serves ``/{repo}/resolve/{rev}/{path}`` with Range support, plus faults on demand: drop the connection after N
bytes, flip one byte, answer with an HTML page, refuse with 401, or ignore Range. ``write_tiny_gguf`` makes small but
valid model files for it to serve (downloads get the same GGUF header check as imports, so random bytes are refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_tiny_gguf(path: Path, data_bytes: int = 3 * 1024 * 1024, *, shards: int = 1) -> list[Path]:
    """A small, valid GGUF written with gguf-py: F32 tensors filled with random bytes (so a byte served at the wrong
    offset still changes the sha256), ``data_bytes`` of tensor data in all. With ``shards`` > 1 it is a llama.cpp-style
    split (``stem-00001-of-0000N.gguf`` beside ``path``, one tensor per shard, ``split.*`` keys); returns every file."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch="llama", split_max_tensors=1 if shards > 1 else 0)
    writer.add_name(path.stem)
    per_tensor = data_bytes // shards // 4
    for i in range(shards):
        writer.add_tensor(f"blk.{i}.ffn_up.weight", np.frombuffer(os.urandom(per_tensor * 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if shards == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i:05d}-of-{shards:05d}.gguf") for i in range(1, shards + 1)]


@dataclass
class Faults:
    drop_after: int | None = None  # close the connection after this many body bytes (once)
    corrupt_at: int | None = None  # flip the byte at this offset of the file
    html: bool = False
    status: int | None = None  # e.g. 401
    ignore_range: bool = False


@dataclass
class FakeHub:
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # repo -> path -> local file
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    authorization: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization header)
    redirect_to: str | None = None  # answer file requests with a 302 to this base URL (a "CDN")
    bytes_sent: int = 0
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, repo: str, path: str, local: Path) -> None:
        self.files.setdefault(repo, {})[path] = local

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                hub.authorization.append((path, self.headers.get("Authorization")))
                api = re.fullmatch(r"/api/models/(.+)/revision/([^/]+)", path)
                if api:
                    return self._info(api.group(1))
                resolve = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", path)
                if resolve:
                    if hub.redirect_to is not None:
                        self.send_response(302)
                        self.send_header("Location", hub.redirect_to + path)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    return self._file(resolve.group(1), resolve.group(3), head)
                self.send_error(404)

            def _info(self, repo: str) -> None:
                if repo not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.end_headers()
                    return
                siblings = []
                for name, local in hub.files[repo].items():
                    data = local.read_bytes()
                    sha = hashlib.sha256(data).hexdigest()
                    siblings.append(
                        {
                            "rfilename": name,
                            "size": len(data),
                            "blobId": hashlib.sha1(data).hexdigest(),
                            "lfs": {"sha256": sha, "size": len(data), "pointerSize": 134},
                        }
                    )
                body = json.dumps({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, repo: str, name: str, head: bool) -> None:
                faults = hub.faults
                if faults.status:
                    self.send_error(faults.status)
                    return
                if faults.html:
                    page = b"<!DOCTYPE html><html><body>Please log in</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                local = hub.files.get(repo, {}).get(name)
                if local is None:
                    self.send_error(404)
                    return
                data = bytearray(local.read_bytes())
                if faults.corrupt_at is not None:
                    data[faults.corrupt_at] ^= 0xFF
                start = 0
                requested = self.headers.get("Range")
                if requested and not faults.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))  # type: ignore[union-attr]
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", '"' + hashlib.sha256(bytes(data)).hexdigest() + '"')
                self.end_headers()
                if head:
                    return
                body = memoryview(data)[start:]
                limit = faults.drop_after
                if limit is not None:
                    faults.drop_after = None  # only once
                    self.wfile.write(body[:limit])
                    hub.bytes_sent += min(limit, len(body))
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                try:
                    for i in range(0, len(body), 1 << 20):
                        self.wfile.write(body[i : i + (1 << 20)])
                        hub.bytes_sent += len(body[i : i + (1 << 20)])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client paused or cancelled: that is its right

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-hub", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(5)
