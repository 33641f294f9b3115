"""``enclave docs add|search|list|remove`` end to end, in a subprocess, with the real MiniLM model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enclave.docs.ingest import DEFAULT_COLLECTION

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return minilm_gguf.cached_model_path()


def test_docs_cli(minilm_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "taxes.md").write_text("# Taxes\n\nThe annual income tax return is due on the fifteenth of April.\n")
    (folder / "bread.txt").write_text("Knead the dough for ten minutes and let it rise for two hours.\n")
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "scan.heic").write_bytes(b"\x00")
    env = {**os.environ, "ENCLAVE_HOME": str(tmp_path / "home"), "ENCLAVE_EMBEDDING_MODEL": str(minilm_path)}

    def enclave(*args: str, model: bool = True) -> subprocess.CompletedProcess[str]:
        run_env = env if model else {k: v for k, v in env.items() if k != "ENCLAVE_EMBEDDING_MODEL"}
        return subprocess.run(
            [sys.executable, "-m", "enclave", "docs", *args], capture_output=True, text=True, env=run_env, timeout=120
        )

    added = enclave("add", str(folder), "--json")
    assert added.returncode == 0, added.stderr
    statuses = {Path(o["path"]).name: o for o in json.loads(added.stdout)}
    assert {name: o["status"] for name, o in statuses.items()} == {
        "scan.heic": "skipped",
        "taxes.md": "ok",
        "bread.txt": "ok",
        "broken.docx": "damaged",
    }
    assert statuses["broken.docx"]["error"] and statuses["taxes.md"]["chunks"] == 1

    again = enclave("add", str(folder))
    assert again.returncode == 0 and again.stdout.count("unchanged") == 3

    found = json.loads(enclave("search", "When is my tax declaration due?", "--json", "--k", "2").stdout)
    assert Path(found[0]["path"]).name == "taxes.md" and found[0]["page"] == 1
    assert {"path", "page", "score", "text", "start", "end", "relevant"} <= set(found[0])
    assert "fifteenth of April" in found[0]["text"] and found[0]["relevant"]
    text = enclave("search", "rising dough", "--k", "1").stdout
    assert text.startswith("[1] ") and "bread.txt, page 1" in text
    unrelated = enclave("search", "Who painted the Mona Lisa?").stdout
    assert unrelated.startswith("Nothing relevant was found")
    keyword_only = enclave("search", "knead", "--json", model=False)
    assert "keywords only" in keyword_only.stderr
    assert Path(json.loads(keyword_only.stdout)[0]["path"]).name == "bread.txt"

    listed = {Path(d["path"]).name: d for d in json.loads(enclave("list", "--json").stdout)}
    assert set(listed) == {"taxes.md", "bread.txt", "broken.docx"}
    assert listed["broken.docx"]["status"] == "damaged" and listed["taxes.md"]["chunks"] == 1

    assert enclave("remove", str(folder / "taxes.md")).returncode == 0
    assert enclave("remove", str(folder / "taxes.md")).returncode == 3
    removed = enclave("remove", str(listed["bread.txt"]["id"]), "--json")
    assert removed.returncode == 0 and json.loads(removed.stdout) == {"removed": 1}
    assert [Path(d["path"]).name for d in json.loads(enclave("list", "--json").stdout)] == ["broken.docx"]
    assert enclave("add", str(tmp_path / "nowhere")).returncode == 3
    assert enclave("search", "x", "--k", "0").returncode == 2


def test_docs_folders_and_rescan(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "taxes.md").write_text("The annual income tax return is due on the fifteenth of April.\n")
    (folder / "bread.txt").write_text("Knead the dough for ten minutes and let it rise for two hours.\n")
    env = {k: v for k, v in os.environ.items() if k != "ENCLAVE_EMBEDDING_MODEL"}  # keywords only: no model needed
    env["ENCLAVE_HOME"] = str(tmp_path / "home")

    def enclave(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "enclave", "docs", *args], capture_output=True, text=True, env=env, timeout=120
        )

    nothing = enclave("rescan")
    assert nothing.returncode == 0 and "no folders are watched" in nothing.stderr
    assert enclave("folders").stdout.startswith("No folders are watched")
    assert enclave("add", str(folder), "--collection", "Notes").returncode == 0
    assert enclave("add", str(folder / "bread.txt")).returncode == 0  # a single file is not watched
    assert json.loads(enclave("folders", "--json").stdout) == [
        {"collection": "Notes", "path": str(folder.resolve()), "exists": True}
    ]
    assert enclave("folders").stdout == f"Notes: {folder.resolve()}\n"

    (folder / "taxes.md").unlink()
    (folder / "pancakes.md").write_text("Let the pancake batter rest for thirty minutes.\n")
    rescanned = enclave("rescan", "--json")
    assert rescanned.returncode == 0, rescanned.stderr
    assert {Path(o["path"]).name: o["status"] for o in json.loads(rescanned.stdout)} == {
        "taxes.md": "removed",
        "bread.txt": "unchanged",
        "pancakes.md": "ok",
    }
    listed = {(d["collection"], Path(d["path"]).name) for d in json.loads(enclave("list", "--json").stdout)}
    assert listed == {("Notes", "bread.txt"), ("Notes", "pancakes.md"), (DEFAULT_COLLECTION, "bread.txt")}
    assert "unchanged" in enclave("rescan").stdout

    folder.rename(tmp_path / "unplugged")
    gone = enclave("rescan")
    assert gone.returncode == 3 and gone.stdout.startswith("missing") and "not found" in gone.stdout
    assert enclave("folders").stdout.endswith("(not found)\n")
    assert len(json.loads(enclave("list", "--json").stdout)) == 3  # its documents are kept


def test_the_internal_reader_subcommand_is_not_listed(capsys: pytest.CaptureFixture[str]) -> None:
    from enclave.cli import main

    with pytest.raises(SystemExit):
        main(["docs", "--help"])
    listing = capsys.readouterr().out
    assert "rescan" in listing and "parse-server" not in listing and "SUPPRESS" not in listing
