"""Resumable, verified model downloads.

Each file streams into ``<models>/.partial/<repo>/<path>.part`` with HTTP Range, so an interrupted download (a dropped
connection, a pause, a killed app) continues where it stopped; huggingface-hub's own downloader may start again
from zero. The sha256 is computed while writing (and over the existing part when resuming) and checked before the
file is moved into place with an atomic rename: a file under its final name is always complete and verified.

A matching sha256 proves only that the bytes are the ones the Hub published, not that they are a model. So, before
``download_files`` returns (and so before anything is registered), every ``.gguf`` among the files gets the same header
check an imported model gets (``engine.gguf_check.check_gguf_file``: magic, version, counts, every tensor inside the
file, every shard present); a file that fails it is deleted and the download refused with the reason.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from enclave.models.hub_client import RemoteFile, file_url

CHUNK = 1 << 20
DISK_MARGIN = 256 << 20  # keep this much free beyond the download itself
PROGRESS_INTERVAL_S = 0.2  # ~5 Hz: enough for a smooth bar, few enough signals for the GUI
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


class DownloadError(Exception):
    """A download failed; the message says why and what to do."""


class ChecksumError(DownloadError):
    pass


class DiskFullError(DownloadError):
    pass


class DownloadCancelled(DownloadError):
    pass


class DownloadPaused(DownloadError):
    pass


class NotAModelError(DownloadError):
    """The file arrived intact (its sha256 matches the Hub's) but is not a usable GGUF model."""


@dataclass
class DownloadControl:
    pause: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class DownloadProgress:
    file: str
    file_index: int
    file_count: int
    bytes_done: int  # over all files of the model
    bytes_total: int
    speed_bps: float
    eta_s: float | None


ProgressCallback = Callable[[DownloadProgress], None]


def final_path(models_dir: Path, repo_id: str, path: str) -> Path:
    return models_dir / repo_id / path


def partial_path(models_dir: Path, repo_id: str, path: str) -> Path:
    return models_dir / ".partial" / repo_id / f"{path}.part"


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GB"


class _Meter:
    def __init__(self, files: Sequence[RemoteFile], done: int, callback: ProgressCallback | None) -> None:
        self.total = sum(f.size for f in files)
        self.done = done
        self.count = len(files)
        self.callback = callback
        self.started = time.monotonic()
        self.start_bytes = done
        self.last = 0.0

    def update(self, name: str, index: int, added: int, force: bool = False) -> None:
        self.done += added
        now = time.monotonic()
        if self.callback is None or (not force and now - self.last < PROGRESS_INTERVAL_S):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        speed = (self.done - self.start_bytes) / elapsed
        eta = (self.total - self.done) / speed if speed > 0 else None
        self.callback(DownloadProgress(name, index, self.count, self.done, self.total, speed, eta))


def download_files(
    repo_id: str,
    commit: str,
    files: Sequence[RemoteFile],
    models_dir: Path,
    *,
    token: str | None = None,
    control: DownloadControl | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[Path]:
    """Download every file (all shards of a model) and return their final paths, verified."""
    control = control or DownloadControl()
    models_dir.mkdir(parents=True, exist_ok=True)
    remaining = 0
    already = 0
    for remote in files:
        final = final_path(models_dir, repo_id, remote.path)
        if final.is_file() and final.stat().st_size == remote.size:
            already += remote.size
            continue
        part = partial_path(models_dir, repo_id, remote.path)
        have = part.stat().st_size if part.is_file() else 0
        already += min(have, remote.size)
        remaining += max(remote.size - have, 0)
    free = shutil.disk_usage(models_dir).free
    if remaining + DISK_MARGIN > free:
        raise DiskFullError(
            f"This model needs {_gib(remaining)} more disk space but only {_gib(free)} is free in {models_dir}. "
            "Free some space or choose another models folder."
        )
    meter = _Meter(files, already, on_progress)
    paths = []
    for index, remote in enumerate(files):
        paths.append(_download_one(repo_id, commit, remote, models_dir, index, token, control, meter))
    _check_models(files, paths)
    meter.update(files[-1].path if files else "", len(files) - 1, 0, force=True)
    return paths


def _check_models(files: Sequence[RemoteFile], paths: Sequence[Path]) -> None:
    """The header check an imported model gets, on every downloaded ``.gguf`` (also those kept from an earlier run,
    so a file moved into place just before a crash is checked too). It runs once all shards are in place, because the
    first shard's check asks for every other one. A file that fails is deleted; nothing has been registered yet."""
    from enclave.engine.gguf_check import ModelLoadError, check_gguf_file

    for remote, path in zip(files, paths, strict=True):
        if path.suffix.lower() != ".gguf":
            continue
        try:
            check_gguf_file(path)
        except ModelLoadError as exc:
            path.unlink(missing_ok=True)
            raise NotAModelError(
                f"The download of {remote.path} was refused and the file deleted: it arrived intact (its sha256 "
                f"matches the Hub's) but it is not a usable model. {exc}"
            ) from exc


def _download_one(
    repo_id: str,
    commit: str,
    remote: RemoteFile,
    models_dir: Path,
    index: int,
    token: str | None,
    control: DownloadControl,
    meter: _Meter,
) -> Path:
    final = final_path(models_dir, repo_id, remote.path)
    if final.is_file() and final.stat().st_size == remote.size:
        return final  # verified when it was moved into place
    part = partial_path(models_dir, repo_id, remote.path)
    part.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    if part.is_file():
        if part.stat().st_size > remote.size:
            part.unlink()
        else:
            with part.open("rb") as handle:
                while block := handle.read(CHUNK):
                    hasher.update(block)
    url = file_url(repo_id, remote.path, commit)
    attempt = 0
    while True:
        try:
            hasher = _stream(url, part, remote, hasher, token, control, meter, index)
            break
        except DownloadError:  # cancelled, paused, disk full, refused: retrying would not help
            raise
        except (OSError, http.client.HTTPException) as exc:  # dropped connection, timeout, reset
            if attempt >= len(RETRY_DELAYS_S):
                raise DownloadError(
                    f"The download of {remote.path} keeps failing ({exc}). It will continue from "
                    f"{_gib(part.stat().st_size if part.exists() else 0)} when you try again."
                ) from exc
            time.sleep(RETRY_DELAYS_S[attempt])
            attempt += 1
    size = part.stat().st_size
    if size != remote.size:
        raise DownloadError(f"{remote.path} arrived with {size:,} bytes instead of {remote.size:,}. Try again.")
    if remote.sha256 is not None and hasher.hexdigest() != remote.sha256.lower():
        part.unlink()
        raise ChecksumError(
            f"{remote.path} is damaged: its sha256 does not match the one the Hub published. The broken file was "
            "deleted; download it again."
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    return final


class _NoTokenAcrossHosts(urllib.request.HTTPRedirectHandler):
    """The Hub redirects downloads to a CDN: the Hugging Face token must not follow to another host."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_opener = urllib.request.build_opener(_NoTokenAcrossHosts)


def _write(out: IO[bytes], block: bytes) -> None:
    """One place where downloaded bytes hit the disk (tests make it fail with ENOSPC)."""
    out.write(block)


def _stream(
    url: str,
    part: Path,
    remote: RemoteFile,
    hasher: hashlib._Hash,
    token: str | None,
    control: DownloadControl,
    meter: _Meter,
    index: int,
) -> hashlib._Hash:
    start = part.stat().st_size if part.is_file() else 0
    if start == remote.size:
        return hasher
    headers = {"User-Agent": "Enclave", "Range": f"bytes={start}-", "Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _opener.open(request, timeout=30)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start == remote.size:
            return hasher
        if exc.code in (401, 403):
            raise DownloadError(
                "The Hub refused the download (HTTP "
                f"{exc.code}): this model needs a Hugging Face token with access, or your token was revoked. "
                "Add or renew it in Settings → Models."
            ) from exc
        if exc.code == 404:
            raise DownloadError(f"{remote.path} was not found on the Hub (HTTP 404).") from exc
        raise DownloadError(f"The Hub answered HTTP {exc.code} for {remote.path}. Try again later.") from exc
    with response:
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type:
            raise DownloadError(
                f"The server sent a web page instead of {remote.path} (a login page, a proxy or a rate limit). "
                "Check the network and try again."
            )
        if response.status == 200 and start > 0:
            # The server ignored Range: start this file again from the first byte.
            hasher = hashlib.sha256()
            meter.update(remote.path, index, -start)
            start = 0
            mode = "wb"
        elif response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                raise DownloadError(f"The server resumed {remote.path} at the wrong place ({content_range!r}).")
            mode = "ab"
        else:
            mode = "wb" if start == 0 else "ab"
        first = True
        with part.open(mode) as out:
            while True:
                if control.cancel.is_set():
                    out.close()
                    part.unlink(missing_ok=True)
                    raise DownloadCancelled("Download cancelled.")
                if control.pause.is_set():
                    raise DownloadPaused("Download paused; it will continue from here.")
                block = response.read(CHUNK)
                if not block:
                    break
                if first and start == 0 and block[:15].lstrip().lower().startswith((b"<!doctype", b"<html")):
                    raise DownloadError(
                        f"The server sent a web page instead of {remote.path}. Check the network and try again."
                    )
                first = False
                try:
                    _write(out, block)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise DiskFullError(
                            "The disk filled up during the download. Free some space and try again: it will "
                            "continue where it stopped."
                        ) from exc
                    raise
                hasher.update(block)
                meter.update(remote.path, index, len(block))
        if part.stat().st_size < remote.size:
            raise ConnectionResetError(f"connection closed after {part.stat().st_size:,} bytes")
    return hasher
