"""Run the test suite with no network: pytest inside a new network namespace that has only a loopback interface.

The README's test command ends with this script, and CI runs that command verbatim, so a newcomer and CI run the
suite the same way. ``unshare -n`` needs root; ``unshare -rn`` (a user namespace) works unprivileged where the system
allows it. Where neither is permitted the suite runs with the network present and says so, except in CI
(``CI=true``), where that is a failure: CI exists to prove the tests need no network.

Arguments are passed to pytest: ``.venv/bin/python tests/run_offline.py -k engine -x``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys


def _namespace_prefix() -> tuple[list[str] | None, str]:
    """The unshare command line that works here, or None and why nothing does."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None, "the unshare command is not installed (util-linux)"
    if shutil.which("ip") is None:
        return None, "the ip command is not installed (iproute2), so the loopback interface cannot be brought up"
    reasons = []
    for flags in (["-n"], ["-rn"]):
        probe = subprocess.run([unshare, *flags, "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [unshare, *flags], ""
        reasons.append(f"unshare {' '.join(flags)}: {probe.stderr.strip() or f'exit {probe.returncode}'}")
    return None, "; ".join(reasons)


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", *argv]
    prefix, why = _namespace_prefix()
    if prefix is None:
        if os.environ.get("CI", "").lower() == "true":
            print(f"run_offline: cannot run the tests without network here ({why}); CI fails.", file=sys.stderr)
            return 1
        print(f"run_offline: running with the network present ({why}).", file=sys.stderr)
        return subprocess.call(pytest)
    script = f"ip link set lo up && exec {shlex.join(pytest)}"
    print(f"run_offline: {' '.join(prefix)} (no network, loopback only)", file=sys.stderr, flush=True)
    return subprocess.call([*prefix, "sh", "-c", script])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
