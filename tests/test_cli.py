"""``enclave`` on the command line, run as a user would: a separate process, real model, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from enclave import __version__


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


def test_not_a_gguf_exits_3(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("this is a text file, not a model\n" * 10)
    result = enclave("chat", "--model", str(fake), "hi")
    assert result.returncode == 3
    assert "not a GGUF model file" in result.stderr


def test_bad_arguments_exit_2(gemma_path: Path) -> None:
    assert enclave("chat", "--model", str(gemma_path), "--max-tokens", "0", "hi").returncode == 2
    assert enclave("chat", "hi").returncode == 2  # --model is required
