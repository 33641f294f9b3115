"""The exit status of every ``enclave`` command: one table, one meaning per number.

Scripts branch on these, so a number never changes meaning; README.md ("Exit codes") lists them for users, and
tests/test_cli.py checks that it lists every one.
"""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # anything else, said in the message (e.g. another Enclave holds the list of installed models);
    # also an unexpected error (a bug): Python's own status for an uncaught exception, with its traceback
    USAGE = 2  # bad arguments or options; argparse uses 2 as well
    NOT_FOUND = 3  # a file, folder, document, installed model or catalog entry named on the command line is not there
    MODEL = 4  # the model exists but cannot be used: not a valid GGUF, fails to load, no such device, broken embedder
    NOTHING_FITS = 5  # no model (variant) fits this computer, or the hardware described
    NETWORK = 6  # a download failed: network, Hugging Face, or a file that did not verify
    GENERATION = 7  # the model loaded, but generating the answer failed
    INTERRUPTED = 130  # stopped with Ctrl+C (128 + SIGINT, as shells report it)
