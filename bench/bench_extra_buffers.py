"""What the AMX safeguard costs: llama.cpp with its extra (repacked) CPU weight buffers vs without, same run.

    python bench/bench_extra_buffers.py [--model PATH] [--runs 5] [--threads 2]

On a CPU whose llama.cpp build offers AMX buffers, Enclave loads with ``use_extra_bufts = false`` (see
``enclave.engine.llama_runtime``); elsewhere repacking stays on. This measures, on this machine and build, prompt
tokens/s (1,500-token prompt) and decode tokens/s (128 greedy tokens) with extra buffers on and off, each load in a
fresh process, sides alternating, min/median over the runs. Without --model it uses the Gemma 3 270M test model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TEXT = "The farmers moved their animals to the hills when the river rose in the spring. " * 90


def child(model: Path, extra: bool, threads: int) -> dict[str, float]:
    import llama_cpp

    from enclave.engine.llama_runtime import ModelParamsExtra, cpu_extra_buffer_types, open_llama

    llm = open_llama(
        ModelParamsExtra(use_extra_bufts=extra),
        model_path=str(model),
        n_ctx=4096,
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=True,
        swa_full=True,
        verbose=False,
    )
    tokens = llm.tokenize(TEXT.encode())[:1500]
    llm.eval(tokens[:200])  # warm-up
    llm.reset()
    llm._ctx.kv_cache_clear()
    start = time.perf_counter()
    llm.eval(tokens)
    prompt_s = time.perf_counter() - start
    count = 0
    start = time.perf_counter()
    for token in llm.generate([], temp=0.0, top_k=1, reset=False):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or count >= 128:
            break
        count += 1
    decode_s = time.perf_counter() - start
    llm.close()
    return {
        "prompt_tps": len(tokens) / prompt_s,
        "decode_tps": count / decode_s,
        "buffers": ",".join(cpu_extra_buffer_types()) or "none",
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from model_cache import gemma_model_path

        args.model = gemma_model_path()
    if args.child:
        print(json.dumps(child(args.model, args.child == "on", args.threads)))
        return 0
    print(f"$ python bench/bench_extra_buffers.py --runs {args.runs} --threads {args.threads}  ({args.model.name})")
    results: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for run in range(args.runs):
        for side in ("on", "off") if run % 2 == 0 else ("off", "on"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", side, f"--model={args.model}", f"--threads={args.threads}"],
                capture_output=True,
                text=True,
                check=True,
            )
            results[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"extra CPU buffer types this build offers here: {results['on'][0]['buffers']}")
    for metric, label in (("prompt_tps", "prompt tok/s (1,500 tokens)"), ("decode_tps", "decode tok/s (128 tokens)")):
        on = [r[metric] for r in results["on"]]
        off = [r[metric] for r in results["off"]]
        print(
            f"{label}: extra buffers on min {min(on):.1f} median {statistics.median(on):.1f} | off min {min(off):.1f} "
            f"median {statistics.median(off):.1f} | off/on median {statistics.median(off) / statistics.median(on):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
