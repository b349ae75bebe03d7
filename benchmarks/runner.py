"""``python -m benchmarks``: run every pair, print the table, write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import SIZES, BenchSize, Settings, describe_model, get_size, machine_info
from benchmarks.report import Results, text_table, write_markdown

PAIRS = ("eval", "mtl", "padding", "meta", "fewshot", "flops", "eval-causal")

METHODS = """How each pair is measured (details in the docstrings of `benchmarks.*`):

1. **evaluation**: `eval.rank.score_choices` (each source encoded once, each decoder layer's cross-attention
   keys/values projected once per source, the LM head on real choice tokens only) vs one full forward per (source,
   choice) pair, as the paper's implementation scores; same `eval_batches` batches, same mean-log-probability
   scoring; synthetic token ids with sources ~10x longer than choices; one rep = one pass. At size `tiny` also at
   the T5-small shape (16 examples, one batch, at most 3 reps).
2. **MTL step**: `train.steps.mtl.MTLStep` (MTL-TP, shallow prompt; LM head and softmax on real target tokens only)
   + clipping + the project's fused Adafactor (`train.adafactor`), as the training loop runs it, vs
   `peft.get_peft_model(T5ForConditionalGeneration, PromptTuningConfig)` with the transformer unfrozen, its own loss,
   transformers' Adafactor with the same settings and the same clipping; same start weights and prompt, same batches
   in the same order. A tiny run also measures the T5-small shape (batch 16, source ~128 / target ~16, 3 reps). FLOP
   limit: the baseline's matmul FLOPs over ours (we skip only the LM head on padded targets); where the 1.2x target
   exceeds it, the target is 90% of it.
   Padding fractions: one epoch cut by the training defaults, length-grouped (`LengthGroupedBatchSampler`) vs random.
3. **meta-learning**: `train.steps.meta.MetaStep` (prompt-only learner) vs a whole-model `copy.deepcopy` per task, both
   with a fresh inner Adafactor per task, timed over the meta-gradient computation of one outer step. Peak memory: on
   CUDA `torch.cuda.max_memory_allocated`; on CPU the bytes of parameters, buffers and gradients held at the start plus
   the peak running sum of all allocations and frees PyTorch's CPU allocator reports to the profiler
   (`torch.profiler`, `profile_memory=True`) during the call: all tensor storage, independent of RSS caching.
   The reference is a plain `MTLStep` (forward + backward) on the largest batch the meta-step forwards.
4. **few-shot**: `train.steps.fixed_batch.FixedBatchStep` + clipping + Adafactor with `freeze("prompt-only")` vs
   `freeze("all")`, at the run's size and (tiny runs) at the T5-small shape; the check counts transformer tensors
   left holding a `.grad` by the frozen step (0: no weight gradient computed or stored). FLOP limit: counted on
   both sides (the full step's weight gradients, the LM head's included, against attention's weightless products).
5. **FLOP/s**: 6 x parameters x (non-padding) tokens per MTL-TP step / step time, over a square `torch.matmul` in the
   same dtype. The check column also gives a stack-aware count (encoder weights x source tokens + decoder weights
   x target tokens), since in an encoder-decoder each token passes through one stack only; target at the T5-small
   shape: stack-aware >= 50%.

7. **causal evaluation**: `eval.rank_causal` (a batch's sources in one left-padded call without the LM head, choices
   from the gathered cache, the head only where a choice token is predicted) vs one full forward per (source, choice)
   with the head at every position (as a user writes it and lm-evaluation-harness scores), and vs each source alone
   with its own cache (the first implementation); a random Llama of SmolLM2-135M's shape (30 layers, d 576, GQA 9/3,
   vocabulary 49152; at size `tiny` one batch of 16 examples with ~100-token sources, at most 3 reps), shallow prompt,
   4 choices, same batches and scores.

Models of pairs 1-5 are T5 v1.1-layout models with random weights and dropout 0 (`tiny`: the project's offline tiny T5,
`model.tiny.TINY_CONFIG`, vocabulary 4000; `small`/`base`/`large`: T5 1.1 shapes, vocabulary 32128); the data
are random token ids (lengths uniform in [mean/2, 3*mean/2]) except for the padding fractions.
"""


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def run_benchmarks(
    size: str | BenchSize = "tiny",
    reps: int = 5,
    device: str | None = None,
    bf16: bool = False,
    only: Sequence[str] | None = None,
    warmup: int = 1,
    progress: bool = True,
    seed: int = 0,
    threads: int | None = None,
    context: dict[str, Any] | None = None,
) -> Results:
    """Runs the pairs (all, or ``only``) and returns their rows; writes nothing.

    ``threads``: torch's intra-op CPU threads for the run (restored afterwards); None keeps torch's default.
    On a small machine shared with other jobs, fewer threads than cores avoids OpenMP threads spinning
    against the other jobs' (which can slow single ops a hundredfold).
    ``context``: a dict the pairs fill with their raw measurements (e.g. ``mtl_step_s``, ``matmul_flops``) for a
    caller that computes more from them (``benchmarks.gpu_check``); a fresh one when None.
    """
    if reps < 1 or warmup < 0:
        raise ValueError(f"--reps must be >= 1 and warmup >= 0, got {reps} and {warmup}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(size, reps, device, bf16, only, warmup, progress, seed, {} if context is None else context)
    finally:
        torch.set_num_threads(previous)


def _run(size, reps, device, bf16, only, warmup, progress, seed, context: dict[str, Any]) -> Results:
    unknown = set(only or ()) - set(PAIRS)
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(PAIRS)}")
    spec = get_size(size)
    settings = Settings(spec, reps=reps, warmup=warmup, device=resolve_device(device), bf16=bf16, seed=seed,
                        progress=progress)  # fmt: skip
    if bf16 and settings.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("--bf16 was asked for, but this GPU does not support bfloat16")
    wanted = [p for p in PAIRS if only is None or p in only]
    if "flops" in wanted and "mtl" not in wanted:
        wanted = [p for p in PAIRS if p in wanted or p == "mtl"]  # the achieved rate is the MTL step's
    results = Results(
        size=spec.name, info=machine_info(settings),
        settings={"model": describe_model(spec), "reps": f"{reps} (+{warmup} warm-up)", "seed": str(seed),
                  "pairs": ", ".join(wanted)},
    )  # fmt: skip
    if len(wanted) < len(PAIRS):
        results.partial = ",".join(wanted)
    start = time.perf_counter()
    for pair in wanted:
        settings.log(f"--- {pair}")
        gc.collect()  # the previous pair's models and optimizer state go before this pair measures memory
        if settings.device.type == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(seed)
        try:
            _run_pair(pair, settings, context, results)
        except Exception as err:  # one broken pair must not cost the others' minutes; the table says so
            settings.log(f"{pair} failed: {type(err).__name__}: {err}")
            results.notes.append(f"pair '{pair}' FAILED: {type(err).__name__}: {err}")
            results.failed.append(pair)
    results.elapsed_s = time.perf_counter() - start
    with contextlib.suppress(KeyError, OSError):
        results.info["load average"] += f" at the start, {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
    noisy = [r.key for r in results.rows if r.ratio is not None and r.ratio.n > 1 and r.ratio.max > 2 * r.ratio.min]
    if noisy:
        results.notes.append(
            f"per-rep ratios of {', '.join(noisy)} vary more than 2x: other jobs competed for the CPU during some reps "
            "(see the load average); each ratio pairs two interleaved runs and the median discounts a minority of "
            "stalled reps, but rerun (or use --threads 1 on a busy small machine) for tighter numbers"
        )
    missed = [r.key for r in results.rows if r.met is False]
    failed = [r.key for r in results.rows if r.check_ok is False]
    if missed:
        results.notes.append(f"targets missed: {', '.join(missed)}")
    if failed:
        results.notes.append(f"correctness checks FAILED: {', '.join(failed)}")
    return results


# pair -> the module under benchmarks/ that measures it
_PAIR_MODULES = {"eval": "eval_rank", "mtl": "mtl", "padding": "padding", "meta": "meta", "fewshot": "fewshot",
                 "flops": "flops", "eval-causal": "eval_causal"}  # fmt: skip


def _run_pair(pair: str, settings: Settings, context: dict[str, Any], results: Results) -> None:
    module = importlib.import_module(f"benchmarks.{_PAIR_MODULES[pair]}")
    if pair == "padding":
        rows, notes = module.run(settings)
        results.rows += rows
        results.notes += notes
    elif pair in ("eval", "eval-causal"):
        results.rows += module.run(settings)
    else:
        results.rows += module.run(settings, context)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--size", default="tiny", choices=list(SIZES),
                        help="model shape and workload: tiny (default; minutes on 2 CPU cores) or T5 1.1 small/base/large "
                             "shapes (random weights, vocabulary 32128; for a GPU)")  # fmt: skip
    parser.add_argument(
        "--reps", type=int, default=5, help="timed repetitions per measurement, after 1 warm-up (default 5)"
    )
    parser.add_argument(
        "--out", default="BENCHMARKS.md", help="Markdown file to add this run's section to (default BENCHMARKS.md)"
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available, else cpu"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 autocast on both sides of every pair (parameters stay fp32)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own choice); fewer than the cores on a shared machine",
    )
    parser.add_argument("--only", nargs="+", choices=PAIRS, metavar="PAIR",
                        help=f"run only these pairs ({', '.join(PAIRS)}); the file section then holds only them")  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print the table but do not touch --out")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    return parser


def run_command(args: argparse.Namespace) -> int:
    try:
        results = run_benchmarks(args.size, args.reps, args.device, args.bf16, only=args.only, progress=not args.quiet,
                                 threads=args.threads)  # fmt: skip
    except ValueError as err:
        print(f"python -m benchmarks: {err}", file=sys.stderr)
        return 2
    print("\n" + "\n".join(f"{k}: {v}" for k, v in results.info.items()))
    print(text_table(results.rows))
    for note in results.notes:
        print(f"note: {note}")
    if results.failed:
        print(
            f"python -m benchmarks: {len(results.failed)} pair(s) failed: {', '.join(results.failed)}", file=sys.stderr
        )
    if not args.no_write:
        path = write_markdown(Path(args.out), results, METHODS)
        print(f"wrote {path}")
    return 1 if results.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Side-by-side benchmarks of promptability against the straightforward implementations.",
    ))  # fmt: skip
    return run_command(parser.parse_args(argv))


def pair_main(pairs: Sequence[str], argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.<pair>``: only ``pairs``; rows printed, and written to BENCHMARKS.md with ``--write``."""
    args = list(sys.argv[1:] if argv is None else argv)
    write = "--write" in args
    args = [a for a in args if a != "--write"]
    return main([*args, "--only", *pairs, *([] if write else ["--no-write"])])
