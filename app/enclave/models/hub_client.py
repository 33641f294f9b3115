"""What a model repository holds at a pinned revision: files, sizes, LFS sha256 — asked of the Hugging Face Hub.

Nothing here runs until the user asks for a download or a catalog refresh. The endpoint and offline mode are read
from the environment at each call (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``), so tests and mirrors work without restarts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class HubError(Exception):
    """A failure talking to the Hub, in words the user can act on."""


class OfflineError(HubError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # the LFS object id; None for small non-LFS files


@dataclass(frozen=True)
class RepoSnapshot:
    repo_id: str
    commit: str  # the resolved commit: downloads use it, so a re-upload cannot change files mid-download
    files: tuple[RemoteFile, ...]

    def file(self, path: str) -> RemoteFile:
        for remote in self.files:
            if remote.path == path:
                return remote
        raise HubError(f"{self.repo_id} has no file {path} at revision {self.commit[:12]}.")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's "could not connect / timed out" errors: huggingface_hub 0.x uses requests (its errors are
    OSErrors), 1.x httpx and 2.x httpx2 (theirs are not)."""
    import importlib

    found: list[type[Exception]] = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def fetch_snapshot(repo_id: str, revision: str, token: str | None = None, timeout: float = 30.0) -> RepoSnapshot:
    """File list with sizes and sha256 for ``repo_id`` at ``revision``, via huggingface_hub's model_info."""
    if offline():
        raise OfflineError("Enclave is in offline mode (HF_HUB_OFFLINE is set): downloads are turned off.")
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    # huggingface_hub 2.x otherwise probes {endpoint fixed at import}/api/agent-harnesses for its User-Agent — the
    # public Hub even when HF_ENDPOINT names a mirror. The user asked for this model's metadata, nothing else.
    constants.HF_HUB_DISABLE_TELEMETRY = True
    api = HfApi(endpoint=endpoint(), token=token or False)
    unreachable: tuple[type[Exception], ...] = (OSError, *_transport_errors())
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
    except GatedRepoError as exc:
        raise HubError(f"{repo_id} requires accepting its license on the Hub and a Hugging Face token.") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(
            f"{repo_id} was not found on the Hub (or it is private and needs a Hugging Face token)."
        ) from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{repo_id} has no revision {revision}.") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"The Hub answered with an error for {repo_id}: {exc}") from exc
    except unreachable as exc:
        raise HubError(f"Could not reach the Hub ({endpoint()}): {exc}. Check the internet connection.") from exc
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        sha = lfs.sha256 if lfs is not None else None
        size = lfs.size if lfs is not None else (sibling.size or 0)
        files.append(RemoteFile(sibling.rfilename, int(size), sha))
    if not info.sha:
        raise HubError(f"The Hub did not say which commit {repo_id}@{revision} is.")
    return RepoSnapshot(repo_id, info.sha, tuple(files))


def file_url(repo_id: str, path: str, commit: str) -> str:
    from huggingface_hub import hf_hub_url

    return str(hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint()))
