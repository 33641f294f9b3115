"""Stage a Briefcase project from pyproject.toml + briefcase.toml, then run Briefcase in it.

    python packaging/briefcase_project.py dev --test             # the bundle's smoke tests in dev mode
    python packaging/briefcase_project.py build linux system --test
    python packaging/briefcase_project.py package macOS app --update --adhoc-sign
    python packaging/briefcase_project.py stage                  # only write build/briefcase/
    python packaging/briefcase_project.py apt-packages           # Debian packages the .deb build and tests need
    python packaging/briefcase_project.py check-config windows app  # Briefcase's own checks of the staged config
    python packaging/briefcase_project.py --template ../shared/briefcase-templates/linux-system create linux system

Run it with the Python that has Briefcase installed (``pip install briefcase``): Briefcase is started as
``python -m briefcase``, so the llama.cpp wheel picked from wheelhouse/ matches the Python the bundle gets.

Briefcase reads a single pyproject.toml. Ours describes the Python package (for pip) and briefcase.toml what only
installers need; this script joins them in build/briefcase/pyproject.toml, so nothing is written twice:
- [project] is the root's, with the version resolved from enclave.__version__ and, of the test extra, only what the
  bundle's smoke tests need (the full suite's extras include a 253 MB model and the linters);
- [tool.briefcase] is briefcase.toml, plus the llama-cpp-python wheel from wheelhouse/ in requires (a local file, so
  Briefcase also copies it into Docker builds, where a --find-links folder would not be visible);
- the sources (app/enclave), icons, license, changelog, bundle tests and Linux desktop metadata are copied in.

--template DIR (or $ENCLAVE_BRIEFCASE_TEMPLATE) sets the app's Briefcase ``template`` to a local copy of the platform
template, for machines that cannot fetch it from GitHub; without it Briefcase downloads its default template.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "briefcase"
WHEELHOUSE = ROOT / "wheelhouse"
APP_NAME = "enclave"
# Of pyproject's test extra, what packaging/bundle_tests needs.
BUNDLE_TEST_PACKAGES = ("pytest",)
# Briefcase commands that build a bundle: these must install the llama.cpp wheel built for the installer's backend.
BUNDLE_COMMANDS = ("create", "update", "build", "run", "package")
LOCAL_COMMANDS = ("stage", "apt-packages", "check-config")


def read_version(root: Path = ROOT) -> str:
    """enclave.__version__, read without importing the package (it may not be installed where this runs)."""
    tree = ast.parse((root / "app" / APP_NAME / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    raise SystemExit("app/enclave/__init__.py has no __version__ string")


def requirement_name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement ("PyTest[x]>=8" -> "pytest")."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def llama_wheels(wheelhouse: Path | None = None) -> list[Path]:
    """llama-cpp-python wheels in the wheelhouse that this Python can install.

    They are tagged py3 (llama.cpp is loaded with ctypes, there is no extension module); a cpXY tag is accepted too.
    """
    ours = {
        "py3",
        f"py{sys.version_info.major}{sys.version_info.minor}",
        f"cp{sys.version_info.major}{sys.version_info.minor}",
    }
    wheels = (wheelhouse or WHEELHOUSE).glob("llama_cpp_python-*.whl")
    return sorted(w for w in wheels if ours & set(w.name.removesuffix(".whl").split("-")[-3].split(".")))


def load_briefcase_toml(root: Path = ROOT) -> dict[str, Any]:
    with (root / "briefcase.toml").open("rb") as handle:
        return tomllib.load(handle)


def staged_config(root: Path = ROOT, wheels: list[Path] | None = None, template: Path | None = None) -> dict[str, Any]:
    """The merged configuration as a dict: [project] from pyproject.toml, [tool.briefcase] from briefcase.toml."""
    with (root / "pyproject.toml").open("rb") as handle:
        project = dict(tomllib.load(handle)["project"])
    briefcase = load_briefcase_toml(root)
    project["version"] = read_version(root)
    project["dynamic"] = [d for d in project.get("dynamic", []) if d != "version"]
    if not project["dynamic"]:
        del project["dynamic"]
    test_extra = project.pop("optional-dependencies", {}).get("test", [])
    bundle_tests = [r for r in test_extra if requirement_name(r) in BUNDLE_TEST_PACKAGES]
    if bundle_tests:
        project["optional-dependencies"] = {"test": bundle_tests}  # Briefcase makes this its test_requires
    project.pop("scripts", None)  # a bundle is started by its own launcher
    project.pop("readme", None)  # the README is not copied into the bundle
    project["license-files"] = ["LICENSE.txt"]
    app = briefcase["app"][APP_NAME]
    if wheels:
        app["requires"] = [*app.get("requires", []), *(str(w) for w in wheels)]
    if template is not None:
        app["template"] = str(template.resolve())  # Briefcase ignores template_branch for a local folder
    # Its own pytest section, so the bundle's smoke tests never pick up the source tree's test configuration.
    pytest_config = {"testpaths": ["tests"], "addopts": "-p no:cacheprovider"}
    return {"project": project, "tool": {"briefcase": briefcase, "pytest": {"ini_options": pytest_config}}}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer (tomllib only reads): a table's keys first, then its sub-tables."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "".join(line + "\n" for line in lines)
    for key, table in data.items():
        if isinstance(table, dict):
            name = f"{prefix}.{toml_key(key)}" if prefix else toml_key(key)
            out += f"\n[{name}]\n" + dump_toml(table, name)
    return out


def stamp_metainfo(text: str, version: str, date: datetime.date) -> str:
    """Add this version's <release> to the AppStream metadata, so the version lives only in enclave.__version__."""
    release = f'  <releases>\n    <release version="{version}" date="{date.isoformat()}"/>\n  </releases>\n'
    return text.replace("</component>", release + "</component>")


def copy_tree(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))


def stage(target: Path = STAGE, wheels: list[Path] | None = None, template: Path | None = None) -> Path:
    """Write the Briefcase project to ``target`` and return its pyproject.toml."""
    config = staged_config(wheels=wheels, template=template)
    target.mkdir(parents=True, exist_ok=True)
    copy_tree(ROOT / "app" / APP_NAME, target / "src" / APP_NAME)
    copy_tree(ROOT / "packaging" / "bundle_tests", target / "tests")
    copy_tree(ROOT / "resources" / "icons", target / "icons")
    shutil.copyfile(ROOT / "resources" / "LICENSE.txt", target / "LICENSE.txt")
    shutil.copyfile(ROOT / "packaging" / "CHANGELOG.md", target / "CHANGELOG.md")  # Briefcase requires one
    # Desktop entry and AppStream metadata for distribution packages and Flathub, with this release stamped in.
    linux = target / "linux"
    copy_tree(ROOT / "packaging" / "linux", linux)
    for metainfo in linux.glob("*.metainfo.xml"):
        text = stamp_metainfo(metainfo.read_text(encoding="utf-8"), config["project"]["version"], datetime.date.today())
        metainfo.write_text(text, encoding="utf-8")
    pyproject = target / "pyproject.toml"
    header = "# Generated by packaging/briefcase_project.py from pyproject.toml + briefcase.toml. Do not edit.\n"
    pyproject.write_text(header + dump_toml(config), encoding="utf-8")
    return pyproject


def apt_packages(root: Path = ROOT) -> list[str]:
    """Debian packages Briefcase checks for before building (and running) the .deb on this machine."""
    debian = load_briefcase_toml(root)["app"][APP_NAME]["linux"]["system"]["debian"]
    base = ["python3-dev", "python3-venv", "build-essential"]  # Briefcase's own baseline for Debian-based builds
    return [*base, *debian.get("system_requires", []), *debian.get("system_runtime_requires", [])]


def check_config(pyproject: Path, platform: str, output_format: str) -> dict[str, Any]:
    """Briefcase's own parsing and finalizing of the staged project for one target, without building anything.

    It runs on any system, so the Windows and macOS configuration is checked on Linux CI: the merged settings must
    make a complete app config for that format (Briefcase raises on a missing or invalid field) and give the values
    its installer template would get. Returns what the installer would be built from.
    """
    from briefcase.console import Console
    from briefcase.platforms import get_output_formats

    command = get_output_formats(platform)[output_format].create(console=Console(), base_path=pyproject.parent)
    command.parse_config(pyproject, overrides={})
    app = command.finalize_app_config(command.apps[APP_NAME])
    icon_suffix = {"windows": ".ico", "macOS": ".icns"}.get(platform)
    if icon_suffix and not (pyproject.parent / f"{app.icon}{icon_suffix}").is_file():
        raise SystemExit(f"{platform} {output_format}: no {app.icon}{icon_suffix}")
    context = command.output_format_template_context(app)
    return {
        "app_id": f"{app.bundle}.{app.app_name}",
        "formal_name": app.formal_name,
        "version": app.version,
        "requires": app.requires,
        **{
            key: getattr(app, key)
            for key in ("min_os_version", "universal_build", "system_installer")
            if hasattr(app, key)
        },
        **{key: str(value) for key, value in context.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--template",
        type=Path,
        default=os.environ.get("ENCLAVE_BRIEFCASE_TEMPLATE") or None,
        help="a local Briefcase platform template folder (default $ENCLAVE_BRIEFCASE_TEMPLATE, else GitHub's)",
    )
    parser.add_argument("command", help="stage, apt-packages, or a Briefcase command (dev, create, build, run, ...)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed on to Briefcase")
    options = parser.parse_args(argv)
    if options.command == "apt-packages":
        print(" ".join(apt_packages()))
        return 0
    wheels = llama_wheels()
    if len(wheels) > 1:
        raise SystemExit(f"more than one llama-cpp-python wheel in {WHEELHOUSE}; keep one: {[w.name for w in wheels]}")
    if not wheels and options.command in BUNDLE_COMMANDS:
        raise SystemExit(
            f"no llama-cpp-python wheel for this Python in {WHEELHOUSE}: run packaging/build_llama_wheels.py first "
            "(installers must not compile llama.cpp for the build machine's CPU)"
        )
    for wheel in wheels:
        print(f"llama.cpp: {wheel}")
    template = options.template
    if template is not None and not (template / "cookiecutter.json").is_file():
        raise SystemExit(f"{template} is not a Briefcase template (no cookiecutter.json)")
    pyproject = stage(wheels=wheels, template=template)
    print(f"staged {pyproject.relative_to(ROOT)}")
    if options.command == "check-config":
        if len(options.args) != 2:
            raise SystemExit("usage: briefcase_project.py check-config PLATFORM FORMAT (e.g. windows app)")
        for key, value in check_config(pyproject, *options.args).items():
            print(f"  {key} = {value}")
        print(f"{' '.join(options.args)}: configuration complete")
        return 0
    if options.command in LOCAL_COMMANDS:
        return 0
    if importlib.util.find_spec("briefcase") is None:
        raise SystemExit(f"Briefcase is not installed for {sys.executable}: pip install briefcase")
    command = [sys.executable, "-m", "briefcase", options.command, *options.args]
    print("+", " ".join(command), f"(in {STAGE.relative_to(ROOT)})", flush=True)
    try:
        return subprocess.call(command, cwd=STAGE)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
