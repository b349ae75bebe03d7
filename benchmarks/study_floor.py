"""The real study's time floor on this machine: its dense matmul FLOPs over the machine's best matmul rate.

No schedule of the study's work can beat (matmul FLOPs) / (matmul FLOP/s): this prints that floor per stage
for the study as `study real` would run it (a data folder its data stage built, the scale's defaults), beside
the issue's budget, and the measured stage times of a run when given (``--timings``). Only the weight
matmuls are counted (2 FLOPs per multiply-add): attention scores, norms and the optimizer are left out, so the
floor is a lower bound.

    python -m benchmarks.study_floor --data runs/study-real/data [--model smollm2-135m] [--precision auto]
        [--timings runs/study-real/timings.json] [--budget-min 32]

Per token, a forward pass costs 2 x (the layers' weights) and, where a token is scored, 2 x d x vocabulary
for the LM head. Continued pretraining is a forward and a backward over weights and activations (3x the
forward); few-shot tuning trains the prompt only, so its backward computes activation gradients but no
weight gradients (2x the forward). Rank classification runs each source once and each choice's tokens once.
Shallow prompts' 20 positions are not counted either.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch


def layer_weights(config: Any) -> int:
    """Multiply-adds per token of one pass through every layer's weight matrices (Llama layout)."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = d * config.num_key_value_heads // config.num_attention_heads
    return layers * (2 * d * d + 2 * d * kv + 3 * d * ff)


def matmul_rate(dtype: torch.dtype, reps: int = 5) -> float:
    """Best FLOP/s of a matmul shaped like the study's (1024 tokens x d 576 x ff 1536, and back)."""
    a, b = torch.randn(1024, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    c = torch.randn(1536, 576, dtype=dtype)
    (a @ b) @ c
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(8):
            (a @ b) @ c
        best = min(best, (time.perf_counter() - start) / 8)
    return 2 * 2 * 1024 * 576 * 1536 / best


def token_counts(
    data: Path, tokenizer: Any, prompt: int, max_source: int = 384, max_target: int = 64
) -> dict[str, Any]:
    """Mean source+target tokens of a training example; per held-out template, source and choice tokens."""
    manifest = json.loads((data / "study.json").read_text())

    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    train = []
    for t in manifest["train"]:
        for line in (data / "train" / f"{t}.jsonl").read_text().splitlines():
            r = json.loads(line)
            train.append(min(n(r["source"]), max_source) + min(n(" " + r["target"]), max_target))
    heldout: dict[str, dict[str, float]] = {}
    for t in manifest["heldout"]:
        split = "test" if (data / "test" / f"{t}.jsonl").is_file() else "validation"
        rows = [json.loads(x) for x in (data / split / f"{t}.jsonl").read_text().splitlines() if x.strip()]
        pool = data / "train" / f"{t}.jsonl"
        shots = [json.loads(x) for x in pool.read_text().splitlines()[:16]] if pool.is_file() else rows[:16]
        heldout[t] = {
            "instances": len(rows),
            "source": statistics.fmean(min(n(r["source"]), max_source) + prompt for r in rows),
            "choices": statistics.fmean(sum(min(n(" " + c), max_target) for c in r["choices"]) for r in rows),
            "shot_tokens": statistics.fmean(
                min(n(r["source"]), max_source) + prompt + min(n(" " + r["target"]), max_target) for r in shots
            ),  # fmt: skip
        }
    return {"train_mean": statistics.fmean(train), "heldout": heldout}


def evaluation_flops(config: Any, template: dict[str, float]) -> float:
    """Weight-matmul FLOPs of rank-classifying one held-out template (``token_counts``'s entry for it): each source
    once, each choice's tokens once, the LM head on choice tokens only."""
    body, head = 2 * layer_weights(config), 2 * config.hidden_size * config.vocab_size
    return template["instances"] * ((template["source"] + template["choices"]) * body + template["choices"] * head)


def floor(scale: Any, config: Any, counts: dict[str, Any], tuned: list[str], rows: int) -> dict[str, float]:
    """Matmul FLOPs per stage of the whole study (``rows`` continued-pretraining rows, each once per pretraining
    seed, +1 base model; few-shot once per few-shot seed)."""
    body = 2 * layer_weights(config)
    held = counts["heldout"]
    models = rows * len(getattr(scale, "pretrain_seeds", [0])) + 1
    pretrain = (models - 1) * scale.mtl_steps * scale.batch_size * counts["train_mean"] * 3 * body
    per_model = sum(evaluation_flops(config, h) for h in held.values())
    tune = sum(scale.fewshot_epochs * 16 * held[t]["shot_tokens"] * 2 * body + evaluation_flops(config, held[t])
               for t in tuned)  # fmt: skip
    fewshot_seeds = len(getattr(scale, "seeds", [0]))
    return {"pretrain": pretrain, "0-shot": models * per_model, "16-shot": models * fewshot_seeds * tune}


def main(argv: list[str] | None = None) -> int:
    from promptability.model import load_model
    from promptability.studies.real import ROWS, StudyScale, fewshot_templates
    from promptability.train.distributed import resolve_precision

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the study's data folder (runs/study-real/data)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--timings", type=Path, help="a run's timings.json, to print beside the floor")
    parser.add_argument("--budget-min", type=float, default=32.0)
    args = parser.parse_args(argv)

    scale = StudyScale()
    precision = resolve_precision(args.precision)
    model = load_model(args.model)
    config = model.transformer.config
    counts = token_counts(
        args.data, model.tokenizer, 0, scale.max_source_len, scale.max_target_len
    )  # no prompt tokens: a lower bound
    manifest = json.loads((args.data / "study.json").read_text())
    flops = floor(scale, config, counts, fewshot_templates(manifest, scale.fewshot_templates_per_dataset), len(ROWS))
    rate = matmul_rate(torch.bfloat16 if precision == "bf16" else torch.float32)
    measured = stage_seconds(args.timings)
    print(f"matmul rate ({precision}, {torch.get_num_threads()} threads, best of 5): {rate / 1e9:.1f} GFLOP/s")
    print("| stage | matmul TFLOP | floor (min) | measured (min) |\n|---|---:|---:|---:|")
    for stage, value in flops.items():
        got = f"{measured[stage] / 60:.1f}" if stage in measured else ""
        print(f"| {stage} | {value / 1e12:.1f} | {value / rate / 60:.1f} | {got} |")
    total = sum(flops.values()) / rate / 60
    print(f"| **total** | {sum(flops.values()) / 1e12:.1f} | **{total:.1f}** | "
          f"{sum(measured.values()) / 60:.1f} |" if measured else f"| **total** | | **{total:.1f}** | |")  # fmt: skip
    verdict = "cannot" if total > args.budget_min else "can"
    print(f"\nfloor {total:.1f} min vs budget {args.budget_min:g} min: the budget {verdict} be met on this machine")
    return 0


def stage_seconds(path: Path | None) -> dict[str, float]:
    """Seconds per stage kind (pretrain, 0-shot, 16-shot) of a run's timings.json, summed over its rows."""
    if path is None:
        return {}
    out: dict[str, float] = {}
    for s in json.loads(path.read_text())["stages"]:
        key = "pretrain" if s["stage"].startswith("pretrain") else s["stage"].split(" ")[0]
        if key in ("pretrain", "0-shot", "16-shot"):
            out[key] = out.get(key, 0.0) + s["seconds"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
