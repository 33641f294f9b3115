"""``enclave`` on the command line, run as a user would: a separate process, real model, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from enclave import __version__
from enclave.cli.exit_codes import ExitCode

README = Path(__file__).resolve().parents[1] / "README.md"


def enclave(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enclave", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_version() -> None:
    result = enclave("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"Enclave {__version__}"


def test_chat_streams_the_answer_to_stdout(gemma_path: Path, tmp_path: Path) -> None:
    # Greedy and single-threaded, so the streamed run and the --json run below produce the same tokens.
    settings = ["--model", str(gemma_path), "--max-tokens", "24", "--temperature", "0", "--seed", "3", "--threads", "1"]
    prompt = "Tell me about the ocean."
    stderr_path = tmp_path / "stderr.txt"
    pieces: list[tuple[bytes, bool]] = []  # (what one read returned, whether the process was still running after it)
    with stderr_path.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "enclave", "chat", *settings, prompt],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        try:
            while piece := os.read(child.stdout.fileno(), 65536):  # returns whatever has arrived, as it arrives
                pieces.append((piece, child.poll() is None))
            assert child.wait(timeout=120) == 0, stderr_path.read_text()
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
    streamed = b"".join(piece for piece, _ in pieces).decode()
    assert streamed.endswith("\n") and streamed.strip()
    # The answer came in several pieces, and they were readable while the model was still generating.
    words_while_running = [piece for piece, running in pieces if running and piece.strip()]
    assert len(words_while_running) >= 2, pieces
    # Put together, the pieces are exactly the answer the same settings give as one JSON object.
    answer = enclave("chat", *settings, "--json", prompt)
    assert answer.returncode == 0, answer.stderr
    data = json.loads(answer.stdout)
    assert data["finish_reason"] == "length" and data["stats"]["completion_tokens"] == 24
    assert streamed == data["content"] + "\n"
    # llama.cpp's own log lines are routed to logging, not dumped between the model's words.
    errors = stderr_path.read_text()
    assert "llama_" not in errors and "ggml" not in errors


def test_chat_json_has_reasoning_content_and_stats(gemma_path: Path) -> None:
    result = enclave(
        "chat", "--model", str(gemma_path), "--max-tokens", "8", "--temperature", "0", "--json", "-", stdin="Hello!"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "Gemma 3 270m"
    assert data["chat_format"] == "Gemma (fallback)"
    assert data["content"]
    assert data["reasoning"] == ""
    assert data["finish_reason"] == "length"
    assert data["stats"]["completion_tokens"] == 8
    assert data["stats"]["tokens_per_second"] > 0


def test_missing_model_exits_3_with_a_clear_message(tmp_path: Path) -> None:
    result = enclave("chat", "--model", str(tmp_path / "nope.gguf"), "hi")
    assert result.returncode == 3
    assert "Model file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_not_a_gguf_exits_4(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("this is a text file, not a model\n" * 10)
    result = enclave("chat", "--model", str(fake), "hi")
    assert result.returncode == 4
    assert "not a GGUF model file" in result.stderr


def test_bad_arguments_exit_2(gemma_path: Path) -> None:
    assert enclave("chat", "--model", str(gemma_path), "--max-tokens", "0", "hi").returncode == 2
    assert enclave("chat", "hi").returncode == 2  # --model is required


# --- the exit-code table ----------------------------------------------------------------------------------------


def test_each_exit_code_has_one_number_and_keeps_it() -> None:
    # Scripts branch on these numbers: changing one breaks them. Add new codes; never renumber.
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "NOT_FOUND": 3,
        "MODEL": 4,
        "NOTHING_FITS": 5,
        "NETWORK": 6,
        "GENERATION": 7,
        "INTERRUPTED": 130,
    }


def test_the_readme_lists_every_exit_code() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Exit codes") :]
    section = section[: section.index("\n#", 1)]
    rows = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*`(\w+)`\s*\|", section, re.MULTILINE))
    assert rows == {str(code.value): code.name for code in ExitCode}


def test_a_message_longer_than_the_context_exits_7(gemma_path: Path) -> None:
    # The model loads; answering fails (the one message cannot fit a 512-token context): a generation failure.
    result = enclave("chat", "--model", str(gemma_path), "--ctx", "512", "--max-tokens", "4", "word " * 3000)
    assert result.returncode == ExitCode.GENERATION == 7, result.stderr[-2000:]
    assert "fit in the model's context" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_stops_the_answer_and_exits_130(gemma_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "enclave", "chat", "--model", str(gemma_path), "--ctx", "1024", "--max-tokens", "400",
         "--temperature", "0", "Tell me a long story about a lighthouse keeper."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert child.stdout is not None
        first = child.stdout.read(1)  # the answer has started streaming
        assert first, child.stderr.read().decode() if child.stderr else ""
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == ExitCode.INTERRUPTED == 130, err.decode()[-2000:]
    assert b"Traceback" not in err


def test_a_download_that_cannot_reach_the_hub_exits_6(tmp_path: Path) -> None:
    from enclave.models.catalog import load_catalog

    with socket.socket() as probe:  # a local port nobody listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ENCLAVE_HOME": str(tmp_path / "home"), "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    result = subprocess.run(
        [sys.executable, "-m", "enclave", "models", "download", load_catalog().chat()[0].id],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == ExitCode.NETWORK == 6, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
