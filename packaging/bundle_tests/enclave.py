"""Test entry point of the bundle: in test mode Briefcase starts ``tests.enclave`` instead of the app.

Briefcase reads the result from the ">>>>>>>>>> EXIT n <<<<<<<<<<" line this prints. Arguments after ``--`` on the
Briefcase command line reach pytest (``dev --test -- -k storage``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def run_tests() -> int:
    # A bundle's stub starts the module named here; children the tests start must run the app, not the tests again.
    os.environ.pop("BRIEFCASE_MAIN_MODULE", None)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # CI machines have no display
    here = Path(__file__).parent
    code = int(pytest.main(["-vv", "--color=no", "-p", "no:cacheprovider", str(here), *sys.argv[1:]]))
    print(f">>>>>>>>>> EXIT {code} <<<<<<<<<<", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(run_tests())
