"""``python -m benchmarks.gpu_check``: the GPU check, one bounded command (``scripts/gpu-check.sh`` runs it).

Stages, each in a process of its own under a time budget (``benchmarks.gpu_stages`` measures):

1. ``predictions``: GPU vs CPU predictions of one small evaluation (CPU fp32, device fp32, device bf16);
2. ``bench-<size>`` for each ``--size`` (default large, then base: large carries the MFU target): the benchmark
   pairs in bf16 and the MTL step's MFU.

Budget: the whole run's ``--budget-s`` is shared out as it goes: each stage gets the time left times its
weight over the weights of the stages still to run, so time a stage does not use passes on. A stage past its
share is stopped (what it wrote so far is kept); one with under ``MIN_STAGE_S`` left is skipped. Results:
``--results`` holds each stage's JSON and ``gpu-check.json`` (the summary, rewritten after every stage);
``--out`` (BENCHMARKS.md) gets the GPU check's section and one benchmark section per size.

Sizing, for an H100/H200-class card (989 TFLOP/s dense bf16), from model FLOPs (6 x weights x tokens per
training pass, counted per stack; 2 x for forward-only scoring) of the pairs with ``--reps 3`` (+1 warm-up):
T5-large (750M parameters: encoder 308M, decoder and head 442M): MTL pair 32 steps x 18.2 TFLOP = 0.58 PFLOP,
evaluation 1.65, few-shot 0.29, meta-learning 3.2 (both methods, timed and peak-memory passes): 5.7 PFLOP,
~40 s at an assumed 150 TFLOP/s achieved, plus ~10 s per pair to build random weights on the CPU: ~90 s.
T5-base (223M): 1.6 PFLOP, ~40 s. Predictions: ~30 s (CPU training and scoring of a 1.3M-parameter model).
With ~10 s per stage process to import torch: about 3 minutes of the default 5-minute budget.

Exit status: 0 every stage complete and every target met; 1 complete, but a target missed or a correctness
check failed; 2 bad arguments; 3 a stage crashed; 4 a stage stopped or skipped by the budget (no crash).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import SIZES
from promptability.io import write_json_atomic

OK, MISSED, BAD_ARGS, CRASHED, INCOMPLETE = 0, 1, 2, 3, 4
MIN_STAGE_S = 20.0  # under this a stage cannot even import torch and transformers on a busy machine
WEIGHTS = {"predictions": 1.5, "bench": 2.0}  # predictions: ~30 s on a GPU box; a size: 40-120 s
SUMMARY_FILE = "gpu-check.json"

ABOUT = """What it measures, in one command with a time budget (`bash scripts/gpu-check.sh`, or
`python -m benchmarks.gpu_check [--device cuda|cpu] [--size large,base] [--budget-s 300]`):

- **benchmarks** at the T5-large and T5-base shapes in bf16 autocast (fp32 on CPU): the MTL step vs HF + PEFT, the FLOP
  rate, rank-classification evaluation, the few-shot step and the meta-learning step (sections below);
- **MFU of the MTL step**: stack-aware FLOPs (6 x (encoder weights x source and prompt tokens + decoder
  weights and LM head x target tokens)) per step over the step time, over the card's dense bf16 peak (a
  table of datasheet numbers by card name; an unknown card gets no MFU, only the achieved TFLOP/s);
  target >= 35% at the T5-large shape. On CPU: over the measured square-matmul rate;
- **GPU vs CPU predictions**: a tiny T5 trained 60 MTL-TP steps on the quick offline suite (CPU, fp32),
  its held-out evaluation scored on CPU fp32, on the GPU in fp32 (target: 100% equal predictions) and under
  bf16 autocast (target: >= 99.5%); max |score difference| of each.

Exit status: 0 all met; 1 a target missed or a check failed; 2 bad arguments or a missing package; 3 a
stage crashed; 4 a stage stopped by its time budget. Results: `gpu-check.json` and each stage's JSON in
`--results` (`$OUT` under scripts/gpu-check.sh when set); this section is rewritten by every run on a GPU.
A GPU machine whose Python lacks packages or has an older transformers than requirements-cpu.txt pins
gets them as wheels: `bash scripts/gpu-wheels.sh` where pip reaches PyPI, then bring `.whl/` along."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--size", default="large,base",
                        help="comma-separated benchmark sizes, run in this order (default large,base; tiny for a "
                             f"CPU smoke run); from {', '.join(SIZES)}")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=300.0, help="the whole check's time budget (default 300)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                        help="the benchmarks' precision (default: bf16 autocast on a GPU, fp32 on CPU)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per benchmark, after 1 warm-up")
    parser.add_argument("--pairs", default=None,
                        help="comma-separated benchmark pairs to run (default: mtl,flops,eval,fewshot,meta)")  # fmt: skip
    parser.add_argument("--check-steps", type=int, default=60, help="MTL-TP steps of the predictions check's model")
    parser.add_argument("--check-per-task", type=int, default=None,
                        help="evaluation instances per held-out template (default: all 32 of the quick suite)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in every stage")
    parser.add_argument(
        "--results", default="runs/gpu-check", help="folder for the JSON results (default runs/gpu-check)"
    )
    parser.add_argument("--out", default="BENCHMARKS.md", help="Markdown file to add the sections to")
    parser.add_argument("--no-write", action="store_true", help="leave --out alone")
    # a stage, run by the check in a child process
    for flag in ("--stage", "--stage-out", "--stage-size", "--stage-deadline"):
        parser.add_argument(flag, default=None, help=argparse.SUPPRESS)
    return parser


def _check_args(args: argparse.Namespace) -> list[str]:
    from benchmarks.runner import resolve_device

    sizes = [s.strip() for s in args.size.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if not sizes or unknown:
        raise ValueError(f"--size must list sizes from {', '.join(SIZES)}, got {args.size!r}")
    for name in ("budget_s", "reps", "check_steps"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    from benchmarks.gpu_stages import GROUPS

    known = [p for group in GROUPS for p in group]
    args.pairs = args.pairs or ",".join(known)
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    if not pairs or set(pairs) - set(known):
        raise ValueError(f"--pairs must list pairs from {', '.join(known)}, got {args.pairs!r}")
    if args.check_per_task is not None and args.check_per_task < 1:
        raise ValueError(f"--check-per-task must be >= 1, got {args.check_per_task}")
    args.device = resolve_device(args.device).type
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    return sizes


# ----- the stages, each in a child process ---------------------------------------------------------
def _stage_command(args: argparse.Namespace, stage: str, out: Path, deadline: float, size: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--stage", stage, "--stage-out", str(out),
           "--stage-deadline", f"{deadline:.1f}", "--device", args.device, "--precision", args.precision, "--reps", str(args.reps),
           "--check-steps", str(args.check_steps), "--results", str(args.results), "--pairs", args.pairs]  # fmt: skip
    if size:
        cmd += ["--stage-size", size]
    if args.check_per_task is not None:
        cmd += ["--check-per-task", str(args.check_per_task)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_stage(args: argparse.Namespace) -> int:
    """In the child: one stage, its JSON written to ``--stage-out`` as it goes."""
    import torch

    from benchmarks import gpu_stages

    if args.threads is not None:
        torch.set_num_threads(int(args.threads))
    out, deadline = Path(args.stage_out), float(args.stage_deadline)
    if args.stage == "predictions":
        # the suite and the model go to a scratch folder: --results may be $OUT, which brings back only 8 files
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
            gpu_stages.predictions_stage(args.device, int(args.check_steps), args.check_per_task, out, Path(work),
                                         progress=False)  # fmt: skip
    elif args.stage == "bench":
        pairs = args.pairs.split(",")
        gpu_stages.bench_stage(args.stage_size, args.device, int(args.reps), deadline, out, args.threads, pairs,
                               bf16=args.precision == "bf16")  # fmt: skip
    else:
        raise ValueError(f"unknown stage {args.stage!r}")
    return 0


def run_child(cmd: list[str], timeout: float) -> tuple[str, float, str]:
    """Runs a stage; returns its status ("ok", "timeout", "crashed"), seconds taken and a note."""
    start = time.perf_counter()
    env = {"TQDM_DISABLE": "1", **os.environ, "PYTHONUNBUFFERED": "1"}  # the stages' own lines, not bars
    try:
        done = subprocess.run(cmd, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, f"stopped at its budget of {timeout:.0f} s"
    took = time.perf_counter() - start
    if done.returncode != 0:
        return "crashed", took, f"exit status {done.returncode} (its traceback is in the log above)"
    return "ok", took, ""


def run_check(
    args: argparse.Namespace, runner: Callable[[list[str], float], tuple[str, float, str]] = run_child
) -> int:
    """The whole check: every stage under the budget, then the summary, the Markdown and the exit status."""
    try:
        sizes = _check_args(args)
    except ValueError as err:
        print(f"python -m benchmarks.gpu_check: {err}", file=sys.stderr)
        return BAD_ARGS
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stages = [("predictions", "predictions", "")] + [(f"bench-{s}", "bench", s) for s in sizes]
    summary: dict[str, Any] = {"started": _now(), "device": args.device, "precision": args.precision, "sizes": sizes,
                               "budget_s": args.budget_s, "reps": args.reps, "stages": {}}  # fmt: skip
    start = time.monotonic()
    for i, (name, kind, size) in enumerate(stages):
        left = args.budget_s - (time.monotonic() - start)
        share = left * WEIGHTS[kind] / sum(WEIGHTS[k] for _, k, _ in stages[i:])
        out = results / f"{name}.json"
        out.unlink(missing_ok=True)  # a file from an earlier run must not pass for this run's
        if share < MIN_STAGE_S:
            summary["stages"][name] = {"status": "skipped", "note": f"{left:.0f} s of the budget left"}
        else:
            # the child stops starting new work a little before its parent would stop it
            cmd = _stage_command(args, kind, out, time.time() + share - 0.1 * share, size)
            status, took, note = runner(cmd, share)
            data = _read(out)
            if status == "ok" and not (data or {}).get("complete"):
                status, note = "partial", "stopped some of its work to keep to its budget"
            summary["stages"][name] = {"status": status, "elapsed_s": round(took, 1), "budget_s": round(share, 1),
                                       "note": note}  # fmt: skip
            _collect(summary, kind, size, data)
        summary["elapsed_s"] = round(time.monotonic() - start, 1)
        write_json_atomic(results / SUMMARY_FILE, summary)
    summary["finished"] = _now()
    summary["targets"] = targets(summary)
    summary["exit_status"], summary["verdict"] = verdict(summary)
    write_json_atomic(results / SUMMARY_FILE, summary)
    if not args.no_write:
        write_sections(Path(args.out), summary, results)
    print(summary_text(summary))
    return summary["exit_status"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _collect(summary: dict[str, Any], kind: str, size: str, data: dict[str, Any] | None) -> None:
    if not data:
        return
    summary.setdefault("env", data.get("env"))
    if kind == "predictions":
        summary["predictions"] = {k: v for k, v in data.items() if k != "env"}
        return
    bench = summary.setdefault("benchmarks", {})
    from benchmarks.gpu_stages import merge_results, results_from_dict
    from benchmarks.report import fmt_ratio

    parts = [results_from_dict(p) for p in data.get("parts", [])]
    merged = merge_results(parts) if parts else None
    bench[size] = {
        "done": data.get("done", []), "skipped": data.get("skipped", []), "mfu": data.get("mfu"),
        "missed": [{"key": r.key, "ratio": fmt_ratio(r.ratio), "goal": r.target} for r in merged.rows
                   if r.met is False] if merged else [],
        "checks_failed": [r.key for r in merged.rows if r.check_ok is False] if merged else [],
        "failed_pairs": merged.failed if merged else [],
    }  # fmt: skip


# ----- judging and reporting -----------------------------------------------------------------------
def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the check with its value and whether it was met (None: not measured or no target)."""
    rows: list[dict[str, Any]] = []
    for size, bench in summary.get("benchmarks", {}).items():
        m = bench.get("mfu")
        if m and m.get("target") is not None:
            rows.append({"name": f"MFU of the MTL step, {size}", "goal": f">= {m['target']:.0%}", "value": m["mfu"],
                         "shown": "unknown" if m["mfu"] is None else f"{m['mfu']:.1%}", "met": m["met"]})  # fmt: skip
        for row in bench["missed"]:
            rows.append({"name": f"benchmark {row['key']}, {size}", "goal": row["goal"], "shown": row["ratio"],
                         "met": False})  # fmt: skip
        for key in bench["checks_failed"]:
            rows.append({"name": f"benchmark {key}, {size}", "goal": "check passes", "shown": "FAILED", "met": False})
    for precision, c in summary.get("predictions", {}).get("comparisons", {}).items():
        goal = "report only" if c["target"] is None else f">= {c['target']:.1%}"
        rows.append({"name": f"predictions {summary['device']} {precision} vs CPU fp32", "goal": goal,
                     "value": c["agreement"], "met": c["met"],
                     "shown": f"{c['agreement']:.2%} ({c['equal']}/{c['of']}), max |diff| {c['max_abs_diff']:.1e}"})  # fmt: skip
    return rows


def verdict(summary: dict[str, Any]) -> tuple[int, str]:
    stages = summary["stages"]
    crashed = [n for n, s in stages.items() if s["status"] == "crashed"]
    # a pair that raised is a crash too, though its stage went on with the other pairs
    crashed += [f"pair {p} at {size}" for size, b in summary.get("benchmarks", {}).items() for p in b["failed_pairs"]]
    short = [n for n, s in stages.items() if s["status"] in ("timeout", "partial", "skipped")]
    missed = [t["name"] for t in summary.get("targets", []) if t["met"] is False]
    if crashed:
        return CRASHED, f"CRASHED: {', '.join(crashed)}"
    if short:
        return INCOMPLETE, f"INCOMPLETE (time budget): {', '.join(short)}" + (
            f"; missed: {', '.join(missed)}" if missed else ""
        )
    if missed:
        return MISSED, f"ran; targets MISSED: {', '.join(missed)}"
    return OK, "ran; all targets met"


def summary_text(summary: dict[str, Any]) -> str:
    env = summary.get("env") or {}
    peak = env.get("peak_tflops")
    card = f"GPU check on {summary['device']}: {env.get('card', '?')}"
    if peak:
        card += f" (dense bf16 peak {peak} TFLOP/s: {env.get('peak_source')})"
    took = f"{summary.get('elapsed_s', 0):.0f} s of a {summary['budget_s']:.0f} s budget; {summary['started']}"
    versions = f"torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}"
    lines = [card, f"{versions}; benchmarks in {summary['precision']}; {took}"]
    for name, s in summary["stages"].items():
        took = f" ({s['elapsed_s']:.0f} s of {s['budget_s']:.0f} s)" if "elapsed_s" in s else ""
        lines.append(f"  stage {name}: {s['status']}{took}" + (f": {s['note']}" if s.get("note") else ""))
    for size, bench in summary.get("benchmarks", {}).items():
        m = bench.get("mfu")
        if m:
            mfu = "unknown" if m["mfu"] is None else f"{m['mfu']:.1%}"
            lines.append(f"  MTL step at {size}: {m['achieved_tflops']:.3g} TFLOP/s stack-aware, "
                         f"{m['step_s'] * 1e3:.1f} ms per step; MFU {mfu} over {m['mfu_over']}")  # fmt: skip
        for skipped in bench["skipped"]:
            lines.append(f"  {size}: skipped {', '.join(skipped['pairs'])} ({skipped['why']})")
    for t in summary.get("targets", []):
        met = {True: "met", False: "MISSED", None: ""}[t["met"]]
        lines.append(f"  {t['name']}: {t['shown']} (goal {t['goal']}) {met}".rstrip())
    lines.append(f"verdict: {summary['verdict']} (exit status {summary['exit_status']})")
    return "\n".join(lines)


def gpu_section(summary: dict[str, Any] | None, device: str = "cuda") -> str:
    """BENCHMARKS.md's GPU check section: what it measures and, once it has run on ``device``, the last run."""
    key = f"gpu-check-{device}"
    title = "GPU check" if device == "cuda" else "GPU check, run on CPU (smoke run: no GPU numbers)"
    lines = [f"<!-- bench:{key} -->", f"## {title}", "", ABOUT, ""]
    if summary is None:
        lines += ["Status: **not yet run on a GPU**; no numbers yet.", ""]
    else:
        lines += ["Last run:", "", "```", summary_text(summary), "```", ""]
    lines += [f"<!-- /bench:{key} -->", ""]
    return "\n".join(lines)


def write_sections(path: Path, summary: dict[str, Any], results: Path) -> None:
    from benchmarks.gpu_stages import merge_results, results_from_dict
    from benchmarks.report import write_markdown, write_section
    from benchmarks.runner import METHODS

    write_section(path, f"gpu-check-{summary['device']}", gpu_section(summary, summary["device"]))
    for size in summary.get("benchmarks", {}):
        data = _read(results / f"bench-{size}.json") or {}
        parts = [results_from_dict(p) for p in data.get("parts", [])]
        if parts:
            write_markdown(path, merge_results(parts), METHODS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=ABOUT, formatter_class=argparse.RawDescriptionHelpFormatter,
    ))  # fmt: skip
    args = parser.parse_args(argv)
    if args.stage:
        return run_stage(args)
    # a SIGTERM (scripts/gpu-check.sh's hard limit) becomes an exception, so the running stage is killed with us
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return run_check(args)


if __name__ == "__main__":
    raise SystemExit(main())
