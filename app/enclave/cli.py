"""Command line: ``enclave`` opens the app; ``enclave chat`` answers one prompt headlessly; ``enclave serve`` serves the
model over a local OpenAI/DeepSeek-compatible API.

This module stays Qt-free: the GUI is imported only when it is about to be shown, so scripts and CI can use the engine
without a display.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any, TextIO

from enclave import __version__

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_GENERATION = 4
EXIT_INTERRUPTED = 130


def _device_choice(device: str | None) -> tuple[str, ...] | None:
    """``--device``: None keeps the setting, "auto" is Auto (()), "cpu" CPU only, else that llama.cpp device."""
    if device is None:
        return None
    if device.lower() == "auto":
        return ()
    return ("CPU",) if device.lower() == "cpu" else (device,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclave", description="Run DeepSeek R1 privately on this computer. Without a command, opens the app."
    )
    parser.add_argument("--version", action="version", version=f"Enclave {__version__}")
    parser.add_argument("--model", metavar="PATH", help="open the app with this GGUF model")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    chat = commands.add_parser("chat", help="answer one prompt and print it (thinking goes to stderr)")
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

    serve = commands.add_parser(
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
    """Each area adds its own subcommands: ``register(subparsers)`` sets ``handler=fn(args) -> exit code``."""
    from enclave.docs.cli_commands import register as register_docs
    from enclave.models.cli_commands import register as register_models

    return [register_models, register_docs]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    from enclave.ui.app import run_gui

    return run_gui(model_path=args.model)


def _positive(value: int | None, name: str, err: TextIO) -> bool:
    if value is not None and value <= 0:
        print(f"enclave: {name} must be a positive number", file=err)
        return False
    return True


def _serve_model_path(requested: str | None) -> str | None:
    """``--model`` as a file or an installed model's id; without it, the active chat model, then the last one opened."""
    from pathlib import Path

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


def run_serve(args: argparse.Namespace, err: TextIO) -> int:
    import logging
    import os

    from enclave.engine.isolated import IsolatedBackend
    from enclave.engine.types import ModelLoadError
    from enclave.server.app import ServerOptions
    from enclave.server.service import ApiServer, EmbeddingService, ServerConfigError, check_bind
    from enclave.usecases.loading import load_request, model_overrides, saved_settings

    checks = ((args.ctx, "--ctx"), (args.max_tokens, "--max-tokens"), (args.threads, "--threads"))
    if not all(_positive(v, n, err) for v, n in checks):
        return EXIT_USAGE
    if not 0 <= args.port <= 65535 or args.max_wait <= 0:
        print("enclave: --port must be 0-65535 and --max-wait positive", file=err)
        return EXIT_USAGE
    api_key = args.api_key or os.environ.get("ENCLAVE_API_KEY") or None
    try:
        check_bind(args.host, api_key)
    except ServerConfigError as exc:
        print(f"enclave: {exc}", file=err)
        return EXIT_USAGE
    path = _serve_model_path(args.serve_model)
    if not path:
        print("enclave: no model to serve; pass --model PATH_OR_ID (or choose one in the app first)", file=err)
        return EXIT_USAGE
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
            print(f"enclave: {exc}", file=err)
            return EXIT_MODEL
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
            return EXIT_USAGE
        print(f"enclave: serving {info.name} ({info.placement}) at {server.url}", file=err, flush=True)
        server.serve_forever()
        return EXIT_OK
    finally:
        if in_process:
            backend.unload()
        else:
            backend.close()


def run_chat(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from enclave.engine.llama_backend import LlamaCppBackend
    from enclave.engine.types import (
        ChatMessage,
        EngineError,
        Finished,
        GenerationControl,
        GenerationRequest,
        ModelLoadError,
        TextDelta,
    )

    if not all(_positive(v, n, err) for v, n in ((args.max_tokens, "--max-tokens"), (args.ctx, "--ctx"))):
        return EXIT_USAGE
    if args.think_budget is not None and args.think_budget < 0:
        print("enclave: --think-budget must be 0 or more", file=err)
        return EXIT_USAGE
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    from enclave.usecases.loading import load_request, model_overrides, saved_settings

    backend = LlamaCppBackend()
    # The same load the app asks for: settings, then this model's own overrides, then these flags; the rest is Auto.
    load = load_request(
        args.chat_model,
        saved_settings(),
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
        print(f"enclave: {exc}", file=err)
        return EXIT_MODEL
    if args.show_plan:
        print(f"enclave: {info.name}: {info.placement}", file=err)
    sampling = info.default_sampling
    if args.temperature is not None:
        sampling = replace(sampling, temperature=args.temperature)
    if args.seed is not None:
        sampling = replace(sampling, seed=args.seed)
    messages = [ChatMessage("system", args.system)] if args.system else []
    messages.append(ChatMessage("user", prompt))
    request = GenerationRequest(
        messages=tuple(messages), sampling=sampling, max_tokens=args.max_tokens, think_budget=args.think_budget
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
        return EXIT_GENERATION
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
    return EXIT_INTERRUPTED if finished.reason.value == "cancelled" else EXIT_OK
