"""``enclave chat`` answers one prompt headlessly; ``enclave serve`` serves the model over a local
OpenAI/DeepSeek-compatible API.

llama.cpp and the server are imported inside the handlers, never at module level: building the parser (``enclave
--help``) must not load them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from enclave.cli.exit_codes import ExitCode


def register(subparsers: Any) -> None:
    """Add ``chat`` and ``serve`` (cli._command_groups calls this)."""
    chat = subparsers.add_parser("chat", help="answer one prompt and print it (thinking goes to stderr)")
    chat.add_argument("prompt", help="the question; '-' reads it from standard input")
    chat.add_argument("--model", dest="chat_model", metavar="PATH", required=True, help="GGUF model file")
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--max-tokens", type=int, default=None, metavar="N", help="stop after N generated tokens")
    chat.add_argument("--think-budget", type=int, default=None, metavar="N", help="close thinking after N tokens")
    chat.add_argument("--ctx", type=int, default=None, metavar="N", help="context length (default: Auto, the plan's)")
    chat.add_argument(
        "--gpu-layers", type=int, default=None, metavar="N", help="layers to offload (-1: all; default: Auto)"
    )
    chat.add_argument("--kv-type", choices=("f16", "q8_0", "q4_0"), default=None, help="KV cache type (default: Auto)")
    chat.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    chat.add_argument(
        "--device",
        default=None,
        metavar="NAME",
        help="where the model runs: auto, cpu, or a device `enclave hardware` lists (e.g. Vulkan0); default: Settings",
    )
    chat.add_argument("--show-plan", action="store_true", help="print where the model runs (stderr)")
    chat.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: model's)")
    chat.add_argument("--seed", type=int, default=None, help="random seed for repeatable output")
    chat.add_argument("--json", action="store_true", help="print one JSON object with reasoning, content and stats")
    chat.set_defaults(handler=lambda args: run_chat(args, sys.stdout, sys.stderr))

    serve = subparsers.add_parser(
        "serve", help="serve the model to other programs over an OpenAI- and DeepSeek-compatible API"
    )
    serve.add_argument("--model", dest="serve_model", metavar="PATH_OR_ID", help="GGUF file or installed model id")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this computer)")
    serve.add_argument("--port", type=int, default=11435, help="port (default: 11435; 0 picks a free one)")
    serve.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (default: $ENCLAVE_API_KEY; required "
        "when --host is not a loopback address)",
    )
    serve.add_argument("--ctx", type=int, default=None, metavar="N", help="context length (default: Auto)")
    serve.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    serve.add_argument("--max-tokens", type=int, default=None, metavar="N", help="largest max_tokens a request may ask")
    serve.add_argument(
        "--max-wait", type=float, default=300.0, metavar="S", help="seconds a request may wait for its turn (503 after)"
    )
    serve.set_defaults(handler=lambda args: run_serve(args, sys.stderr))


def _device_choice(device: str | None) -> tuple[str, ...] | None:
    """``--device``: None keeps the setting, "auto" is Auto (()), "cpu" CPU only, else that llama.cpp device."""
    if device is None:
        return None
    if device.lower() == "auto":
        return ()
    return ("CPU",) if device.lower() == "cpu" else (device,)


def _load_failed(path: str, exc: Exception, err: TextIO) -> ExitCode:
    """Say why the model did not load: NOT_FOUND when its file is not there, else MODEL."""
    print(f"enclave: {exc}", file=err)
    return ExitCode.MODEL if Path(path).expanduser().exists() else ExitCode.NOT_FOUND


def _positive(value: int | None, name: str, err: TextIO) -> bool:
    if value is not None and value <= 0:
        print(f"enclave: {name} must be a positive number", file=err)
        return False
    return True


def _serve_model_path(requested: str | None) -> str | None:
    """``--model`` as a file or an installed model's id; without it, the active chat model, then the last one opened."""
    from enclave.models.installed import ModelRegistry
    from enclave.paths import app_paths
    from enclave.usecases.loading import saved_settings

    registry_file = app_paths().models_file
    registry = ModelRegistry(registry_file) if registry_file.exists() else None
    if requested:
        found = registry.find(requested) if registry is not None else None
        return found.path if found is not None else str(Path(requested).expanduser())
    active = registry.active("chat") if registry is not None else None
    return active.path if active is not None else saved_settings().model_path


def run_serve(args: argparse.Namespace, err: TextIO) -> ExitCode:
    import logging
    import os

    from enclave.engine.isolated import IsolatedBackend
    from enclave.engine.types import ModelLoadError
    from enclave.server.app import ServerOptions
    from enclave.server.service import ApiServer, EmbeddingService, ServerConfigError, check_bind
    from enclave.usecases.loading import load_request, model_overrides, saved_settings

    checks = ((args.ctx, "--ctx"), (args.max_tokens, "--max-tokens"), (args.threads, "--threads"))
    if not all(_positive(v, n, err) for v, n in checks):
        return ExitCode.USAGE
    if not 0 <= args.port <= 65535 or args.max_wait <= 0:
        print("enclave: --port must be 0-65535 and --max-wait positive", file=err)
        return ExitCode.USAGE
    api_key = args.api_key or os.environ.get("ENCLAVE_API_KEY") or None
    try:
        check_bind(args.host, api_key)
    except ServerConfigError as exc:
        print(f"enclave: {exc}", file=err)
        return ExitCode.USAGE
    path = _serve_model_path(args.serve_model)
    if not path:
        print("enclave: no model to serve; pass --model PATH_OR_ID (or choose one in the app first)", file=err)
        return ExitCode.USAGE
    logging.basicConfig(level=logging.WARNING, format="enclave: %(message)s")
    # Headless, llama.cpp runs in an engine host process (a crash there ends one answer, not the server);
    # ENCLAVE_ENGINE_IN_PROCESS=1 keeps it in this process, as the app allows for debugging and profiling.
    in_process = os.environ.get("ENCLAVE_ENGINE_IN_PROCESS") == "1"
    if in_process:
        from enclave.engine.llama_backend import LlamaCppBackend

        backend: Any = LlamaCppBackend()
    else:
        backend = IsolatedBackend()
    load = load_request(path, saved_settings(), model_overrides(path), n_ctx=args.ctx, n_threads=args.threads)
    try:
        try:
            info = backend.load(load)
        except ModelLoadError as exc:
            return _load_failed(path, exc, err)
        from enclave.docs.embedder import active_embedding_model_path

        embeddings = EmbeddingService(active_embedding_model_path(), n_threads=args.threads)
        options = ServerOptions(api_key=api_key, max_tokens=args.max_tokens)
        try:
            server = ApiServer(
                backend,
                host=args.host,
                port=args.port,
                options=options,
                embeddings=embeddings,
                max_wait_s=args.max_wait,
            )
        except ServerConfigError as exc:
            print(f"enclave: {exc}", file=err)
            return ExitCode.USAGE
        print(f"enclave: serving {info.name} ({info.placement}) at {server.url}", file=err, flush=True)
        server.serve_forever()
        return ExitCode.OK
    finally:
        if in_process:
            backend.unload()
        else:
            backend.close()


def run_chat(args: argparse.Namespace, out: TextIO, err: TextIO) -> ExitCode:
    from enclave.engine.llama_backend import LlamaCppBackend
    from enclave.engine.types import (
        ChatMessage,
        EngineError,
        Finished,
        GenerationControl,
        ModelLoadError,
        TextDelta,
    )

    if not all(_positive(v, n, err) for v, n in ((args.max_tokens, "--max-tokens"), (args.ctx, "--ctx"))):
        return ExitCode.USAGE
    if args.think_budget is not None and args.think_budget < 0:
        print("enclave: --think-budget must be 0 or more", file=err)
        return ExitCode.USAGE
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    from enclave.usecases.chat import chat_request
    from enclave.usecases.loading import load_request, model_overrides, saved_settings

    settings = saved_settings()
    backend = LlamaCppBackend()
    # The same load the app asks for: settings, then this model's own overrides, then these flags; the rest is Auto.
    load = load_request(
        args.chat_model,
        settings,
        model_overrides(args.chat_model),
        n_ctx=args.ctx,
        n_gpu_layers=args.gpu_layers,
        kv_cache_type=args.kv_type,
        n_threads=args.threads,
        devices=_device_choice(args.device),
    )
    try:
        info = backend.load(load)
    except ModelLoadError as exc:
        return _load_failed(args.chat_model, exc, err)
    if args.show_plan:
        print(f"enclave: {info.name}: {info.placement}", file=err)
    # The request the app would send: the model's sampling, then the saved settings, then these flags.
    messages = [ChatMessage("system", args.system)] if args.system else []
    messages.append(ChatMessage("user", prompt))
    request = chat_request(
        messages,
        info,
        settings,
        temperature=args.temperature,
        seed=args.seed,
        max_tokens=args.max_tokens,
        think_budget=args.think_budget,
    )
    control = GenerationControl()
    previous = signal.signal(signal.SIGINT, lambda *_: control.cancel.set())  # Ctrl+C stops cleanly
    reasoning: list[str] = []
    content: list[str] = []
    finished: Finished | None = None
    try:
        for event in backend.stream_chat(request, control):
            if isinstance(event, TextDelta):
                reasoning.append(event.reasoning)
                content.append(event.content)
                if not args.json:
                    if event.reasoning:
                        err.write(event.reasoning)
                        err.flush()
                    if event.content:
                        out.write(event.content)
                        out.flush()
            elif isinstance(event, Finished):
                finished = event
    except EngineError as exc:
        print(f"\nenclave: {exc}", file=err)
        return ExitCode.GENERATION
    finally:
        signal.signal(signal.SIGINT, previous)
        backend.unload()
    assert finished is not None
    if args.json:
        stats = asdict(finished.stats)
        stats["tokens_per_second"] = finished.stats.tokens_per_second
        json.dump(
            {
                "model": info.name,
                "chat_format": info.chat_format,
                "placement": info.placement,
                "context_size": info.n_ctx,
                "reasoning": "".join(reasoning),
                "content": "".join(content),
                "finish_reason": finished.reason.value,
                "stats": stats,
            },
            out,
            ensure_ascii=False,
        )
        out.write("\n")
    else:
        out.write("\n")
    return ExitCode.INTERRUPTED if finished.reason.value == "cancelled" else ExitCode.OK
