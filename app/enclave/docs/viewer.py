"""Opening a source at its page: the command for the user's PDF viewer, when that viewer can be told a page.

There is no portable "open this PDF at page N": a ``file://…#page=N`` URL is dropped by most desktop openers. So
for the viewers whose command line takes a page we build that command, using the viewer the desktop has as its
default for PDFs (never a different one just because it is installed); for everything else the caller opens the file
with the desktop's default application, at its first page.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

# Linux desktop-file ids (lower-case, without ".desktop") → how to pass a 1-based page.
_PAGE_ARGS: dict[str, Callable[[str, str, int], list[str]]] = {
    "org.gnome.evince": lambda exe, path, page: [exe, f"--page-index={page}", path],
    "evince": lambda exe, path, page: [exe, f"--page-index={page}", path],
    "atril": lambda exe, path, page: [exe, f"--page-index={page}", path],
    "xreader": lambda exe, path, page: [exe, f"--page-index={page}", path],
    "org.kde.okular": lambda exe, path, page: [exe, "-p", str(page), path],
    "okularapplication_pdf": lambda exe, path, page: [exe, "-p", str(page), path],
    "org.pwmt.zathura": lambda exe, path, page: [exe, "-P", str(page), path],
    "org.pwmt.zathura-pdf-mupdf": lambda exe, path, page: [exe, "-P", str(page), path],
    "org.pwmt.zathura-pdf-poppler": lambda exe, path, page: [exe, "-P", str(page), path],
    "mupdf": lambda exe, path, page: [exe, path, str(page)],
    "qpdfview": lambda exe, path, page: [exe, f"{path}#{page}"],
}
_EXECUTABLES = {
    "org.gnome.evince": "evince",
    "evince": "evince",
    "atril": "atril",
    "xreader": "xreader",
    "org.kde.okular": "okular",
    "okularapplication_pdf": "okular",
    "org.pwmt.zathura": "zathura",
    "org.pwmt.zathura-pdf-mupdf": "zathura",
    "org.pwmt.zathura-pdf-poppler": "zathura",
    "mupdf": "mupdf",
    "qpdfview": "qpdfview",
}


@functools.cache
def default_pdf_app() -> str | None:
    """The desktop's default PDF application id on Linux (``xdg-mime``), lower-cased, or None.

    Asked once per run: it starts a shell script, and the caller is a click on the GUI thread."""
    xdg_mime = shutil.which("xdg-mime")
    if xdg_mime is None:
        return None
    try:
        out = subprocess.run(
            [xdg_mime, "query", "default", "application/pdf"], capture_output=True, text=True, timeout=3, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    name = out.strip().splitlines()[0] if out.strip() else ""
    return name.removesuffix(".desktop").lower() or None


def page_command(
    path: str,
    page: int,
    *,
    platform: str = sys.platform,
    app: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str] | None:
    """The command that opens PDF ``path`` at 1-based ``page`` in the default viewer, or None when there is none we
    know how to ask (then open the file the ordinary way). ``app`` is the default application id (looked up when
    None); ``which`` finds executables (both replaceable in tests)."""
    if page < 1 or not path.lower().endswith(".pdf"):
        return None
    if platform == "win32":
        # SumatraPDF is the common viewer that takes a page; only used when it is the one on PATH.
        sumatra = which("SumatraPDF.exe") or which("SumatraPDF")
        return [sumatra, "-page", str(page), path] if sumatra else None
    if platform.startswith("linux") or "bsd" in platform:
        app = app if app is not None else default_pdf_app()
        if app is None or app not in _PAGE_ARGS:
            return None
        exe = which(_EXECUTABLES[app])
        return _PAGE_ARGS[app](exe, path, page) if exe else None
    return None  # macOS: Preview takes no page on its command line


def launch(command: list[str]) -> None:
    """Start the viewer detached from Enclave (it outlives the app, and its output never reaches ours)."""
    subprocess.Popen(  # a fixed viewer and a local path, no shell
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=os.name == "posix",
    )


__all__ = ["default_pdf_app", "launch", "page_command"]
