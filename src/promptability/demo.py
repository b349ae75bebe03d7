"""The paper's study in miniature, offline: suite -> tiny LM -> continued pretraining -> 0/16-shot -> report.

Every stage writes its own directory under ``out`` and is skipped when its
completion marker is there (the file each writer renames into place last), so
an interrupted demo continues from the last finished stage; a training stage
interrupted mid-way resumes from its last checkpoint. ``force`` starts over.

Layout:
    out/suite/                 the generated task suite
    out/lm/                    prefix-LM records for the LM-adaptation stage
    out/models/base/           the tiny T5 after LM adaptation (row "no continued pretraining")
    out/models/<row>/          one continued-pretraining run per Table-1 row
    out/runs/0shot/<row>/      zero-shot evaluation (run directories)
    out/runs/16shot/<row>-<prompt>/seed-<s>/   few-shot prompt tuning + evaluation
    out/report/                table.md/.csv/.json, per_group_accuracy.png
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptability.io import write_json_atomic, write_jsonl_atomic
from promptability.stages import Stages


@dataclass
class Scale:
    """How big the miniature is. Defaults: about 10 minutes on 2 (quiet) CPU cores; the paper's scale is in configs/."""

    suite_size: str = "default"  # "default": 33 training + 21 held-out templates; "quick": tiny counts
    lm_passages: int = 8000  # LM-adaptation texts (prefix -> continuation)
    lm_steps: int = 250
    batch_size: int = 32  # MTL examples per optimizer step
    mtl_steps: int = 250  # per MTL row: 250 x 32 = 8,000 examples, ~40% of one epoch of the suite
    meta_steps: int = 20  # per meta-learning row: 20 x 4 tasks x (3 support + 1 query) x 16 = 5,120 examples
    meta_batch_size: int = 4
    inner_steps: int = 3
    max_source_len: int = 256
    max_target_len: int = 64
    fewshot_templates_per_dataset: int = 1  # templates few-shot tuned per held-out dataset (0-shot uses all)
    fewshot_epochs: int = 25  # the paper: 100
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    prompt_length: int = 20

    def describe(self, model_params: int) -> str:
        return (
            f"tiny T5 ({model_params / 1e6:.1f}M parameters, random init + {self.lm_steps} LM-adaptation steps); "
            f"offline suite ({self.suite_size}); MTL rows {self.mtl_steps} steps x {self.batch_size} examples; "
            f"meta-learning rows {self.meta_steps} steps x {self.meta_batch_size} tasks x ({self.inner_steps} support "
            f"+ 1 query) x 16; few-shot: 16 shots, {self.fewshot_epochs} epochs (paper: 100), "
            f"{len(self.seeds)} seeds, {self.fewshot_templates_per_dataset} template(s) per held-out dataset; "
            f"0-shot on every held-out template"
        )


QUICK = Scale(
    suite_size="quick", lm_passages=400, lm_steps=8, batch_size=16, mtl_steps=6, meta_steps=2, meta_batch_size=2,
    inner_steps=1, max_source_len=128, max_target_len=32, fewshot_epochs=3, prompt_length=4,
)  # fmt: skip

# The rows of the paper's Table 1: (row name, method, prompt kind). "base" is "no continued pretraining".
ROWS: list[tuple[str, str, str]] = [
    ("mtl-t", "mtl-t", "none"),
    ("mtl-p-shallow", "mtl-p", "shallow"),
    ("mtl-p-deep", "mtl-p", "deep"),
    ("mtl-tp-shallow", "mtl-tp", "shallow"),
    ("mtl-tp-deep", "mtl-tp", "deep"),
    ("fomaml-shallow", "fomaml", "shallow"),
    ("fomaml-deep", "fomaml", "deep"),
    ("reptile-shallow", "reptile", "shallow"),
    ("reptile-deep", "reptile", "deep"),
]


def lm_records(passages: list[str], seed: int) -> list[dict[str, Any]]:
    """Prefix-LM examples as in LM adaptation of T5: a passage cut at a random word, prefix -> continuation."""
    rng = random.Random(seed)
    out = []
    for text in passages:
        words = text.split()
        if len(words) < 4:
            continue
        cut = rng.randrange(1, len(words) - 1)
        out.append({"task": "lm_adaptation", "source": " ".join(words[:cut]), "target": " ".join(words[cut:])})
    return out


def run_demo(out: str | Path = "runs/demo", quick: bool = False, force: bool = False, progress: bool = True) -> str:
    """Runs (or continues) the whole study; returns the Markdown table."""
    from promptability.data.suite import lm_corpus, write_suite
    from promptability.eval.groups import groups_for
    from promptability.eval.rank import evaluate, write_run
    from promptability.eval.report import build_report, render_markdown, write_report
    from promptability.eval.runs import find_runs, load_run
    from promptability.model import load_model
    from promptability.model.loading import model_size
    from promptability.model.prompts import PROMPT_KINDS
    from promptability.train.config import DataConfig, FewShotConfig, MetaConfig, TrainConfig
    from promptability.train.fewshot import fewshot
    from promptability.train.loop import latest_checkpoint
    from promptability.train.mtl import pretrain
    from promptability.data.readers import read_examples

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load drowns the stage bars
    scale = QUICK if quick else Scale()
    out = Path(out)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages("demo")
    suite_dir, models, runs = out / "suite", out / "models", out / "runs"

    stages.run("suite", suite_dir / "suite.json",
               lambda: write_suite(suite_dir, seed=0, size=scale.suite_size, progress=progress))  # fmt: skip
    meta = json.loads((suite_dir / "suite.json").read_text())
    heldout = [t for t, info in meta["templates"].items() if info["role"] == "heldout"]

    def train_config(method: str, prompt: str, data: Path, steps: int, model: str) -> TrainConfig:
        return TrainConfig(
            method=method, prompt=prompt, prompt_length=scale.prompt_length, model=model,
            data=DataConfig(path=str(data), split="train", max_source_len=scale.max_source_len,
                            max_target_len=scale.max_target_len),
            batch_size=scale.batch_size, micro_batch_size=scale.batch_size, max_steps=steps,
            save_every=max(steps // 4, 1), log_every=5,
            meta=MetaConfig(meta_batch_size=scale.meta_batch_size, inner_steps=scale.inner_steps),
        )  # fmt: skip

    def lm_adapt() -> None:
        lm_dir = out / "lm"
        write_jsonl_atomic(lm_dir / "train" / "lm_adaptation.jsonl",
                           lm_records(list(lm_corpus(seed=1, n=scale.lm_passages)), seed=0))  # fmt: skip
        target = models / "base"
        if latest_checkpoint(target) is None:
            model = load_model("tiny", seed=0)
            model.save(target / "init")  # the tokenizer and initial weights, for a resumed run to start from
        model = load_model(target / "init")
        pretrain(train_config("mtl-t", "none", lm_dir, scale.lm_steps, "tiny"), target,
                 resume=latest_checkpoint(target) is not None, progress=progress, model=model)  # fmt: skip

    stages.run("LM adaptation (base model)", models / "base" / "promptability.json", lm_adapt)
    base = str(models / "base")

    for row, method, prompt in ROWS:
        target = models / row
        config = train_config(method, prompt, suite_dir, scale.meta_steps if method in ("fomaml", "reptile")
                              else scale.mtl_steps, base)  # fmt: skip
        stages.run(f"pretrain {row}", target / "promptability.json",
                   lambda c=config, t=target: pretrain(c, t, resume=latest_checkpoint(t) is not None, progress=progress))

    evaluation = read_examples(suite_dir, tasks=heldout)
    groups = groups_for(evaluation, suite_dir)
    zero_shot = [("base", "none")] + [(row, method) for row, method, _ in ROWS]
    for row, method in zero_shot:
        run_dir = runs / "0shot" / row

        def zero(row: str = row, method: str = method, run_dir: Path = run_dir) -> None:
            model = load_model(models / row)
            rows = evaluate(model, evaluation, batch_size=64, max_source_len=scale.max_source_len,
                            max_target_len=scale.max_target_len, progress=progress)  # fmt: skip
            write_run(run_dir, rows, {"method": method, "prompt": model.prompt_kind, "shots": 0,
                                      "model": str(models / row), "model_size": model_size(models / row), "seed": None,
                                      "score": "mean", "data": str(suite_dir), "groups": groups})  # fmt: skip

        stages.run(f"0-shot {row}", run_dir / "run.json", zero)

    by_dataset: dict[str, list[str]] = {}
    for t in heldout:
        by_dataset.setdefault(meta["templates"][t]["dataset"], []).append(t)
    fewshot_tasks = [t for ts in by_dataset.values() for t in ts[: scale.fewshot_templates_per_dataset]]
    for row, method in zero_shot:
        kinds = list(PROMPT_KINDS) if row in ("base", "mtl-t") else [row.rsplit("-", 1)[1]]
        for kind in kinds:
            run_dir = runs / "16shot" / f"{row}-{kind}"
            config = FewShotConfig(
                shots=16, epochs=scale.fewshot_epochs, seeds=list(scale.seeds), prompt=kind,
                prompt_length=scale.prompt_length, tasks=fewshot_tasks, method=method, eval_batch_size=64,
                templates_per_step=len(fewshot_tasks),
                max_source_len=scale.max_source_len, max_target_len=scale.max_target_len,
            )  # fmt: skip
            stages.run(f"16-shot {row} ({kind})", run_dir / "summary.json",
                       lambda m=models / row, d=run_dir, c=config: fewshot(m, suite_dir, d, c, progress=progress))

    params = sum(p.numel() for p in load_model(base).parameters())
    note = scale.describe(params)
    start = time.perf_counter()
    report = build_report([load_run(p) for p in find_runs([runs])], baseline="mtl-t", partial=False)
    write_report(report, out / "report", scale_note=note)
    table = render_markdown(report, note)
    stages.record("report", time.perf_counter() - start)
    write_json_atomic(out / "timings.json", stages.summary())
    return table
