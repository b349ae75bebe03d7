"""Few-shot prompt tuning (the paper's 16-shot evaluation) on every held-out template.

For each seed and each held-out template: k examples are drawn from the
template's few-shot pool (its train split; StoryCloze: validation) with the
readers' ``sample_fewshot``; the prompt is reset to the model's own (or, for a
model without one such as an MTL-T checkpoint, to a fresh prompt initialised
from the seed); ``epochs`` optimizer steps on that one fixed batch train the
prompt alone (Adafactor lr 1e-3, clip 1.0; the shared training loop); and the
FINAL prompt is evaluated by rank classification on the template's evaluation
split. No epoch is picked on held-out data.

Output, ``OUT/``:

    seed-{s}/predictions.jsonl, accuracy.json, run.json   a run dir per seed (eval.rank.write_run)
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from promptability.data.batching import TRAIN_COLUMNS, collate, task_indices
from promptability.data.readers import NAMED_FILE
from promptability.io import safe_name, write_json_atomic, write_jsonl_atomic
from promptability.model.loading import model_info, model_size
from promptability.model.prompted import CONFIG_FILE, PromptedModel
from promptability.model.prompts import DEFAULT_PROMPT, NO_PROMPT
from promptability.train.config import ConfigError, FewShotConfig
from promptability.train.loop import make_accelerator, train
from promptability.train.mtl import pad_id_of, read_split, suite_meta, token_nll_sum
from promptability.train.multiprompt import tune_prompts_together

logger = logging.getLogger(__name__)


class FixedBatchStep:
    """The train step of few-shot tuning: the same batch every step, mean token NLL."""

    def __init__(self, batch: Mapping[str, torch.Tensor]) -> None:
        self.batch = dict(batch)
        self.calls = 0
        self.first_loss: float | None = None  # the loss before any update

    def __call__(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        batch = {k: v.to(accelerator.device) for k, v in self.batch.items()}
        with accelerator.autocast():
            out = model(**batch, return_loss=False)
            nll = token_nll_sum(out.logits, batch["labels"], batch["decoder_attention_mask"])
        n = int(batch["decoder_attention_mask"].sum())
        accelerator.backward(nll / n)
        self.calls += 1
        loss = float(nll.detach()) / n
        if self.first_loss is None:
            self.first_loss = loss
        tokens = n + int(batch["attention_mask"].sum())
        return {"loss": loss, "tokens": float(tokens), "examples": float(len(batch["labels"]))}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])


PARTIAL_SETTINGS = "settings.json"


def _check_partial(partial: Path, settings: dict[str, Any]) -> None:
    """Make ``partial/`` for a seed, or reuse one only if it was made with the same settings.

    A killed run leaves finished templates there; a rerun with another model, lr or data
    must not mix them into its results.
    """
    wanted = json.loads(json.dumps(settings))  # as it reads back: tuples become lists
    record = partial / PARTIAL_SETTINGS
    if partial.is_dir():
        previous = json.loads(record.read_text()) if record.is_file() else None
        if previous != wanted:
            changed = sorted(k for k in set(wanted) | set(previous or {}) if (previous or {}).get(k) != wanted.get(k))
            raise ConfigError(
                f"{partial} holds unfinished results made with other settings ({', '.join(changed) or 'unknown'}); "
                "rerun with the same settings to resume, or pick a new --out"
            )
        return
    partial.mkdir(parents=True)
    write_json_atomic(record, wanted)


# ----- which templates ----------------------------------------------------------------------------
def _available_tasks(path: Path) -> set[str] | None:
    """Template names a data dir offers, when its layout tells without reading records; else None."""
    from promptability.data.p3 import p3_format

    if not path.is_dir():
        return None
    if p3_format(path) is not None:
        return {path.name}
    roots = [path] + ([path / "data"] if (path / "data").is_dir() else [])
    found: set[str] = set()
    for root in roots:
        for entry in root.iterdir():
            if entry.is_dir() and p3_format(entry) is not None:
                found.add(entry.name)
            elif entry.is_file() and entry.suffix in (".jsonl", ".parquet"):
                if (m := NAMED_FILE.match(entry.name)) is None:
                    return None  # records name their tasks inside: must read to know
                found.add(m["task"])
    return found


def heldout_tasks(path: str | os.PathLike, tasks: list[str] | None = None) -> tuple[list[str], dict[str, Any] | None]:
    """(templates to tune on, their ARG groups or None for the P3 registry's).

    Default: the held-out templates the data has: the suite's role "heldout",
    else the registry's held-out templates present in the data.
    """
    from promptability.data.registry import heldout_templates

    meta = suite_meta(path)
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
    available = _available_tasks(Path(path))
    if available is None:
        available = {r["task"] for r in read_split(path, None)}
    names = [t for t in registry if t in available]
    if not names:
        raise ConfigError(
            f"{path} holds none of the {len(registry)} held-out P3 templates; name the templates with --tasks"
        )
    return names, None


# ----- the prompt ---------------------------------------------------------------------------------
def init_prompt(model: PromptedModel, seed: int) -> None:
    """A fresh prompt, initialised as the model's constructor with ``seed`` would."""
    model.init_prompt(seed)


def load_for_fewshot(model_dir: str | os.PathLike, config: FewShotConfig) -> tuple[PromptedModel, bool]:
    """The model with a prompt to tune, and whether that prompt is fresh (the model had none)."""
    from promptability.model.loading import load_model

    settings_file = Path(model_dir) / CONFIG_FILE
    saved = json.loads(settings_file.read_text())["prompt"] if settings_file.is_file() else NO_PROMPT
    if saved != NO_PROMPT:
        length = config.prompt_length if config.prompt else None  # None: the saved prompt's length
        return load_model(model_dir, prompt=config.prompt, prompt_length=length), False
    kind = config.prompt or DEFAULT_PROMPT
    return load_model(model_dir, prompt=kind, prompt_length=config.prompt_length, seed=config.seeds[0]), True


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": _std(values), "min": min(values), "max": max(values),
            "per_seed": values}  # fmt: skip


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


def fewshot(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: FewShotConfig | None = None,
    *,
    progress: bool = True,
    accelerator: Any = None,
) -> dict[str, Any]:
    """Few-shot prompt tuning + evaluation for every seed and held-out template; returns the summary."""
    from promptability.data.fewshot import reference_fewshot_subsample, sample_fewshot
    from promptability.data.readers import train_split_for
    from promptability.data.tokenize import tokenize_records
    from promptability.eval.rank import evaluate, write_run

    config = (config or FewShotConfig()).validate()
    out = Path(out_dir)
    accelerator = accelerator if accelerator is not None else make_accelerator(config.precision)
    templates, groups = heldout_tasks(data, config.tasks)
    model, fresh = load_for_fewshot(model_dir, config)
    model.freeze("prompt-only")
    model.to(accelerator.device)
    snapshot = {k: v.clone() for k, v in model.prompt.state_dict().items()}
    pools = read_split(data, train_split_for, templates)
    evaluation: dict[str, list] = {}
    for r in read_split(data, None, templates):
        evaluation.setdefault(r["task"], []).append(r)
    missing = [t for t in templates if t not in evaluation]
    if missing:
        raise ConfigError(f"{data}: no evaluation records for {missing[:5]}")
    autocast = torch.bfloat16 if config.precision == "bf16" else None
    info = model_info(model_dir)
    size = model_size(model_dir, info)
    run_base = {"method": config.method or info.get("method") or "none", "prompt": model.prompt_kind, "shots": config.shots,
                "model": str(model_dir), "model_size": size, "data": str(data), "score": config.score,
                "epochs": config.epochs, "lr": config.lr, "prompt_length": model.prompt_length,
                "fresh_prompt": fresh, "tuned": "prompt-only"}  # fmt: skip
    if groups is not None:
        run_base["groups"] = groups
    accuracies: dict[int, dict[str, float]] = {}
    for seed in config.seeds:
        run_dir = out / f"seed-{seed}"
        if (run_dir / "run.json").is_file():
            previous = json.loads((run_dir / "run.json").read_text())
            changed = [k for k in ("shots", "epochs", "lr", "prompt", "model") if previous.get(k) != run_base[k]]
            if changed:
                raise ConfigError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); pick a new --out")
            done = json.loads((run_dir / "accuracy.json").read_text())
            if sorted(done) == sorted(templates):
                accuracies[seed] = done
                continue
        if config.reference:  # the paper's fixed 16-shot subsample (md5-checked); seeds vary the prompt init only
            shots = {t: reference_fewshot_subsample(t, data) for t in templates}
        else:
            shots = sample_fewshot(pools, k=config.shots, seed=seed)
        tokenized = tokenize_records(
            [r for t in templates for r in shots[t]], model.tokenizer, max_source_len=config.max_source_len,
            max_target_len=config.max_target_len, use_cache=False, progress=False,
            continuation=model.is_causal,
        ).dataset  # fmt: skip
        rows_of = task_indices(tokenized)
        view = tokenized.select_columns(TRAIN_COLUMNS)
        partial = run_dir / "partial"
        _check_partial(partial, {**run_base, "seed": seed, "reference": config.reference})
        bar = tqdm(total=len(templates), desc=f"few-shot seed {seed}", unit="template", disable=not progress,
                   dynamic_ncols=True)  # fmt: skip
        todo = [t for t in templates if not (partial / f"{safe_name(t)}.jsonl").is_file()]
        bar.update(len(templates) - len(todo))
        chunk = max(1, config.templates_per_step)
        for first in range(0, len(todo), chunk):
            group = todo[first : first + chunk]
            if fresh:
                init_prompt(model, seed)
            else:
                model.prompt.load_state_dict(snapshot)
            if len(group) == 1:  # the shared loop, one template
                batch = collate(view[rows_of[group[0]].tolist()], pad_id_of(model))
                step = FixedBatchStep(batch)
                result = train(model, step, accelerator, max_steps=config.epochs, lr=config.lr,
                               clip_norm=config.clip_norm, seed=seed, progress=False)  # fmt: skip
                tuned = {group[0]: {"state": None, "first_loss": step.first_loss,
                                    "final_loss": result.last.get("loss"), "examples": len(batch["labels"])}}  # fmt: skip
            else:  # several templates in one batch, each exactly as if alone (train/multiprompt.py)
                start = {k: v.clone() for k, v in model.prompt.state_dict().items()}
                tuned = tune_prompts_together(
                    model, {t: [view[int(i)] for i in rows_of[t]] for t in group}, start, epochs=config.epochs,
                    pad_id=pad_id_of(model), lr=config.lr, clip_norm=config.clip_norm, autocast=autocast,
                    progress=progress,
                )  # fmt: skip
                for t in group:
                    tuned[t]["examples"] = len(rows_of[t])
            for template in group:
                if tuned[template]["state"] is not None:
                    model.prompt.load_state_dict(tuned[template]["state"])
                rows = evaluate(model, evaluation[template], batch_size=config.eval_batch_size, score=config.score,
                                max_source_len=config.max_source_len, max_target_len=config.max_target_len,
                                progress=False, autocast=autocast)  # fmt: skip
                losses = {k: tuned[template][k] for k in ("examples", "first_loss", "final_loss")}
                extra = {"template": template, "seed": seed, **losses}
                model.save(run_dir / "prompts" / safe_name(template), prompt_only=True, extra=extra)
                write_jsonl_atomic(partial / f"{safe_name(template)}.jsonl", [{"template": template, **losses}] + rows)
                bar.update(1)
                bar.set_postfix(template=template[-24:], loss=f"{losses['final_loss']:.3f}")
        bar.close()
        rows, losses = [], {}
        for template in templates:
            text = (partial / f"{safe_name(template)}.jsonl").read_text()
            lines = [json.loads(x) for x in text.splitlines() if x.strip()]
            losses[template] = {k: v for k, v in lines[0].items() if k != "template"}
            rows += lines[1:]
        write_json_atomic(run_dir / "fewshot.json", losses)
        accuracies[seed] = write_run(run_dir, rows, {**run_base, "seed": seed})
        shutil.rmtree(partial)
    if fresh:
        init_prompt(model, config.seeds[0])
    else:
        model.prompt.load_state_dict(snapshot)
    summary = {**{k: v for k, v in run_base.items() if k != "groups"}, **summarize(accuracies, groups)}
    write_json_atomic(out / "summary.json", summary)
    return summary
