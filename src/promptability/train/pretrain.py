"""The continued-pretraining driver: read and mix the data, build the method's step, run the loop, save.

``pretrain(config, out)`` trains ``config.method`` (a name in the registry,
``promptability.train.methods.METHODS``) and leaves in ``out`` a loadable model
dir plus ``train.json`` (what was trained, on what, for how long),
``train_config.json``, ``metrics.jsonl`` and ``checkpoints/`` for ``--resume``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from promptability.data.readers import iter_examples, read_split
from promptability.data.suite_layout import find_meta
from promptability.io import write_json_atomic
from promptability.model.prompted import CONFIG_FILE, STAGING, STAGING_COMPLETE, PromptedModel
from promptability.train.config import T0_TRAIN, ConfigError, DataConfig, TrainConfig
from promptability.train.loop import TrainResult, latest_checkpoint, make_accelerator, train
from promptability.train.methods import build_step
from promptability.train.state import seed_everything


def pretraining_tasks(data: DataConfig) -> list[str] | None:
    """The templates to pretrain on; None = decided after reading (see ``DataConfig.tasks``)."""
    if data.tasks == T0_TRAIN:
        from promptability.data.registry import train_templates

        return train_templates()
    if isinstance(data.tasks, str):
        raise ConfigError(f"data.tasks must be a list of templates, '{T0_TRAIN}' or null, got {data.tasks!r}")
    # cast: the only caller, _iter_records, runs after check_data refused a missing path
    if data.tasks is None and (meta := find_meta(cast(str, data.path))) is not None:
        return [t for t, info in meta["templates"].items() if info["role"] == "train"]
    return data.tasks


def _iter_records(data: DataConfig) -> Iterator[dict[str, Any]]:
    """The training records, streamed (the P3 mixture does not fit in memory as Python objects)."""
    assert data.path is not None  # load_pretraining_data ran check_data first
    from promptability.data import registry

    tasks = pretraining_tasks(data)
    if find_meta(data.path) is not None:
        source: Any = read_split(data.path, data.split, tasks)
    else:
        source = iter_examples(data.path, data.split, tasks)
    # With templates chosen by default, evaluation templates must never leak into pretraining.
    excluded = set(registry.heldout_templates()) | set(registry.dev_templates()) if tasks is None else set()
    count = 0
    for record in source:
        if record["task"] not in excluded:
            count += 1
            yield record
    if not count:
        raise ConfigError(f"no '{data.split}' training records in {data.path} for tasks {data.tasks!r}")


def check_data(data: DataConfig) -> None:
    if not data.path:
        raise ConfigError("no training data: pass --data PATH (or data.path in the config)")
    if not Path(data.path).exists():
        raise ConfigError(f"training data {data.path} does not exist")


def load_pretraining_data(
    config: TrainConfig, tokenizer: Any, accelerator: Any = None, continuation: bool = False, progress: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Reads, tokenizes (cached, main process first) and mixes the training data; returns (dataset, info).

    ``continuation``: the decoder-only token layout (``tokenize_records``); pass ``model.is_causal``.
    """
    from promptability.data.batching import mix, task_indices
    from promptability.data.caps import template_datasets
    from promptability.data.schema import DataError
    from promptability.data.tokenize import cache_root, tokenize_records

    data = config.data
    check_data(data)
    assert data.path is not None  # check_data refused a missing path
    # The cache key covers the files, not which split/templates were read from them: keep those apart.
    selection = json.dumps([data.split, data.tasks], sort_keys=True)
    cache_dir = cache_root() / "tokenized" / hashlib.sha256(selection.encode()).hexdigest()[:12]
    first = accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext()
    with first:
        try:
            tokenized = tokenize_records(
                lambda: _iter_records(data), tokenizer, max_source_len=data.max_source_len,
                max_target_len=data.max_target_len, cache_dir=cache_dir, files=[data.path], continuation=continuation,
                progress=progress,
            )  # fmt: skip
        except Exception as err:  # datasets wraps errors of the record generator: show the data error itself
            cause = err.__cause__ or err.__context__
            if isinstance(cause, (DataError, ConfigError)):
                raise cause from None
            raise
    # cap_per "dataset": a dataset's templates share the cap (data/caps.py says which dataset a template renders)
    datasets = template_datasets(task_indices(tokenized.dataset), data.path) if data.cap_per == "dataset" else None
    mixture = mix(tokenized.dataset, cap=data.cap, seed=config.seed, dataset_of=datasets)
    info = {"path": str(data.path), "split": data.split, "tasks": len(mixture.counts), "cap": data.cap,
            "cap_per": data.cap_per, "examples": len(mixture.dataset),
            "examples_before_cap": sum(mixture.original_counts.values()),
            "sources_truncated": tokenized.stats.sources_truncated,
            "targets_truncated": tokenized.stats.targets_truncated, "per_task": mixture.counts}  # fmt: skip
    return mixture.dataset, info


# Options added after runs were saved, with the behaviour those runs had: resuming one keeps its own behaviour or
# says which setting to give (e.g. --set loss_weighting=token), rather than refusing over a missing key.
LEGACY_SETTINGS = {
    "loss_weighting": "token", "deep_init": "tokens", "data.step_composition": "length_bands",
    "data.cap_per": "template", "meta.episodes": "sample", "meta.reptile_transformer_step": "sgd",
}  # fmt: skip


def _check_resumable(out: Path, config: TrainConfig, resume: bool) -> None:
    saved = out / "train_config.json"
    if not resume:
        if latest_checkpoint(out) is not None:
            raise ConfigError(
                f"{out} already holds checkpoints: pass --resume to continue that run, or pick a new --out"
            )
        return
    if saved.is_file():
        old, new = json.loads(saved.read_text()), asdict(config)
        for key, value in LEGACY_SETTINGS.items():  # a run saved before the option existed used its old behaviour
            section, _, name = key.rpartition(".")
            (old.get(section, {}) if section else old).setdefault(name, value)
        keys = ("method", "prompt", "prompt_length", "model", "batch_size", "seed", "loss_weighting", "deep_init",
                "data", "meta")  # fmt: skip
        diff = [k for k in keys if old.get(k) != new.get(k)]
        if diff:
            raise ConfigError(
                f"--resume with settings that differ from {saved}: "
                + "; ".join(f"{k}: the run has {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
            )


def save_final_model(model: PromptedModel, out: Path, extra: dict[str, Any]) -> None:
    """Saves the model INTO ``out`` (which also holds checkpoints/ and logs) as one unit.

    ``out`` cannot be renamed as a whole, so the files are moved one by one, which a kill can
    interrupt half-way (new weights beside an old prompt). The staging folder is therefore marked
    complete before the first move; while it is, ``load_model`` refuses ``out`` and the next
    ``pretrain`` on it finishes the moves (``finish_final_save``).
    """
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # an incomplete one from a killed save: never moved from
    model.save(staging, extra=extra)
    write_json_atomic(staging / STAGING_COMPLETE, {"files": sorted(f.name for f in staging.iterdir())})
    finish_final_save(out)


def finish_final_save(out: Path) -> None:
    """Completes a final save whose staging folder is marked complete; nothing to do otherwise."""
    staging = out / STAGING
    if not (staging / STAGING_COMPLETE).is_file():
        return
    new = set(json.loads((staging / STAGING_COMPLETE).read_text())["files"])
    for old in out.glob("model*.safetensors*"):  # shards of an earlier final save
        if old.name not in new:
            old.unlink()
    # promptability.json last: only then is `out` a (complete) model dir for load_model.
    for f in sorted(staging.iterdir(), key=lambda f: f.name == CONFIG_FILE):
        if f.name != STAGING_COMPLETE:
            os.replace(f, out / f.name)
    (staging / STAGING_COMPLETE).unlink()
    staging.rmdir()


def _final_loss(result_loss: float | None, out: Path) -> float | None:
    """This session's last loss; a resumed run that had no step left keeps the loss its log ends with."""
    if result_loss is not None or not (out / "metrics.jsonl").is_file():
        return result_loss
    losses = [json.loads(line).get("loss") for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    return next((x for x in reversed(losses) if x is not None), None)


def pretrain(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    accelerator: Any = None,
    model: PromptedModel | None = None,
) -> TrainResult:
    """Continued pretraining with ``config.method``; ``out_dir`` becomes the trained model dir (+ train.json).

    ``model``: an already built model to train instead of ``load_model(config.model, ...)`` (tests).
    """
    from promptability.model.loading import load_model, model_size

    config.validate()
    check_data(config.data)  # before any model is built or anything written
    out = Path(out_dir)
    _check_resumable(out, config, resume)
    accelerator = accelerator if accelerator is not None else make_accelerator(config.precision)
    if accelerator.is_main_process:
        finish_final_save(out)  # a final save that a kill interrupted
    seed_everything(config.seed, deterministic=accelerator.device.type == "cpu")
    prompt_length = config.prompt_length if config.prompt != "none" else None
    if model is None:
        name = config.model
        if name == "tiny":
            # Build the base model once, so all processes and every --resume load one saved tokenizer and one
            # initialisation instead of rebuilding them (the tokenizer is deterministic, but a resumed run must
            # not depend on the suite's text or the seed code being unchanged since the first start).
            name = str(out / "base-model")
            if accelerator.is_main_process and not (out / "base-model" / CONFIG_FILE).is_file():
                load_model("tiny", seed=config.seed).save(name)
            accelerator.wait_for_everyone()
        model = load_model(
            name, prompt=config.prompt, prompt_length=prompt_length, seed=config.seed, deep_init=config.deep_init
        )
    elif model.prompt_kind != config.prompt:
        raise ConfigError(f"the given model has a {model.prompt_kind!r} prompt, the config asks for {config.prompt!r}")
    dataset, data_info = load_pretraining_data(config, model.tokenizer, accelerator, model.is_causal, progress)
    step = build_step(config.method, model, dataset, config, accelerator)
    max_steps = config.max_steps or max(1, math.ceil(config.epochs * step.steps_per_epoch))
    if accelerator.is_main_process:
        write_json_atomic(out / "train_config.json", asdict(config))  # makes ``out`` too
    result = train(
        model, step, accelerator, max_steps=max_steps, out_dir=out, lr=config.lr, clip_norm=config.clip_norm,
        save_every=config.save_every, keep_checkpoints=config.keep_checkpoints, resume=resume, seed=config.seed,
        log_every=config.log_every, progress=progress, desc=f"pretrain {config.method}",
        fsdp=config.fsdp if config.distributed == "fsdp" else None,
    )  # fmt: skip
    if accelerator.is_main_process:
        info = {
            "method": config.method, "prompt": config.prompt, "prompt_length": model.prompt_length,
            "base_model": config.model, "model_size": model_size(config.model), "seed": config.seed,
            "data": data_info, "steps": result.steps, "max_steps": max_steps,
            "steps_per_epoch": step.steps_per_epoch, "examples_seen": result.examples, "tokens_seen": result.tokens,
            "wall_time_s": round(result.wall_time_s, 3), "world_size": accelerator.num_processes,
            "final_loss": _final_loss(result.last.get("loss"), out), "resumed_from_step": result.resumed_from, "config": asdict(config),
        }  # fmt: skip
        save_final_model(model, out, {"method": config.method, "trained_steps": result.steps})
        write_json_atomic(out / "train.json", info)
    accelerator.wait_for_everyone()
    return result
