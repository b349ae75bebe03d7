"""Where the real study's time goes, and what it would take with every weight matmul at this machine's best rate.

Profiles (``torch.profiler``, CPU) the three kinds of work the study does, on its own data and model and as it
runs them (its precision, bf16 autocast where the CPU has native bf16, and its micro-batches):

- continued pretraining: MTL-T steps of 8 examples in micro-batches of 4, with the Adafactor update;
- few-shot tuning: one step on each tuned template's 16 shots, prompt only, micro-batches of <= 1,024 tokens;
- 0-shot evaluation: rank classification of the tuned templates' instances (one template per held-out dataset).

Each kind runs twice: first under ``torch.utils.flop_counter.FlopCounterMode`` (its matmul FLOPs, padding
included; this pass also warms up), then under the profiler, whose self time is split into weight matmuls
(``aten::mm``/``addmm``/``bmm``), attention (the fused scaled-dot-product kernels, forward and backward) and
everything else (norms, rotary embeddings, the gated MLP's activation, autocast's casts and copies, the optimizer).

From those seconds the script estimates the whole study on this machine (the study's number of MTL steps, few-shot
epochs and rows; 0-shot evaluation scaled from the tuned templates to all held-out ones by their matmul FLOPs, as
``benchmarks.study_floor`` counts them), prints a run's recorded stage times beside it when given, and then what
the study would take with every matmul at the best rate of ``benchmarks.study_floor.matmul_rate`` and everything
else as profiled, and how much faster everything else would have to run to fit the budget.

    python -m benchmarks.study_profile --data runs/study-real/data [--timings runs/study-real/timings.json]
        [--model smollm2-135m] [--precision auto] [--budget-min 32]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

MATMUL = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})
CATEGORIES = ("matmul", "attention", "other")


def category(op: str) -> str:
    """The category of a profiler op name: weight matmul, attention kernel or the rest."""
    if op in MATMUL:
        return "matmul"
    return "attention" if "scaled_dot_product" in op or "flash_attention" in op else "other"


def profile(warm: Callable[[], Any], work: Callable[[], Any]) -> dict[str, float]:
    """The matmul FLOPs of ``warm`` (the same work as ``work``, run first: it also warms up), then the seconds of
    self time per category over ``work`` under the profiler."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        warm()
    counts = counter.get_flop_counts().get("Global", {})
    flops = sum(float(n) for op, n in counts.items() if category(f"aten::{str(op).split('.')[1]}") == "matmul")
    # No shapes recorded: recording them (with_flops) triples the other ops' self time and holds gigabytes.
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    out = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.key_averages():
        out[category(event.key)] += event.self_cpu_time_total / 1e6
    return {**out, "flops": flops}


def scaled(times: float, p: Mapping[str, float]) -> dict[str, float]:
    """``p``'s seconds and FLOPs for ``times`` as much of the same work."""
    return {key: times * value for key, value in p.items()}


def added(*profiles: Mapping[str, float]) -> dict[str, float]:
    return {key: sum(p[key] for p in profiles) for key in (*CATEGORIES, "flops")}


def seconds(p: Mapping[str, float]) -> float:
    return sum(p[c] for c in CATEGORIES)


def project(stages: Mapping[str, Mapping[str, float]], best_rate: float, budget_min: float) -> dict[str, Any]:
    """The study with every weight matmul at ``best_rate`` and everything else as in ``stages`` (profiles).

    Returns per stage the matmul seconds at the best rate, the totals, and ``needed``: how many times faster the
    non-matmul work must run to fit ``budget_min`` with the matmuls at the best rate (infinite where the matmuls
    alone exceed it; at most 1 where faster matmuls alone would do).
    """
    best = {stage: p["flops"] / best_rate for stage, p in stages.items()}
    rest = sum(p["attention"] + p["other"] for p in stages.values())
    room = budget_min * 60 - sum(best.values())
    return {
        "matmul_best": best,
        "rest": rest,
        "at_best_rate": sum(best.values()) + rest,
        "needed": rest / room if room > 0 else float("inf"),
    }


def study_stages(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The study's stages on this machine, estimated from profiles of its three kinds of work (module docstring)."""
    from benchmarks.study_floor import evaluation_flops, token_counts
    from benchmarks.study_steps import fewshot_steps
    from promptability.data.readers import read_examples
    from promptability.eval.rank import evaluate
    from promptability.model import load_model
    from promptability.studies.real import ROWS, StudyScale, _train_config, fewshot_templates
    from promptability.train.distributed import make_accelerator, resolve_precision
    from promptability.train.loop import build_optimizer
    from promptability.train.pretrain import load_pretraining_data
    from promptability.train.steps.mtl import MTLStep, mtl_step_options

    scale = StudyScale(precision=resolve_precision(args.precision))
    accelerator = make_accelerator(scale.precision, cpu=True)
    manifest = json.loads((args.data / "study.json").read_text())
    tuned = fewshot_templates(manifest, scale.fewshot_templates_per_dataset)

    model = load_model(args.model)
    model.freeze("all")
    config = _train_config(scale, "mtl-t", "none", args.model, args.data, list(manifest["train"]))
    data, _ = load_pretraining_data(config, model.tokenizer, accelerator, model.is_causal, False)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], lr=scale.lr)

    def mtl() -> None:  # a fresh step each time: one seed, so both passes draw the same batches
        step = MTLStep(data, **mtl_step_options(model, config, accelerator))
        for _ in range(args.mtl_steps):
            step(model, accelerator)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    pretrain = profile(mtl, mtl)

    model = load_model(args.model, prompt="shallow", prompt_length=scale.prompt_length)
    model.freeze("prompt-only")
    few = [split for _, split in fewshot_steps(args.data, model, tuned, scale.fewshot_micro_batch_tokens, scale)]

    def tune() -> None:
        for step in few:
            step(model, accelerator)
        model.zero_grad(set_to_none=True)

    tuning = profile(tune, tune)
    records = read_examples(args.data, tasks=tuned)

    def zero_shot() -> None:
        evaluate(model, records, batch_size=scale.eval_batch_size, max_source_len=scale.max_source_len,
                 max_target_len=scale.max_target_len, progress=False,
                 autocast=torch.bfloat16 if scale.precision == "bf16" else None)  # fmt: skip

    evaluation = profile(zero_shot, zero_shot)
    counts = token_counts(args.data, model.tokenizer, 0, scale.max_source_len, scale.max_target_len)["heldout"]
    config = model.transformer.config
    all_templates = sum(evaluation_flops(config, h) for h in counts.values())
    models = len(ROWS) * len(scale.pretrain_seeds)
    return {
        "pretrain": scaled(models * scale.mtl_steps / args.mtl_steps, pretrain),
        "0-shot": scaled((models + 1) * all_templates / sum(evaluation_flops(config, counts[t]) for t in tuned),
                         evaluation),
        "16-shot": scaled((models + 1) * len(scale.seeds), added(scaled(scale.fewshot_epochs, tuning), evaluation)),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from benchmarks.study_floor import matmul_rate, stage_seconds
    from promptability.cli.common import positive_int
    from promptability.train.distributed import resolve_precision

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the study's data folder (runs/study-real/data)")
    parser.add_argument("--timings", type=Path, help="a run's timings.json on this machine, to print beside")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--mtl-steps", type=positive_int, default=3, help="MTL steps profiled")
    parser.add_argument("--budget-min", type=float, default=32.0)
    args = parser.parse_args(argv)

    precision = resolve_precision(args.precision)
    best = matmul_rate(torch.bfloat16 if precision == "bf16" else torch.float32)
    print(f"{args.model}, {precision}, {torch.get_num_threads()} threads; best matmul rate {best / 1e9:.1f} GFLOP/s")
    stages = study_stages(args)
    recorded = stage_seconds(args.timings)
    result = project(stages, best, args.budget_min)
    print("\n| stage | estimated min | recorded min | weight matmuls | matmul GFLOP/s | matmuls at the best rate "
          "| attention | everything else |\n|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for stage, p in stages.items():
        total = seconds(p)
        cells = [f"{total / 60:.1f}", f"{recorded[stage] / 60:.1f}" if stage in recorded else "",
                 f"{p['matmul'] / 60:.1f} ({100 * p['matmul'] / total:.0f}%)", f"{p['flops'] / p['matmul'] / 1e9:.0f}",
                 f"{result['matmul_best'][stage] / 60:.1f}", f"{p['attention'] / 60:.1f} ({100 * p['attention'] / total:.0f}%)",
                 f"{p['other'] / 60:.1f} ({100 * p['other'] / total:.0f}%)"]  # fmt: skip
        print(f"| {stage} | " + " | ".join(cells) + " |")
    total = sum(seconds(p) for p in stages.values())
    print(f"\nestimated {total / 60:.1f} min; with every weight matmul at {best / 1e9:.0f} GFLOP/s and the rest as "
          f"profiled: {result['at_best_rate'] / 60:.1f} min ({sum(result['matmul_best'].values()) / 60:.1f} of "
          f"matmuls, {result['rest'] / 60:.1f} of the rest)")  # fmt: skip
    if result["needed"] == float("inf"):
        print(f"the matmuls alone, at the best rate, exceed the {args.budget_min:g}-minute budget")
    elif result["needed"] <= 1:
        print(f"the {args.budget_min:g}-minute budget is within reach of faster matmuls alone")
    else:
        print(f"to fit {args.budget_min:g} min, attention and everything else would have to run "
              f"{result['needed']:.2f}x faster than PyTorch's eager CPU kernels run them here")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
