"""The measuring stages of ``python -m benchmarks.gpu_check``; each runs in a process of its own.

- ``bench``: the benchmark pairs at one size (bf16 autocast on a GPU, fp32 on CPU, whose bf16 matmuls are
  emulated), in priority order (the MTL step and its FLOP rate first, then evaluation, few-shot,
  meta-learning), and the MTL step's MFU: stack-aware FLOP/s (``benchmarks.flops.stack_aware_flop``) over the
  card's dense bf16 peak (``CARD_PEAKS``); on CPU (or in fp32), over the measured square-matmul rate.
- ``predictions``: a tiny T5 trained for a few dozen MTL-TP steps on the quick offline suite (on CPU, fp32, so
  its scores are the same everywhere), then the same rank-classification evaluation scored on CPU fp32, on the
  device in fp32 and on the device under bf16 autocast: agreement of predictions and max |score difference|.

Each stage writes its JSON atomically after every step it finishes, so a stage that its parent stops at its
time budget still leaves what it measured.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Stat
from benchmarks.report import Results, Row
from promptability.io import write_json_atomic

# (pattern searched in torch.cuda.get_device_name(), dense bf16 tensor TFLOP/s or None, source). First match wins.
# Vendor datasheets quote "with sparsity" figures; the dense rate is half of those.
CARD_PEAKS: tuple[tuple[str, float | None, str], ...] = (
    (r"NVL", None, "NVL parts are not in the table"),
    (r"H100.*PCIe", 756.0, "H100 PCIe datasheet: 1,513 TFLOP/s bf16 with sparsity"),
    (r"H100|H200", 989.0, "H100/H200 SXM datasheet: 1,979 TFLOP/s bf16 with sparsity"),
    (r"A100", 312.0, "A100 datasheet: 312 TFLOP/s bf16 dense (624 with sparsity)"),
    (r"L40S", 362.0, "L40S datasheet: 362.05 TFLOP/s bf16 dense (733 with sparsity)"),
    (r"\bL4\b", 121.0, "L4 datasheet: 242 TFLOP/s bf16 with sparsity"),
    # AWS's A10G has no vendor datasheet, and third-party spec sheets give it less tensor throughput than the A10
    (r"A10G", None, "A10G: no vendor datasheet"),
    (r"\bA10\b", 125.0, "A10 datasheet: 250 TFLOP/s bf16 with sparsity"),
)

# The benchmark pairs of one size, most wanted first: the MFU target needs the MTL step and the matmul rate.
GROUPS: tuple[tuple[str, ...], ...] = (("mtl", "flops"), ("eval",), ("fewshot",), ("meta",))
MFU_TARGET = {"large": 0.35}  # size -> MFU it must reach (the target, on a GPU)
PREDICTION_TARGETS = {"fp32": 1.0, "bf16": 0.995}  # agreement with CPU fp32
NEAR_TIE = 0.01  # a CPU top-2 score gap below this is within bf16's rounding of mean log-probabilities


def card_peak(name: str) -> tuple[float | None, str]:
    """Dense bf16 TFLOP/s of the card called ``name`` (None: unknown) and where the number comes from."""
    for pattern, peak, source in CARD_PEAKS:
        if re.search(pattern, name):
            return peak, source
    return None, f"{name!r} is not in the table (benchmarks.gpu_stages.CARD_PEAKS)"


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {"device": device.type, "torch": torch.__version__, "transformers": transformers.__version__,
                           "float32_matmul_precision": torch.get_float32_matmul_precision()}  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        peak, source = card_peak(props.name)
        env.update(card=props.name, memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   peak_tflops=peak, peak_source=source)  # fmt: skip
    else:
        from benchmarks.common import cpu_model

        env.update(card=cpu_model(), peak_tflops=None, peak_source="CPU: MFU is over the measured matmul rate")
    return env


# ----- results as JSON ---------------------------------------------------------------------------
def results_to_dict(results: Results) -> dict[str, Any]:
    return dataclasses.asdict(results)


def results_from_dict(data: dict[str, Any]) -> Results:
    rows = [Row(**{**r, "ratio": Stat(**r["ratio"]) if r.get("ratio") else None}) for r in data.get("rows", [])]
    return Results(**{**data, "rows": rows})


def merge_results(parts: list[Results]) -> Results:
    """One section's worth of results from several runs of the same size (each a group of pairs)."""
    from benchmarks.runner import PAIRS

    ran = {p for r in parts for p in r.settings.get("pairs", "").split(", ") if p}
    first = parts[0]
    merged = Results(size=first.size, info=dict(first.info), settings=dict(first.settings))
    merged.settings["pairs"] = ", ".join(p for p in PAIRS if p in ran)
    merged.partial = ",".join(p for p in PAIRS if p in ran) if len(ran) < len(PAIRS) else ""
    for r in parts:
        merged.rows += r.rows
        merged.notes += r.notes
        merged.failed += r.failed
        merged.elapsed_s += r.elapsed_s
    return merged


# ----- stage: benchmarks at one size ---------------------------------------------------------------
def mfu(context: dict[str, Any], size: str, batch_size: int, env: dict[str, Any], bf16: bool = True) -> dict[str, Any]:
    """The MTL step's model FLOP utilisation from pair 2's and pair 5's measurements."""
    from benchmarks.flops import stack_aware_flop

    step: Stat = context["mtl_step_s"]
    flop = stack_aware_flop(context, batch_size)
    achieved = flop / step.median
    matmul: Stat | None = context.get("matmul_flops")
    out: dict[str, Any] = {
        "stack_aware_tflop_per_step": flop / 1e12, "step_s": step.median, "achieved_tflops": achieved / 1e12,
        "matmul_tflops": matmul.median / 1e12 if matmul else None,
        "of_matmul": achieved / matmul.median if matmul else None,
    }  # fmt: skip
    if env["device"] == "cuda" and bf16:
        peak = env.get("peak_tflops")
        out["mfu"] = achieved / (peak * 1e12) if peak else None
        out["mfu_over"] = f"card peak {peak} TFLOP/s ({env.get('peak_source')})" if peak else "unknown card peak"
    else:
        out["mfu"] = out["of_matmul"]
        out["mfu_over"] = f"measured square-matmul rate ({env['device']}, {'bf16' if bf16 else 'fp32'})"
    target = MFU_TARGET.get(size)
    out["target"] = target
    out["met"] = None if target is None or out["mfu"] is None else bool(round(out["mfu"], 3) >= target)
    return out


def bench_stage(
    size: str,
    device: str,
    reps: int,
    deadline: float,
    out: Path,
    threads: int | None,
    pairs: list[str] | None = None,
    bf16: bool = True,
) -> None:
    """The ``pairs`` (default all) of ``GROUPS`` at ``size`` (bf16 autocast or fp32), a group at a time while the
    deadline allows; JSON to ``out``."""
    from benchmarks.common import get_size
    from benchmarks.runner import resolve_device, run_benchmarks

    env = environment(resolve_device(device))
    state: dict[str, Any] = {"size": size, "env": env, "parts": [], "done": [], "skipped": [], "complete": False}
    write_json_atomic(out, state)
    durations: list[float] = []
    for group in (tuple(p for p in g if pairs is None or p in pairs) for g in GROUPS):
        if not group:
            continue
        left = deadline - time.time()
        if durations and left < 1.2 * max(durations):  # the slowest group so far is the best guess of the next
            state["skipped"].append({"pairs": list(group), "why": f"{left:.0f} s left of the stage's budget"})
            continue
        start = time.perf_counter()
        context: dict[str, Any] = {}
        results = run_benchmarks(size, reps=reps, device=device, bf16=bf16, only=list(group), threads=threads,
                                 context=context)  # fmt: skip
        durations.append(time.perf_counter() - start)
        state["parts"].append(results_to_dict(results))
        state["done"].append(list(group))
        if "mtl_step_s" in context and "matmul_flops" in context:
            state["mfu"] = mfu(context, size, get_size(size).batch_size, env, bf16)
        write_json_atomic(out, state)
    state["complete"] = not state["skipped"]
    write_json_atomic(out, state)


# ----- stage: GPU vs CPU predictions ---------------------------------------------------------------
def _trained_tiny_model(work: Path, steps: int, batch_size: int, progress: bool):
    """A tiny T5 with a shallow prompt after ``steps`` MTL-TP steps on the quick suite, on CPU in fp32."""
    from promptability.model.prompted import PromptedSeq2SeqLM
    from promptability.model.tiny import build_tokenizer, tiny_t5
    from promptability.suite.generate import generate_suite, tokenizer_texts, write_suite
    from promptability.train.config import DataConfig, TrainConfig
    from promptability.train.loop import make_accelerator
    from promptability.train.pretrain import pretrain

    meta = write_suite(work / "suite", seed=0, size="quick", progress=False)
    tokenizer = build_tokenizer(tokenizer_texts(generate_suite(0, "quick")))
    model = PromptedSeq2SeqLM(tiny_t5(len(tokenizer), seed=0), tokenizer, "shallow", 20, seed=0, base_model="tiny")
    data = DataConfig(path=str(work / "suite"), split="train", max_source_len=128, max_target_len=32)
    config = TrainConfig(method="mtl-tp", prompt="shallow", model="tiny", data=data, batch_size=batch_size,
                         micro_batch_size=batch_size, max_steps=steps, save_every=0, log_every=max(steps, 1))  # fmt: skip
    shutil.rmtree(work / "model", ignore_errors=True)
    result = pretrain(config, work / "model", progress=progress, model=model,
                      accelerator=make_accelerator("fp32", cpu=True))  # fmt: skip
    torch.use_deterministic_algorithms(False)  # pretrain asks for it on CPU; the device evaluates as `evaluate` does
    return model, meta, result.last.get("loss")


def compare(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement of ``other``'s predictions with ``reference``'s (same rows, same order) and max |score diff|."""
    if [(r["task"], r["index"]) for r in reference] != [(r["task"], r["index"]) for r in other]:
        raise ValueError("the two evaluations scored different instances")
    same = [a["prediction"] == b["prediction"] for a, b in zip(reference, other)]
    diff = max((abs(x - y) for a, b in zip(reference, other) for x, y in zip(a["scores"], b["scores"])), default=0.0)
    flipped = [{"task": a["task"], "index": a["index"], "gap": _gap(a["scores"])}
               for a, s in zip(reference, same) if not s]  # fmt: skip
    return {"agreement": sum(same) / max(len(same), 1), "equal": sum(same), "of": len(same), "max_abs_diff": diff,
            "disagreements": flipped[:20]}  # fmt: skip


def _gap(scores: list[float]) -> float:
    top = sorted(scores, reverse=True)
    return top[0] - top[1] if len(top) > 1 else float("inf")


def predictions_stage(device: str, steps: int, per_task: int | None, out: Path, work: Path, progress: bool) -> None:
    """Trains the tiny model, then scores the held-out evaluation three ways; JSON to ``out`` after each."""
    from benchmarks.runner import resolve_device
    from promptability.data.readers import read_examples
    from promptability.eval.rank import evaluate

    dev = resolve_device(device)
    state: dict[str, Any] = {"env": environment(dev), "complete": False}
    start = time.perf_counter()
    model, meta, loss = _trained_tiny_model(work, steps, 32, progress)
    heldout = [t for t, info in meta["templates"].items() if info["role"] == "heldout"]
    records = read_examples(work / "suite", split="validation", tasks=heldout)
    if per_task is not None:
        records = _first_per_task(records, per_task)
    state.update(train_steps=steps, train_loss=loss, train_s=time.perf_counter() - start, instances=len(records),
                 templates=len({r["task"] for r in records}))  # fmt: skip
    write_json_atomic(out, state)

    def score(where: torch.device, bf16: bool) -> list[dict[str, Any]]:
        model.to(where)
        return evaluate(model, records, batch_size=64, max_source_len=128, max_target_len=32, progress=progress,
                        autocast=torch.bfloat16 if bf16 else None)  # fmt: skip

    reference = score(torch.device("cpu"), False)
    gaps = [_gap(r["scores"]) for r in reference]
    state["reference"] = {"accuracy": sum(r["prediction"] == r["label"] for r in reference) / len(reference),
                         "min_top2_gap": min(gaps), "near_ties": sum(g < NEAR_TIE for g in gaps)}  # fmt: skip
    write_json_atomic(out, state)
    for precision in ("fp32", "bf16"):
        result = compare(reference, score(dev, precision == "bf16"))
        target = PREDICTION_TARGETS[precision] if dev.type == "cuda" or precision == "fp32" else None
        result.update(target=target, met=None if target is None else result["agreement"] >= target)
        state.setdefault("comparisons", {})[precision] = result
        write_json_atomic(out, state)
    state["complete"] = True
    state["elapsed_s"] = time.perf_counter() - start
    write_json_atomic(out, state)


def _first_per_task(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    seen: dict[str, int] = {}
    kept = []
    for r in records:
        if seen.get(r["task"], 0) < n:
            seen[r["task"]] = seen.get(r["task"], 0) + 1
            kept.append(r)
    return kept
