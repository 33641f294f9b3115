"""``python -m enclave`` runs the same entry point as the ``enclave`` command."""

import sys

from enclave.cli import main

if __name__ == "__main__":
    sys.exit(main())
