"""Stage a Briefcase project from pyproject.toml + briefcase.toml, then run Briefcase in it.

    python packaging/briefcase_project.py dev --test          # run the bundle's smoke tests in dev mode
    python packaging/briefcase_project.py create|build|package [briefcase args...]
    python packaging/briefcase_project.py stage                # only write build/briefcase/

Briefcase reads a single pyproject.toml. Ours describes the Python package (for pip), and briefcase.toml holds what
only installers need; this script joins them into build/briefcase/pyproject.toml, so no setting is written twice:
- [project] is the root's, with the dynamic version resolved from enclave.__version__ and the test extra dropped
  (the bundle runs its own smoke tests, listed in briefcase.toml's test_requires);
- [tool.briefcase] is briefcase.toml;
- the sources (app/enclave), icons, license and bundle tests are copied in beside it.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "briefcase"
APP_NAME = "enclave"


def read_version() -> str:
    """enclave.__version__, read without importing the package (it may not be installed where this runs)."""
    tree = ast.parse((ROOT / "app" / "enclave" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    raise SystemExit("app/enclave/__init__.py has no __version__ string")


def staged_config(root: Path = ROOT) -> dict[str, Any]:
    """The merged configuration, as a dict (tests read it without writing anything)."""
    with (root / "pyproject.toml").open("rb") as handle:
        project = dict(tomllib.load(handle)["project"])
    with (root / "briefcase.toml").open("rb") as handle:
        briefcase = tomllib.load(handle)
    project["version"] = read_version()
    project["dynamic"] = [d for d in project.get("dynamic", []) if d != "version"] or None
    if project["dynamic"] is None:
        del project["dynamic"]
    project.pop("optional-dependencies", None)  # the bundle's tests declare their own needs in briefcase.toml
    project.pop("scripts", None)  # a bundle is started by its own launcher
    project.pop("readme", None)
    project["license-files"] = ["LICENSE.txt"]
    app = briefcase["app"][APP_NAME]
    args = list(app.get("requirement_installer_args", []))
    for i, arg in enumerate(args[:-1]):
        if arg == "--find-links" and not Path(args[i + 1]).is_absolute():
            args[i + 1] = str(root / args[i + 1])  # pip runs in Briefcase's own folders, not at the repository root
    app["requirement_installer_args"] = args
    # Its own pytest section, so the bundle's smoke tests never pick up the source tree's test configuration.
    pytest_config = {"testpaths": ["tests"], "addopts": "-p no:cacheprovider"}
    return {"project": project, "tool": {"briefcase": briefcase, "pytest": {"ini_options": pytest_config}}}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else toml_value(key)


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer (tomllib only reads): scalars and lists first, then sub-tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, table in tables:
        name = f"{prefix}.{toml_key(key)}" if prefix else toml_key(key)
        body = dump_toml(table, name)
        out += f"\n[{name}]\n{body}"
    return out


def stage(target: Path = STAGE) -> Path:
    """Write the Briefcase project to ``target`` and return its pyproject.toml."""
    config = staged_config()
    target.mkdir(parents=True, exist_ok=True)
    src = target / "src" / APP_NAME
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "app" / APP_NAME, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tests = target / "tests"
    if tests.exists():
        shutil.rmtree(tests)
    shutil.copytree(ROOT / "packaging" / "bundle_tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    icons = target / "icons"
    if icons.exists():
        shutil.rmtree(icons)
    shutil.copytree(ROOT / "resources" / "icons", icons)
    shutil.copyfile(ROOT / "resources" / "LICENSE.txt", target / "LICENSE.txt")
    shutil.copyfile(ROOT / "README.md", target / "README.md")
    pyproject = target / "pyproject.toml"
    header = "# Generated by packaging/briefcase_project.py from pyproject.toml + briefcase.toml. Do not edit.\n"
    pyproject.write_text(header + dump_toml(config), encoding="utf-8")
    (ROOT / "wheelhouse").mkdir(exist_ok=True)  # requirement_installer_args point here; may hold llama.cpp wheels
    return pyproject


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", help="stage, or a Briefcase command: dev, create, build, package, run, update")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed on to Briefcase")
    options = parser.parse_args(argv)
    pyproject = stage()
    print(f"staged {pyproject.relative_to(ROOT)}")
    if options.command == "stage":
        return 0
    briefcase = shutil.which("briefcase") or str(Path(sys.executable).with_name("briefcase"))
    command = [briefcase, options.command, *options.args]
    print("+", " ".join(command), f"(in {STAGE.relative_to(ROOT)})")
    return subprocess.call(command, cwd=STAGE)


if __name__ == "__main__":
    sys.exit(main())
