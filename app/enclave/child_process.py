"""Start Enclave itself as a child process, from a source install and from an installer's bundle alike.

An installed app's executable is not a Python interpreter: Briefcase (and PyInstaller) start the app through a small
launcher whose ``sys.executable`` is that launcher, so ``multiprocessing``'s spawn and ``python -m`` do not work
there. Children run the app's own entry point with a subcommand instead (``enclave docs parse-server``), which works
in both cases. Qt-free, so the core and the CLI can use it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import PureWindowsPath

# python, python3, python3.12, pythonw.exe, python3.13t, pypy3 ...: interpreters that accept ``-m``.
_INTERPRETER = re.compile(r"(python|pypy)[0-9.]*[dtw]*(\.exe)?", re.IGNORECASE)
# Names the executable to start instead of detecting it (tests, or an unusual launcher).
OVERRIDE_ENV = "ENCLAVE_CHILD_EXECUTABLE"


def running_from_bundle(executable: str | None = None) -> bool:
    """True inside a frozen or Briefcase-built app, whose executable is the app's launcher rather than Python."""
    if getattr(sys, "frozen", False):
        return True
    name = PureWindowsPath(executable if executable is not None else sys.executable).name  # splits on / and \\
    return _INTERPRETER.fullmatch(name) is None


def child_command(*args: str) -> list[str]:
    """The command line that runs ``enclave ARGS...`` in a new process."""
    override = os.environ.get(OVERRIDE_ENV)
    if override:
        return [override, *args]
    if running_from_bundle():
        return [sys.executable, *args]
    return [sys.executable, "-m", "enclave", *args]
