"""Start Enclave itself as a child process, in a source install and in an installer's bundle alike.

A bundled app's executable is not a Python interpreter, so ``multiprocessing``'s spawn and ``python -m`` do not work
there; the app's own executable is started with a subcommand instead (the ``enclave`` CLI handles it).
"""

from __future__ import annotations

import os
import sys
from pathlib import PureWindowsPath


def running_from_bundle() -> bool:
    """True inside a frozen or Briefcase-built app, whose executable is the app's launcher, not ``python``."""
    if getattr(sys, "frozen", False):
        return True
    name = PureWindowsPath(sys.executable).name.lower()  # splits on both / and \\
    return not name.startswith("python")


def child_command(*args: str) -> list[str]:
    """The command line that runs ``enclave ARGS...`` in a new process."""
    override = os.environ.get("ENCLAVE_CHILD_EXECUTABLE")
    if override:
        return [override, *args]
    if running_from_bundle():
        return [sys.executable, *args]
    return [sys.executable, "-m", "enclave", *args]
