"""File writes that never leave half a file behind, and the one way a damaged data file is set aside."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, os.replace: a crash leaves the old file or the new one, never half."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if os.name == "posix":
        # Make the rename itself durable; best effort (some filesystems refuse to fsync directories).
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def quarantine_name(path: Path, sidecars: tuple[str, ...] = ()) -> Path:
    """The first free ``<name>.corrupt-<YYYYmmdd-HHMMSS>[-N]`` beside ``path`` (free for its ``sidecars`` too)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while any(Path(f"{target}{suffix}").exists() for suffix in ("", *sidecars)):
        counter += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    return target


def quarantine(path: Path, *, sqlite_sidecars: bool = False) -> Path:
    """Move a damaged data file aside so a fresh one can be started; returns where it went.

    The file becomes ``<name>.corrupt-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when that name is taken), in the same
    folder. Nothing is ever deleted: the user's data stays there for recovery tools. With ``sqlite_sidecars``, the
    SQLite side files (``-wal``, ``-shm``, ``-journal``) that exist go along with it, renamed to match: a stale WAL or
    journal next to a fresh database would be replayed into it. Raises OSError when the file itself cannot be moved;
    a side file that cannot be moved is left where it is.
    """
    path = Path(path)
    sidecars = SQLITE_SIDECARS if sqlite_sidecars else ()
    target = quarantine_name(path, sidecars)
    os.replace(path, target)
    for suffix in sidecars:
        with contextlib.suppress(OSError):  # absent (the usual case) or cannot be moved: best effort
            os.replace(f"{path}{suffix}", f"{target}{suffix}")
    return target
