"""Test entry point for the bundled app: Briefcase runs ``python -m tests.enclave`` with ``--test``.

Briefcase reads the exit code from the ">>>>>>>>>> EXIT n <<<<<<<<<<" line this prints.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def run_tests() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    here = Path(__file__).parent
    code = int(pytest.main(["-vv", "--color=no", "-p", "no:cacheprovider", str(here), *sys.argv[1:]]))
    print(f">>>>>>>>>> EXIT {code} <<<<<<<<<<")
    return code


if __name__ == "__main__":
    sys.exit(run_tests())
