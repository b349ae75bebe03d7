"""The pipeline the demo and the real study share: continued pretraining per row -> 0-shot evaluation ->
few-shot prompt tuning -> the Table-1 report, each stage resumable.

A stage is skipped when its completion marker exists: the file its writer renames into place last, so an
interrupted pipeline continues from the last finished stage; a training stage interrupted mid-way resumes
from its last checkpoint. Folders under ``out``::

    out/models/<row>/seed-<p>/                        one continued-pretraining run per row and pretraining seed
    out/runs/0shot/<row>/seed-<p>/                    zero-shot rank classification (run directories)
    out/runs/16shot/<row>-<prompt>/pseed-<p>/seed-<f>/  few-shot prompt tuning + evaluation per few-shot seed
    out/runs/0shot/base/, out/runs/16shot/base-<prompt>/seed-<f>/   a row without continued pretraining: one model
    out/report/                        table.md/.csv/.json, per_group_accuracy.png
    out/timings.json                   what each stage took, or that it was reused
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptability.io import write_json_atomic

if TYPE_CHECKING:
    import torch

    from promptability.data.schema import Example
    from promptability.train.config import FewShotConfig, TrainConfig


class Stages:
    """Runs stages in order, prints what each took (or that it was reused) and keeps the timings."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.timings: list[tuple[str, float, bool]] = []
        self.started = time.perf_counter()

    def run(self, name: str, marker: Path, fn: Callable[[], Any]) -> None:
        if marker.exists():
            self.timings.append((name, 0.0, True))
            print(f"[{self.label}] {name}: done earlier, reused")
            return
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        self.timings.append((name, took, False))
        print(f"[{self.label}] {name}: {took:.1f} s")

    def record(self, name: str, seconds: float) -> None:
        self.timings.append((name, seconds, False))

    def summary(self) -> dict[str, Any]:
        stages = [{"stage": n, "seconds": round(s, 2), "reused": r} for n, s, r in self.timings]
        return {"stages": stages, "total_s": round(time.perf_counter() - self.started, 2)}


class StudySettingsError(ValueError):
    """An output folder that holds a study run with other settings."""


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Finished stages are reused by marker, so they must come from the same settings.

    ``settings``: ``model``, ``data`` and ``scale`` (a dict); the first call writes them to ``out/settings.json``.
    """
    path = out / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in settings["scale"] if before["scale"].get(k) != settings["scale"][k])
        changed += [k for k in ("model", "data") if before.get(k) != settings[k]]
        if changed:
            raise StudySettingsError(
                f"{out} holds a study with other settings ({', '.join(changed)}); use another --out or --force"
            )
    else:
        write_json_atomic(path, settings)


def start(out: str | Path, force: bool, label: str) -> tuple[Path, Stages]:
    """The output folder (emptied first with ``force``) and the stage runner of one pipeline run."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load drowns the stage bars
    out = Path(out)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out, Stages(label)


@dataclass
class Plan:
    """What one pipeline run trains and evaluates; models are read from and written to ``out/models/<row>``.

    Every row of ``pretrain`` is trained once per pretraining seed (``TrainConfig.seed``) into
    ``out/models/<row>/seed-<p>``, and its 0-shot and few-shot entries run on each seed's model (their model
    field is then unused); other rows (e.g. "base") are one model, as given.
    """

    data: Path  # the data folder (suite layout): training data and held-out templates
    heldout: list[str]  # the templates evaluated 0-shot
    pretrain: list[tuple[str, TrainConfig]]  # (row, its continued-pretraining config)
    zero_shot: list[tuple[str, str, str]]  # (row, method, the model to load)
    fewshot: list[tuple[str, str | Path, FewShotConfig]]  # (row, the model to tune, config): runs/16shot/<row>-<prompt>
    model_size: str  # for the run.json of the 0-shot runs
    eval_batch_size: int
    max_source_len: int
    max_target_len: int
    autocast: torch.dtype | None = None  # of the 0-shot evaluation
    run_info: dict[str, Any] = field(default_factory=dict)  # more fields for each 0-shot run.json
    pretrain_seeds: list[int] = field(default_factory=lambda: [0])  # one continued-pretraining run per seed and row

    def __post_init__(self) -> None:
        seeds = self.pretrain_seeds
        valid = all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        if not seeds or not valid or len(set(seeds)) != len(seeds):
            raise ValueError(f"pretrain_seeds must be distinct integers >= 0, at least one; got {seeds!r}")


def _models(plan: Plan, out: Path, row: str, model: str | Path) -> list[tuple[str, Path | str, dict[str, Any]]]:
    """(folder below the row's run folder, model, run.json fields) for each model of ``row``: one per
    pretraining seed for a row of ``plan.pretrain``, else the given model."""
    if row not in {r for r, _ in plan.pretrain}:
        return [("", model, {})]
    family = out / "models" / row
    return [(f"seed-{s}", family / f"seed-{s}", {"pretrain_seed": s, "model_family": str(family)})
            for s in plan.pretrain_seeds]  # fmt: skip


def run_plan(plan: Plan, out: Path, stages: Stages, progress: bool = True) -> None:
    """Continued pretraining of every row, then 0-shot evaluation, then few-shot tuning (each stage resumable)."""
    from promptability.data.readers import read_examples
    from promptability.eval.groups import groups_for
    from promptability.train.fewshot import fewshot

    models, runs = out / "models", out / "runs"
    for row, config in plan.pretrain:
        for seed in plan.pretrain_seeds:
            target = models / row / f"seed-{seed}"
            train = partial(_pretrain, replace(config, seed=seed), target, progress)
            stages.run(f"pretrain {row} (seed {seed})", target / "promptability.json", train)

    evaluation = read_examples(plan.data, tasks=plan.heldout)
    groups = groups_for(evaluation, plan.data)
    for row, method, model in plan.zero_shot:
        for folder, source, info in _models(plan, out, row, model):
            run_dir = runs / "0shot" / row / folder
            zero = partial(_zero_shot, plan, method, str(source), run_dir, evaluation, groups, progress, info)
            label = f" (seed {info['pretrain_seed']})" if info else ""
            stages.run(f"0-shot {row}{label}", run_dir / "run.json", zero)

    for row, tuned_model, fewshot_config in plan.fewshot:
        for folder, source, info in _models(plan, out, row, tuned_model):
            run_dir = runs / "16shot" / f"{row}-{fewshot_config.prompt}" / folder.replace("seed-", "pseed-")
            tune = partial(fewshot, source, plan.data, run_dir, fewshot_config, progress=progress, run_info=info)
            label = f", pretraining seed {info['pretrain_seed']}" if info else ""
            stages.run(f"16-shot {row} ({fewshot_config.prompt}{label})", run_dir / "summary.json", tune)


def _pretrain(config: TrainConfig, target: Path, progress: bool) -> None:
    from promptability.train.loop import latest_checkpoint
    from promptability.train.pretrain import pretrain

    pretrain(config, target, resume=latest_checkpoint(target) is not None, progress=progress)


def _zero_shot(plan: Plan, method: str, source: str, run_dir: Path, evaluation: list[Example],
               groups: dict[str, Any], progress: bool, seed_info: dict[str, Any]) -> None:  # fmt: skip
    from promptability.eval.rank import evaluate, precision_of, write_run
    from promptability.model import load_model

    model = load_model(source)
    rows = evaluate(model, evaluation, batch_size=plan.eval_batch_size, max_source_len=plan.max_source_len,
                    max_target_len=plan.max_target_len, progress=progress, autocast=plan.autocast)  # fmt: skip
    write_run(run_dir, rows, {"method": method, "prompt": model.prompt_kind, "shots": 0, "model": source,
                              "model_size": plan.model_size, "seed": None, "score": "mean", "data": str(plan.data),
                              "groups": groups, "precision": precision_of(plan.autocast),
                              "source_eos": not model.is_causal, **plan.run_info, **seed_info})  # fmt: skip


def write_tables(out: Path, stages: Stages, note: str, *, baseline: str, partial: bool,
                 extra: Callable[[Path], None] | None = None, pretrain_seeds: list[int] | None = None) -> str:  # fmt: skip
    """The report of every run under ``out/runs`` into ``out/report`` (``extra`` adds files there), and
    ``out/timings.json``; returns the Markdown table. ``pretrain_seeds``: only runs of these pretraining seeds
    (and runs without one) are reported, so the seeds of an earlier, larger run in ``out`` stay out."""
    from promptability.eval.report import build_report, render_markdown, write_report
    from promptability.eval.runs import find_runs, load_run
    from promptability.train.methods import TABLE1_LABELS

    start_s = time.perf_counter()
    runs = [load_run(p) for p in find_runs([out / "runs"])]
    report = build_report(
        [r for r in runs if pretrain_seeds is None or r.pretrain_seed is None or r.pretrain_seed in pretrain_seeds],
        baseline=baseline,
        partial=partial,
        method_labels=TABLE1_LABELS,
    )
    write_report(report, out / "report", scale_note=note, partial=partial)
    if extra is not None:
        extra(out / "report")
    table = render_markdown(report, note)
    stages.record("report", time.perf_counter() - start_s)
    write_json_atomic(out / "timings.json", stages.summary())
    return table
