"""The architecture's one hard rule: Qt lives in workers/ and ui/ only.

The core (engine, models, docs, storage, settings, server) must run headless: in the CLI, in CI, and in the API server.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "app" / "enclave"
QT_FREE = ("engine", "models", "docs", "storage", "settings", "server")
QT_MODULES = ("PySide6", "shiboken6", "PyQt5", "PyQt6")
GUI_PACKAGES = ("enclave.ui", "enclave.workers")


def imported_modules(path: Path, *, top_level_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _offends(module: str, banned: tuple[str, ...]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


def core_files() -> list[Path]:
    return sorted(p for pkg in QT_FREE for p in (PACKAGE / pkg).rglob("*.py"))


def top_level_files() -> list[Path]:
    """The package's own modules and the command line (cli/): entry points that start the GUI only lazily."""
    return sorted([*PACKAGE.glob("*.py"), *(PACKAGE / "cli").rglob("*.py")])


def test_the_layout_exists() -> None:
    for pkg in (*QT_FREE, "workers", "ui", "cli"):
        assert (PACKAGE / pkg / "__init__.py").is_file(), pkg
    assert len(core_files()) > 10


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_modules_never_import_qt_or_gui_code(path: Path) -> None:
    bad = [
        f"line {line}: {mod}"
        for line, mod in imported_modules(path, top_level_only=False)
        if _offends(mod, QT_MODULES + GUI_PACKAGES)
    ]
    assert not bad, f"{path.name} crosses the Qt boundary: {bad}"


@pytest.mark.parametrize("path", top_level_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_entry_modules_import_the_gui_lazily(path: Path) -> None:
    bad = [
        f"line {line}: {mod}"
        for line, mod in imported_modules(path, top_level_only=True)
        if _offends(mod, QT_MODULES + GUI_PACKAGES)
    ]
    assert not bad, f"{path.name} imports Qt at module level: {bad}"


def test_importing_the_core_loads_no_qt() -> None:
    modules = [
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in [*core_files(), *top_level_files()]
        if p.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"leaked = sorted(m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r})\n"
        "print(','.join(leaked))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt was loaded by the core: {out.stdout}"


def test_the_command_line_loads_neither_qt_nor_llama_cpp() -> None:
    """``enclave --help`` and ``--version`` stay fast, and the GUI process (which starts through ``enclave.cli``)
    never loads llama.cpp itself: building the whole parser imports neither."""
    code = (
        "import sys\n"
        "import enclave.cli\n"
        "enclave.cli.build_parser()\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'llama_cpp'))\n"
        "print(','.join(leaked))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the command line loaded: {out.stdout}"


def test_core_packages_hold_no_command_line_code() -> None:
    """The CLI lives in enclave/cli/ only: the core never imports it, nor argparse (no handlers in models/, docs/)."""
    bad = [
        f"{path.relative_to(PACKAGE)} line {line}: {mod}"
        for path in core_files()
        for line, mod in imported_modules(path, top_level_only=False)
        if _offends(mod, ("enclave.cli", "argparse"))
    ]
    assert not bad, bad
