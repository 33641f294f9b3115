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
    return sorted(PACKAGE.glob("*.py"))


def test_the_layout_exists() -> None:
    for pkg in (*QT_FREE, "workers", "ui"):
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


@pytest.mark.parametrize("path", top_level_files(), ids=lambda p: p.name)
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
