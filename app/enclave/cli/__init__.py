"""The command line: ``enclave`` opens the app; the subcommands work headlessly, for scripts and support.

Each area adds its own subcommands (``register(subparsers)`` sets ``handler=fn(args) -> ExitCode``):

- ``chat.py``   ``enclave chat`` (one answer) and ``enclave serve`` (the local API)
- ``models.py`` ``enclave hardware`` and ``enclave models recommend|fit`` (it owns the ``models`` group)
- ``manage.py`` ``enclave models list|download|import|remove|use``
- ``docs.py``   ``enclave docs add|search|list|remove|folders|rescan``
- ``exit_codes.py`` the one table of exit codes every command returns

Nothing here imports Qt or llama.cpp at module level: the GUI is imported only when it is about to be shown, and the
engine only by the command that loads a model, so ``enclave --version`` and ``--help`` stay fast, scripts and CI run
without a display, and the GUI process never loads llama.cpp itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from enclave import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclave", description="Run DeepSeek R1 privately on this computer. Without a command, opens the app."
    )
    parser.add_argument("--version", action="version", version=f"Enclave {__version__}")
    parser.add_argument("--model", metavar="PATH", help="open the app with this GGUF model")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    for register in _command_groups():
        register(commands)

    # The engine host (engine/host.py): the GUI's llama.cpp runs in it. Added without help, then taken out of the
    # listing: on Python < 3.13 help=SUPPRESS on a subcommand prints "==SUPPRESS==" instead of hiding it.
    host = commands.add_parser("engine-host")
    host.set_defaults(handler=lambda args: _serve_engine())
    commands._choices_actions = [a for a in commands._choices_actions if a.dest != "engine-host"]
    return parser


def _serve_engine() -> int:
    from enclave.engine.host import serve

    return serve()


def _command_groups() -> list[Callable[[Any], None]]:
    """Each area's ``register(subparsers)``, in the order ``enclave --help`` lists them."""
    from enclave.cli import chat, docs, models

    return [chat.register, models.register, docs.register]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    from enclave.ui.app import run_gui  # the one import of the GUI (see the import-linter contracts)

    return run_gui(model_path=args.model)
