"""Choose the real study's few-shot recipe (epochs, learning rate) on templates that are not held out.

Issue 13 asks for the recipe to be chosen on P3's dev templates; their datasets (BoolQ, MultiRC, ARC,
OpenBookQA, RACE, SQuAD v2) are not in this workplace's data. This sweep uses the next thing that is never
held out: one T0 *training* template per training dataset of the study's data folder, tuned on the model as
given (the study's "no continued pretraining" row, which never trained on them). Each template's first
``--pool`` rows are its 16-shot pool and the rest its evaluation set; every grid point tunes a fresh
shallow prompt per template and few-shot seed, exactly as ``study real`` does (``train.fewshot.fewshot``).

    python scripts/fewshot_sweep.py --data runs/study-real/data --out runs/fewshot-sweep \
        [--model smollm2-135m] [--epochs 6 12] [--lr 1e-3 3e-3 1e-2] [--seeds 0] [--precision auto]

Writes ``OUT/sweep.md`` and ``OUT/sweep.json``: per grid point the mean accuracy over templates (and per
template), beside the 0-shot accuracy of the same prompt-less model on the same instances, and the recipe the
rule of docs/study-real.md picks (:func:`choose`). A rerun reuses finished grid points (``fewshot`` resumes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptability.studies.real import StudyScale

# One template per training dataset with answer choices (2-4 options, sources under ~100 words); chosen by
# shape before any sweep ran.
TEMPLATES = [
    "ag_news_classify_with_choices",
    "cos_e_v1.11_question_description_option_text",
    "dream_baseline",
    "glue_mrpc_equivalent",
    "rotten_tomatoes_Reviewer_Opinion_bad_good_choices",
    "social_i_qa_Show_choices_and_generate_answer",
]


def build_data(study_data: Path, out: Path, templates: list[str], pool: int) -> tuple[Path, dict[str, int]]:
    """``out/data/{train,validation}/<template>.jsonl``: the first ``pool`` rows, then the rest; and each
    template's number of evaluation rows."""
    from promptability.io import write_jsonl_atomic

    data, evaluated = out / "data", {}
    for t in templates:
        source = study_data / "train" / f"{t}.jsonl"
        if not source.is_file():
            raise SystemExit(f"{source}: missing; run `promptability study real` (its data stage) first")
        rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        if len(rows) <= pool + 8:
            raise SystemExit(f"{source}: {len(rows)} rows, too few for a pool of {pool} and an evaluation set")
        write_jsonl_atomic(data / "train" / f"{t}.jsonl", rows[:pool])
        write_jsonl_atomic(data / "validation" / f"{t}.jsonl", rows[pool:])
        evaluated[t] = len(rows) - pool
    return data, evaluated


def zero_shot(model: str, data: Path, templates: list[str], out: Path, scale: StudyScale) -> dict[str, float]:
    """Accuracy per template of the model as given (no prompt), on the sweep's evaluation rows."""
    import torch

    from promptability.data.readers import read_split
    from promptability.eval.rank import accuracies, evaluate
    from promptability.io import write_json_atomic
    from promptability.model import load_model

    path = out / "zero_shot.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    records = read_split(data, "validation", templates)
    lm = load_model(model)
    autocast = torch.bfloat16 if scale.precision == "bf16" else None
    rows = evaluate(lm, records, batch_size=scale.eval_batch_size, max_source_len=scale.max_source_len,
                    max_target_len=scale.max_target_len, autocast=autocast, progress=False)  # fmt: skip
    acc = accuracies(rows)
    write_json_atomic(path, acc)
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the study's data folder (runs/study-real/data)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--templates", nargs="+", default=TEMPLATES)
    parser.add_argument("--epochs", nargs="+", type=int, default=[6, 12])
    parser.add_argument("--lr", nargs="+", type=float, default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--pool", type=int, default=32, help="rows per template kept as the 16-shot pool")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="as study real's --precision (auto: bf16 only where the hardware has native bf16)",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    from promptability.io import write_json_atomic, write_text_atomic
    from promptability.studies.pipeline import StudySettingsError, check_settings
    from promptability.studies.real import StudyScale, _fewshot_config
    from promptability.train.distributed import resolve_precision
    from promptability.train.fewshot import fewshot

    args.precision = resolve_precision(args.precision)
    scale = replace(StudyScale(), precision=args.precision)
    # Finished grid points and the 0-shot file are reused by folder, so a folder holds one data split and model.
    fixed = {"templates": args.templates, "pool": args.pool, "seeds": args.seeds, "precision": args.precision}
    try:
        check_settings(args.out, {"model": args.model, "data": str(args.data.resolve()), "scale": fixed})
    except StudySettingsError as error:
        raise SystemExit(str(error)) from None
    data, evaluated = build_data(args.data, args.out, args.templates, args.pool)
    base = zero_shot(args.model, data, args.templates, args.out, scale)
    results: list[dict[str, Any]] = []
    for epochs in args.epochs:
        for lr in args.lr:
            # The study's own few-shot settings with this grid point's recipe, so the sweep tunes as the study does;
            # method None records the model's own (as given: "none"), and the shots are a seeded random draw.
            point = replace(scale, fewshot_epochs=epochs, fewshot_lr=lr, seeds=args.seeds)
            config = replace(_fewshot_config(point, "shallow", "none", args.templates), method=None, draw="random")
            run = args.out / f"e{epochs}-lr{lr:g}"
            fewshot(args.model, data, run, config, progress=not args.quiet)
            per_template = _per_template(run, args.seeds, args.templates)
            results.append({"epochs": epochs, "lr": lr, "mean": statistics.fmean(per_template.values()),
                            "per_template": per_template})  # fmt: skip
            print(f"epochs {epochs} lr {lr:g}: mean accuracy {results[-1]['mean']:.3f}", file=sys.stderr)
    chosen = choose(results)
    write_json_atomic(args.out / "sweep.json", {"zero_shot": base, "grid": results, "templates": args.templates,
                                                "seeds": args.seeds, "pool": args.pool, "evaluated": evaluated,
                                                "model": args.model,
                                                "precision": args.precision, "chosen": chosen})  # fmt: skip
    text = render(base, results, args.templates) + f"\nChosen: {chosen['epochs']} epochs at lr {chosen['lr']:g}.\n"
    write_text_atomic(args.out / "sweep.md", text)
    print(text)
    return 0


def choose(results: list[dict[str, Any]], longer_margin: float = 0.02, tie: float = 0.01) -> dict[str, Any]:
    """The rule of docs/study-real.md, fixed before the sweep ran. Points with more epochs than the fewest swept
    are eligible only if they beat the best point at the fewest by ``longer_margin``; if none does, the points at
    the fewest are. Among the eligible points within ``tie`` of the best eligible one: the smallest learning
    rate (then the fewest epochs)."""

    def at_least(a: float, b: float, margin: float) -> bool:  # a >= b + margin, blind to rounding in the sums
        return round(a - b - margin, 9) >= 0

    fewest = min(r["epochs"] for r in results)
    short = [r for r in results if r["epochs"] == fewest]
    best_short = max(r["mean"] for r in short)
    longer = [r for r in results if r["epochs"] > fewest and at_least(r["mean"], best_short, longer_margin)]
    eligible = longer or short
    best = max(r["mean"] for r in eligible)
    return min((r for r in eligible if at_least(r["mean"], best, -tie)), key=lambda r: (r["lr"], r["epochs"]))


def _per_template(run: Path, seeds: list[int], templates: list[str]) -> dict[str, float]:
    """Mean accuracy over few-shot seeds, per template (from each seed's accuracy.json)."""
    per_seed = [json.loads((run / f"seed-{s}" / "accuracy.json").read_text()) for s in seeds]
    return {t: statistics.fmean(float(a[t]) for a in per_seed) for t in templates}


def render(base: dict[str, float], results: list[dict[str, Any]], templates: list[str]) -> str:
    short = [t.split("_")[0] for t in templates]
    lines = ["| epochs | lr | mean | " + " | ".join(short) + " |", "|---:|---:|---:|" + "---:|" * len(templates)]
    lines.append("| 0-shot | – | " + f"{100 * statistics.fmean(base.values()):.1f} | "
                 + " | ".join(f"{100 * base[t]:.1f}" for t in templates) + " |")  # fmt: skip
    for r in results:
        lines.append(f"| {r['epochs']} | {r['lr']:g} | {100 * r['mean']:.1f} | "
                     + " | ".join(f"{100 * r['per_template'][t]:.1f}" for t in templates) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
