"""Few-shot prompt tuning (the paper's 16-shot evaluation) on every held-out template.

For each seed and each held-out template: k examples are drawn from the
template's few-shot pool (its train split; StoryCloze: validation): on P3 data
with k=16 by default the paper's one fixed draw, the reference subsample
(``config.draw``, ``choose_draw``), else seeded per seed with ``sample_fewshot``;
the prompt is reset to the model's own (or, for a model without one such as an
MTL-T checkpoint, to a fresh prompt initialised from the seed); ``epochs``
optimizer steps on that one fixed batch train the prompt alone (Adafactor lr
1e-3, clip 1.0; the shared training loop with ``steps.fixed_batch``, or
``templates_per_step`` templates at once with ``steps.multi_prompt``); and the
FINAL prompt is evaluated by rank classification on the template's evaluation
split. No epoch is picked on held-out data.

Output, ``OUT/``:

    seed-{s}/predictions.jsonl, accuracy.json, run.json   a run dir per seed (eval.rank.write_run); run.json
                                                          records the draw, its seed, precision, source EOS
    seed-{s}/prompts/{template}/                          the tuned prompt (prompt-only model save);
                                                          a name unsafe as a path is mapped by io.safe_name
    seed-{s}/fewshot.json                                 per template: examples, first/final loss
    summary.json                                          mean and spread over seeds

A rerun skips finished seeds and, within a seed, finished templates.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from promptability.data.batching import TRAIN_COLUMNS, collate, task_indices
from promptability.data.readers import available_tasks, read_split, train_split_for
from promptability.data.schema import DataError
from promptability.data.suite_layout import find_meta
from promptability.io import safe_name, settings_folder, write_json_atomic, write_jsonl_atomic
from promptability.model.loading import model_info, model_size
from promptability.model.prompted import CONFIG_FILE, PromptedModel
from promptability.model.prompts import DEFAULT_PROMPT, NO_PROMPT
from promptability.train.config import ConfigError, FewShotConfig
from promptability.train.loop import make_accelerator, train
from promptability.train.steps.fixed_batch import FixedBatchStep
from promptability.train.steps.multi_prompt import tune_prompts_together

logger = logging.getLogger(__name__)


# ----- which templates ----------------------------------------------------------------------------
def heldout_tasks(path: str | os.PathLike, tasks: list[str] | None = None) -> tuple[list[str], dict[str, Any] | None]:
    """(templates to tune on, their ARG groups or None for the P3 registry's).

    Default: the held-out templates the data has: the suite's role "heldout",
    else the registry's held-out templates present in the data.
    """
    from promptability.data.registry import heldout_templates

    meta = find_meta(path)
    if meta is not None:
        from promptability.eval.groups import suite_groups

        groups = suite_groups(meta, role=None)
        names = tasks or [t for t, info in meta["templates"].items() if info["role"] == "heldout"]
        unknown = [t for t in names if t not in groups]
        if unknown:
            raise ConfigError(f"{path}: the suite has no template(s) {unknown[:5]}")
        return list(names), {t: groups[t] for t in names}
    if tasks:
        return list(tasks), None
    registry = list(heldout_templates())
    available = available_tasks(Path(path))
    if available is None:
        available = {r["task"] for r in read_split(path, None)}
    names = [t for t in registry if t in available]
    if not names:
        raise ConfigError(
            f"{path} holds none of the {len(registry)} held-out P3 templates; name the templates with --tasks"
        )
    return names, None


def choose_draw(config: FewShotConfig, data: str | os.PathLike, templates: list[str]) -> str:
    """The draw to make, "reference" or "random": ``config.draw``, "auto" resolved for ``templates`` of ``data``.

    "auto" is the paper's fixed reference subsample when k=16 and every template is a P3 folder with one
    (the P3 held-out and dev templates); elsewhere (the suite, real data, other k) no such draw exists.
    """
    from promptability.data.fewshot import has_reference_subsample, p3_template_folder

    if config.draw != "auto":
        return config.draw
    p3 = all(has_reference_subsample(t) and p3_template_folder(t, data) is not None for t in templates)
    return "reference" if config.shots == 16 and p3 else "random"


# ----- the prompt ---------------------------------------------------------------------------------
def load_for_fewshot(model_dir: str | os.PathLike, config: FewShotConfig) -> tuple[PromptedModel, bool]:
    """The model with a prompt to tune, and whether that prompt is fresh (the model had none)."""
    from promptability.model.loading import load_model

    settings_file = Path(model_dir) / CONFIG_FILE
    saved = json.loads(settings_file.read_text())["prompt"] if settings_file.is_file() else NO_PROMPT
    if saved != NO_PROMPT:
        length = config.prompt_length if config.prompt else None  # None: the saved prompt's length
        return load_model(model_dir, prompt=config.prompt, prompt_length=length), False
    kind = config.prompt or DEFAULT_PROMPT
    model = load_model(
        model_dir, prompt=kind, prompt_length=config.prompt_length, seed=config.seeds[0], deep_init=config.deep_init
    )
    return model, True


def _spread(values: list[float]) -> dict[str, Any]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values), "per_seed": values}


def summarize(accuracies: dict[int, dict[str, float]], groups: dict[str, Any] | None) -> dict[str, Any]:
    """Mean and spread over seeds: per template, of the template average, and of ARG when computable."""
    from promptability.eval.metrics import MetricsError, average_relative_gain

    seeds = sorted(accuracies)
    templates = sorted(accuracies[seeds[0]])
    out: dict[str, Any] = {"seeds": seeds, "templates": len(templates)}
    out["mean_accuracy"] = _spread([statistics.fmean(accuracies[s].values()) for s in seeds])
    try:
        out["arg"] = _spread([average_relative_gain(accuracies[s], groups, partial=True) for s in seeds])
    except MetricsError as err:  # templates outside the registry and no groups given
        out["arg"] = None
        logger.info("no ARG in the summary: %s", err)
    out["accuracy"] = {t: _spread([accuracies[s][t] for s in seeds]) for t in templates}
    return out


# ----- one run: shared setup, then one seed at a time ----------------------------------------------
@dataclass
class _Run:
    """What every seed of a few-shot run shares."""

    config: FewShotConfig
    data: str | os.PathLike
    accelerator: Any
    model: PromptedModel
    fresh: bool  # the model had no prompt: each template starts from a fresh one
    snapshot: dict[str, torch.Tensor]  # the prompt every template starts from (when not fresh)
    templates: list[str]
    pools: list  # the few-shot pools' records
    evaluation: dict[str, list]  # template -> its evaluation records
    settings: dict[str, Any]  # run.json's fields shared by every seed
    progress: bool

    def reset_prompt(self, seed: int) -> None:
        if self.fresh:
            self.model.init_prompt(seed)
        else:
            assert self.model.prompt is not None  # few-shot models always carry a prompt (load_for_fewshot)
            self.model.prompt.load_state_dict(self.snapshot)


def _evaluation_records(data: str | os.PathLike, templates: list[str]) -> dict[str, list]:
    evaluation: dict[str, list] = {}
    for r in read_split(data, None, templates):
        evaluation.setdefault(r["task"], []).append(r)
    missing = [t for t in templates if t not in evaluation]
    if missing:
        raise ConfigError(f"{data}: no evaluation records for {missing[:5]}")
    return evaluation


def _settings(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    config: FewShotConfig,
    model: PromptedModel,
    fresh: bool,
    groups: dict[str, Any] | None,
    draw: str,
) -> dict[str, Any]:
    """run.json's fields shared by every seed."""
    info = model_info(model_dir)
    size = model_size(model_dir, info)
    settings = {"method": config.method or info.get("method") or "none", "prompt": model.prompt_kind,
                "shots": config.shots, "model": str(model_dir), "model_size": size, "data": str(data),
                "score": config.score, "epochs": config.epochs, "lr": config.lr, "prompt_length": model.prompt_length,
                "fresh_prompt": fresh, "tuned": "prompt-only", "loss_weighting": config.loss_weighting, "draw": draw,
                "precision": config.precision, "source_eos": config.source_eos and not model.is_causal}  # fmt: skip
    if fresh and model.prompt is not None and model.prompt.takes_deep_init:
        settings["deep_init"] = model.deep_init
    if config.micro_batch_tokens:  # only when set, so that runs from before the option resume
        settings["micro_batch_tokens"] = config.micro_batch_tokens
    if groups is not None:
        settings["groups"] = groups
    return settings


def _finished(run_dir: Path, run: _Run) -> dict[str, float] | None:
    """The accuracies of a seed finished by an earlier call with the same settings, else None."""
    if not (run_dir / "run.json").is_file():
        return None
    previous = json.loads((run_dir / "run.json").read_text())
    keys = ("shots", "epochs", "lr", "prompt", "model", "loss_weighting", "draw", "precision", "source_eos")
    changed = [k for k in keys if previous.get(k) != run.settings[k]]
    if changed:
        raise ConfigError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); pick a new --out")
    done = json.loads((run_dir / "accuracy.json").read_text())
    return done if sorted(done) == sorted(run.templates) else None


def _shots(run: _Run, seed: int) -> tuple[dict[str, Any], Any]:
    """This seed's k shots per template, tokenized: (template -> row indices, the rows' training columns)."""
    from promptability.data.fewshot import reference_fewshot_subsample, sample_fewshot
    from promptability.data.tokenize import tokenize_records

    config = run.config
    if run.settings["draw"] == "reference":  # the paper's fixed subsample (md5-checked): seeds vary init, dropout
        try:
            shots = {t: reference_fewshot_subsample(t, run.data) for t in run.templates}
        except DataError as err:
            if config.draw != "auto":
                raise
            raise type(err)(f"{err} (the default draw on P3 is the paper's reference subsample; "
                            "--set draw=random samples instead)") from None  # fmt: skip
    else:
        shots = sample_fewshot(run.pools, k=config.shots, seed=seed)
    tokenized = tokenize_records(
        [r for t in run.templates for r in shots[t]], run.model.tokenizer, max_source_len=config.max_source_len,
        max_target_len=config.max_target_len, use_cache=False, progress=False,
        continuation=run.model.is_causal, source_eos=config.source_eos,
    ).dataset  # fmt: skip
    return task_indices(tokenized), tokenized.select_columns(TRAIN_COLUMNS)


def _tune(run: _Run, group: list[str], rows_of: dict[str, Any], view: Any, seed: int) -> dict[str, dict[str, Any]]:
    """Tunes the (reset) prompt on each template of ``group``: {template: state or None, examples, losses}."""
    model, config = run.model, run.config
    if len(group) == 1:  # the shared loop, one template
        batch = collate(view[rows_of[group[0]].tolist()], model.pad_token_id)
        step = FixedBatchStep(batch, loss_weighting=config.loss_weighting, micro_batch_tokens=config.micro_batch_tokens)
        result = train(model, step, run.accelerator, max_steps=config.epochs, lr=config.lr,
                       clip_norm=config.clip_norm, seed=seed, progress=False)  # fmt: skip
        return {group[0]: {"state": None, "first_loss": step.first_loss, "final_loss": result.last.get("loss"),
                           "examples": len(batch["labels"])}}  # fmt: skip
    # Several templates in one batch, each exactly as if alone (train/steps/multi_prompt.py).
    assert model.prompt is not None  # few-shot models always carry a prompt (load_for_fewshot)
    start = {k: v.clone() for k, v in model.prompt.state_dict().items()}
    tuned = tune_prompts_together(
        model, {t: [view[int(i)] for i in rows_of[t]] for t in group}, start, epochs=config.epochs,
        pad_id=model.pad_token_id, lr=config.lr, clip_norm=config.clip_norm, autocast=_autocast_dtype(config),
        progress=run.progress, loss_weighting=config.loss_weighting,
    )  # fmt: skip
    for t in group:
        tuned[t]["examples"] = len(rows_of[t])
    return tuned


def _autocast_dtype(config: FewShotConfig) -> torch.dtype | None:
    return torch.bfloat16 if config.precision == "bf16" else None


def _evaluate_and_save(run: _Run, template: str, tuned: dict[str, Any], run_dir: Path, seed: int) -> float:
    """Evaluates ``template`` with its tuned prompt; saves the prompt and the partial result. Returns the final loss."""
    from promptability.eval.rank import evaluate

    config, model = run.config, run.model
    if tuned["state"] is not None:
        assert model.prompt is not None  # few-shot models always carry a prompt (load_for_fewshot)
        model.prompt.load_state_dict(tuned["state"])
    rows = evaluate(model, run.evaluation[template], batch_size=config.eval_batch_size, score=config.score,
                    max_source_len=config.max_source_len, max_target_len=config.max_target_len,
                    progress=False, autocast=_autocast_dtype(config), source_eos=config.source_eos)  # fmt: skip
    losses = {k: tuned[k] for k in ("examples", "first_loss", "final_loss")}
    extra = {"template": template, "seed": seed, **losses}
    model.save(run_dir / "prompts" / safe_name(template), prompt_only=True, extra=extra)
    write_jsonl_atomic(run_dir / "partial" / f"{safe_name(template)}.jsonl", [{"template": template, **losses}] + rows)
    return losses["final_loss"]


def _write_seed(run: _Run, run_dir: Path, seed: int) -> dict[str, float]:
    """Gathers the seed's partial results into its run dir (eval.rank.write_run); returns its accuracies."""
    from promptability.eval.rank import write_run

    partial = run_dir / "partial"
    rows, losses = [], {}
    for template in run.templates:
        text = (partial / f"{safe_name(template)}.jsonl").read_text()
        lines = [json.loads(x) for x in text.splitlines() if x.strip()]
        losses[template] = {k: v for k, v in lines[0].items() if k != "template"}
        rows += lines[1:]
    write_json_atomic(run_dir / "fewshot.json", losses)
    draw_seed = seed if run.settings["draw"] == "random" else None
    accuracies = write_run(run_dir, rows, {**run.settings, "seed": seed, "draw_seed": draw_seed})
    shutil.rmtree(partial)
    return accuracies


def _run_seed(run: _Run, run_dir: Path, seed: int) -> dict[str, float]:
    """Tunes and evaluates every template not finished yet for ``seed``; returns the seed's accuracies."""
    rows_of, view = _shots(run, seed)
    partial = run_dir / "partial"
    settings_folder(partial, {**run.settings, "seed": seed}, ConfigError, "pick a new --out")
    bar = tqdm(total=len(run.templates), desc=f"few-shot seed {seed}", unit="template", disable=not run.progress,
               dynamic_ncols=True)  # fmt: skip
    todo = [t for t in run.templates if not (partial / f"{safe_name(t)}.jsonl").is_file()]
    bar.update(len(run.templates) - len(todo))
    chunk = max(1, run.config.templates_per_step)
    for first in range(0, len(todo), chunk):
        group = todo[first : first + chunk]
        run.reset_prompt(seed)
        tuned = _tune(run, group, rows_of, view, seed)
        for template in group:
            final_loss = _evaluate_and_save(run, template, tuned[template], run_dir, seed)
            bar.update(1)
            bar.set_postfix(template=template[-24:], loss=f"{final_loss:.3f}")
    bar.close()
    return _write_seed(run, run_dir, seed)


def fewshot(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: FewShotConfig | None = None,
    *,
    progress: bool = True,
    accelerator: Any = None,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Few-shot prompt tuning + evaluation for every seed and held-out template; returns the summary.

    ``run_info``: more fields for every seed's run.json (e.g. the model's ``pretrain_seed``)."""
    config = (config or FewShotConfig()).validate()
    out = Path(out_dir)
    accelerator = accelerator if accelerator is not None else make_accelerator(config.precision)
    templates, groups = heldout_tasks(data, config.tasks)
    model, fresh = load_for_fewshot(model_dir, config)
    model.freeze("prompt-only")
    model.to(accelerator.device)
    assert model.prompt is not None  # few-shot models always carry a prompt (load_for_fewshot)
    snapshot = {k: v.clone() for k, v in model.prompt.state_dict().items()}
    draw = choose_draw(config, data, templates)
    pools = read_split(data, train_split_for, templates) if draw == "random" else []  # the reference reads its own
    run = _Run(config, data, accelerator, model, fresh, snapshot, templates, pools,
               _evaluation_records(data, templates),
               {**_settings(model_dir, data, config, model, fresh, groups, draw), **(run_info or {})}, progress)  # fmt: skip
    accuracies: dict[int, dict[str, float]] = {}
    for seed in config.seeds:
        run_dir = out / f"seed-{seed}"
        done = _finished(run_dir, run)
        accuracies[seed] = done if done is not None else _run_seed(run, run_dir, seed)
    run.reset_prompt(config.seeds[0])
    summary = {**{k: v for k, v in run.settings.items() if k != "groups"}, **summarize(accuracies, groups)}
    write_json_atomic(out / "summary.json", summary)
    return summary
