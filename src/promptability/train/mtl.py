"""Multi-task continued pretraining (MTL-T, MTL-P, MTL-TP) and the step registry.

``MTLStep`` takes one optimizer step over one *global* batch of the mixture
(length-grouped, one epoch = one pass), split into micro-batches for gradient
accumulation and across processes. Its loss does not depend on that split:

    loss = (sum of token NLLs over the global batch) / (target tokens in the global batch)

The target-token count is all-reduced before any backward pass, each
micro-batch's summed NLL is scaled by ``world_size / count`` (DDP averages over
processes), so 2 processes x half a batch give the gradients of 1 process x the
whole batch.

``build_step(method, model, data, config)`` freezes the model for ``method``
and returns its train step; ``STEP_BUILDERS`` maps each ``--method`` to a
builder (meta-learning comes from ``promptability.train.meta``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptability.data.batching import TRAIN_COLUMNS, LengthGroupedBatchSampler, TaskBatcher, collate, lengths_of
from promptability.io import write_json_atomic
from promptability.model.prompted import CONFIG_FILE
from promptability.train.config import T0_TRAIN, ConfigError, DataConfig, TrainConfig
from promptability.train.loop import TrainResult, TrainStep, latest_checkpoint, make_accelerator, train
from promptability.train.optim import seed_everything


def pad_id_of(model: nn.Module) -> int:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(model.transformer.config.pad_token_id)


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of the target tokens' negative log-likelihoods (fp32), padding excluded."""
    labels = labels.masked_fill(mask == 0, -100)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")


def _autocast(accelerator: Any):
    return accelerator.autocast() if hasattr(accelerator, "autocast") else contextlib.nullcontext()


def _no_sync(accelerator: Any, model: nn.Module, sync: bool):
    if sync or not hasattr(accelerator, "no_sync"):
        return contextlib.nullcontext()
    return accelerator.no_sync(model)


class MTLStep:
    """One optimizer step of multi-task training over a tokenized mixture (see the module docstring).

    ``batch_size`` is global (all processes); each process reads its share
    ``batch_size / num_replicas`` and runs it in micro-batches of at most
    ``micro_batch_size``. ``steps_per_epoch`` is one pass over ``dataset``.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        pad_id: int,
        batch_size: int,
        micro_batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        megabatch_mult: int = 50,
    ) -> None:
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if len(dataset) == 0:
            raise ValueError("the training mixture is empty")
        self.sampler = LengthGroupedBatchSampler(
            lengths_of(dataset), batch_size, seed=seed, megabatch_mult=megabatch_mult,
            num_replicas=num_replicas, rank=rank,
        )  # fmt: skip
        self.view = dataset.select_columns(TRAIN_COLUMNS)
        self.pad_id = pad_id
        self.micro_batch_size = micro_batch_size
        self.steps_per_epoch = len(self.sampler)
        self._iterator = None

    def prepare(self, model: nn.Module, accelerator: Any) -> nn.Module:
        return accelerator.prepare(model)  # DDP when several processes run

    def _next_indices(self) -> list[int]:
        if self._iterator is None:
            self._iterator = iter(self.sampler)
        try:
            return next(self._iterator)
        except StopIteration:  # end of an epoch: the sampler moved on to the next one
            self._iterator = iter(self.sampler)
            return next(self._iterator)

    def __call__(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        device = accelerator.device
        rows = self.view[self._next_indices()]
        n = len(rows["labels"])
        counts = torch.tensor(
            [sum(map(len, rows["labels"])), sum(map(len, rows["input_ids"])), n], dtype=torch.int64, device=device
        )
        if accelerator.num_processes > 1:
            counts = accelerator.reduce(counts, "sum")
        target_tokens, source_tokens, examples = (int(c) for c in counts.tolist())
        scale = accelerator.num_processes / target_tokens
        starts = range(0, n, self.micro_batch_size)
        nll_total = torch.zeros((), dtype=torch.float64, device=device)
        for j, start in enumerate(starts):
            micro = {k: v[start : start + self.micro_batch_size] for k, v in rows.items()}
            batch = {k: v.to(device) for k, v in collate(micro, self.pad_id).items()}
            with _no_sync(accelerator, model, sync=j == len(starts) - 1), _autocast(accelerator):
                out = model(**batch, return_loss=False)  # the loss is reduced over the global batch below
                nll = token_nll_sum(out.logits, batch["labels"], batch["decoder_attention_mask"])
            accelerator.backward(nll * scale)
            nll_total += nll.detach().double()
        if accelerator.num_processes > 1:
            nll_total = accelerator.reduce(nll_total, "sum")
        return {
            "loss": float(nll_total) / target_tokens,
            "tokens": float(target_tokens + source_tokens),
            "target_tokens": float(target_tokens),
            "examples": float(examples),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self._iterator = None


# ----- the registry -------------------------------------------------------------------------------
def _world(accelerator: Any) -> tuple[int, int]:
    return (1, 0) if accelerator is None else (accelerator.num_processes, accelerator.process_index)


def _mtl_step(method: str, model: nn.Module, data: Any, config: TrainConfig, accelerator: Any) -> TrainStep:
    model.freeze(method)
    world, rank = _world(accelerator)
    if config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {world} processes")
    return MTLStep(
        data, pad_id=pad_id_of(model), batch_size=config.batch_size, micro_batch_size=config.micro_batch_size,
        seed=config.seed, num_replicas=world, rank=rank, megabatch_mult=config.data.megabatch_mult,
    )  # fmt: skip


def _meta_step(method: str, model: nn.Module, data: Any, config: TrainConfig, accelerator: Any) -> TrainStep:
    from promptability.train.meta import MetaStep

    model.freeze("mtl-tp")  # the outer loop updates transformer and prompt; the inner loop only a prompt copy
    m = config.meta
    batcher = TaskBatcher(
        data, pad_id=pad_id_of(model), support_batches=m.inner_steps, batch_size=m.task_batch_size,
        seed=config.seed, task_sampling=m.task_sampling,
    )  # fmt: skip
    step = MetaStep(method, batcher, meta_batch_size=m.meta_batch_size, inner_steps=m.inner_steps,
                    inner_lr=m.inner_lr, carry_inner_state=m.carry_inner_state)  # fmt: skip
    # "One epoch": as many examples drawn as the mixture holds.
    per_step = m.meta_batch_size * (m.inner_steps + 1) * m.task_batch_size
    step.steps_per_epoch = max(1, -(-len(data) // per_step))
    return step


STEP_BUILDERS: dict[str, Callable[[str, nn.Module, Any, TrainConfig, Any], TrainStep]] = {
    "mtl-t": _mtl_step,
    "mtl-p": _mtl_step,
    "mtl-tp": _mtl_step,
    "fomaml": _meta_step,
    "reptile": _meta_step,
}


def build_step(method: str, model: nn.Module, data: Any, config: TrainConfig, accelerator: Any = None) -> TrainStep:
    """Freezes ``model`` for ``method`` and returns its train step over the tokenized ``data``."""
    if method not in STEP_BUILDERS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(STEP_BUILDERS)}")
    return STEP_BUILDERS[method](method, model, data, config, accelerator)


# ----- pretraining data and the driver ------------------------------------------------------------
def suite_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The offline suite's suite.json when ``path`` is a suite folder, else None."""
    if not (Path(path) / "suite.json").is_file():
        return None
    from promptability.data.suite import read_meta

    return read_meta(path)


def read_split(path: str | os.PathLike, split: str | Callable[[str], str] | None, tasks: list[str] | None = None) -> list:
    """``read_examples``, plus the offline suite's ``{root}/{split}/{template}.jsonl`` layout."""
    from promptability.data.readers import eval_split_for, read_examples

    meta = suite_meta(path)
    if meta is None:
        return read_examples(path, split, tasks)
    split_for = eval_split_for if split is None else split if callable(split) else (lambda task: split)
    names = list(tasks) if tasks is not None else list(meta["templates"])
    by_split: dict[str, list[str]] = {}
    for name in names:
        by_split.setdefault(split_for(name), []).append(name)
    records = []
    for name, wanted in by_split.items():
        folder = Path(path) / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{path}: the suite has no '{name}' split folder (needed for {wanted[:3]})")
        records += read_examples(folder, name, wanted)
    return records


def pretraining_tasks(data: DataConfig) -> list[str] | None:
    """The templates to pretrain on; None = decided after reading (see ``DataConfig.tasks``)."""
    if data.tasks == T0_TRAIN:
        from promptability.data.registry import train_templates

        return train_templates()
    if isinstance(data.tasks, str):
        raise ConfigError(f"data.tasks must be a list of templates, '{T0_TRAIN}' or null, got {data.tasks!r}")
    if data.tasks is None and (meta := suite_meta(data.path)) is not None:
        return [t for t, info in meta["templates"].items() if info["role"] == "train"]
    return data.tasks


def _iter_records(data: DataConfig) -> Iterator[dict[str, Any]]:
    """The training records, streamed (the P3 mixture does not fit in memory as Python objects)."""
    from promptability.data import registry
    from promptability.data.readers import iter_examples

    tasks = pretraining_tasks(data)
    if suite_meta(data.path) is not None:
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


def _check_data(data: DataConfig) -> None:
    if not data.path:
        raise ConfigError("no training data: pass --data PATH (or data.path in the config)")
    if not Path(data.path).exists():
        raise ConfigError(f"training data {data.path} does not exist")


def load_pretraining_data(
    config: TrainConfig, tokenizer: Any, accelerator: Any = None, continuation: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Reads, tokenizes (cached, main process first) and mixes the training data; returns (dataset, info).

    ``continuation``: the decoder-only token layout (``tokenize_records``); pass ``model.is_causal``.
    """
    from promptability.data.batching import mix
    from promptability.data.schema import DataError
    from promptability.data.tokenize import cache_root, tokenize_records

    data = config.data
    _check_data(data)
    # The cache key covers the files, not which split/templates were read from them: keep those apart.
    selection = json.dumps([data.split, data.tasks], sort_keys=True)
    cache_dir = cache_root() / "tokenized" / hashlib.sha256(selection.encode()).hexdigest()[:12]
    first = accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext()
    with first:
        try:
            tokenized = tokenize_records(
                lambda: _iter_records(data), tokenizer, max_source_len=data.max_source_len,
                max_target_len=data.max_target_len, cache_dir=cache_dir, files=[data.path], continuation=continuation,
            )  # fmt: skip
        except Exception as err:  # datasets wraps errors of the record generator: show the data error itself
            cause = err.__cause__ or err.__context__
            if isinstance(cause, (DataError, ConfigError)):
                raise cause from None
            raise
    mixture = mix(tokenized.dataset, cap=data.cap, seed=config.seed)
    info = {"path": str(data.path), "split": data.split, "tasks": len(mixture.counts), "cap": data.cap,
            "examples": len(mixture.dataset), "examples_before_cap": sum(mixture.original_counts.values()),
            "per_task": mixture.counts}  # fmt: skip
    return mixture.dataset, info


def _check_resumable(out: Path, config: TrainConfig, resume: bool) -> None:
    saved = out / "train_config.json"
    if not resume:
        if latest_checkpoint(out) is not None:
            raise ConfigError(f"{out} already holds checkpoints: pass --resume to continue that run, or pick a new --out")
        return
    if saved.is_file():
        old = json.loads(saved.read_text())
        keys = ("method", "prompt", "prompt_length", "model", "batch_size", "seed", "data")
        diff = [k for k in keys if old.get(k) != config.to_dict().get(k)]
        if diff:
            raise ConfigError(f"--resume with settings that differ from {saved}: {', '.join(diff)}")


def save_final_model(model: nn.Module, out: Path, extra: dict[str, Any]) -> None:
    """Saves the model INTO ``out`` (which also holds checkpoints/ and logs), file by file atomically."""
    staging = out / ".final-model"
    model.save(staging, extra=extra)
    new = {f.name for f in staging.iterdir()}
    for old in out.glob("model*.safetensors*"):  # shards of an earlier final save
        if old.name not in new:
            old.unlink()
    # promptability.json last: only then is `out` a (complete) model dir for load_model.
    for f in sorted(staging.iterdir(), key=lambda f: f.name == CONFIG_FILE):
        os.replace(f, out / f.name)
    staging.rmdir()


def pretrain(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    accelerator: Any = None,
    model: nn.Module | None = None,
) -> TrainResult:
    """Continued pretraining with ``config.method``; ``out_dir`` becomes the trained model dir (+ train.json).

    ``model``: an already built model to train instead of ``load_model(config.model, ...)`` (tests).
    """
    from promptability.model.loading import load_model, model_size

    config.validate()
    _check_data(config.data)  # before any model is built or anything written
    out = Path(out_dir)
    _check_resumable(out, config, resume)
    accelerator = accelerator if accelerator is not None else make_accelerator(config.precision)
    seed_everything(config.seed, deterministic=accelerator.device.type == "cpu")
    prompt_length = config.prompt_length if config.prompt != "none" else None
    if model is None:
        name = config.model
        if name == "tiny":
            # Training the tiny tokenizer is not deterministic run to run: build the base model once, so all
            # processes and every --resume share one tokenizer and one initialisation.
            name = str(out / "base-model")
            if accelerator.is_main_process and not (out / "base-model" / CONFIG_FILE).is_file():
                load_model("tiny", seed=config.seed).save(name)
            accelerator.wait_for_everyone()
        model = load_model(name, prompt=config.prompt, prompt_length=prompt_length, seed=config.seed)
    elif model.prompt_kind != config.prompt:
        raise ConfigError(f"the given model has a {model.prompt_kind!r} prompt, the config asks for {config.prompt!r}")
    dataset, data_info = load_pretraining_data(config, model.tokenizer, accelerator, model.is_causal)
    step = build_step(config.method, model, dataset, config, accelerator)
    max_steps = config.max_steps or max(1, math.ceil(config.epochs * step.steps_per_epoch))
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", config.to_dict())
    result = train(
        model, step, accelerator, max_steps=max_steps, out_dir=out, lr=config.lr, clip_norm=config.clip_norm,
        save_every=config.save_every, keep_checkpoints=config.keep_checkpoints, resume=resume, seed=config.seed,
        log_every=config.log_every, progress=progress, desc=f"pretrain {config.method}",
    )  # fmt: skip
    if accelerator.is_main_process:
        info = {
            "method": config.method, "prompt": config.prompt, "prompt_length": model.prompt_length,
            "base_model": config.model, "model_size": model_size(config.model), "seed": config.seed,
            "data": data_info, "steps": result.steps, "max_steps": max_steps,
            "steps_per_epoch": step.steps_per_epoch, "examples_seen": result.examples, "tokens_seen": result.tokens,
            "wall_time_s": round(result.wall_time_s, 3), "world_size": accelerator.num_processes,
            "final_loss": result.last.get("loss"), "resumed_from_step": result.resumed_from, "config": config.to_dict(),
        }  # fmt: skip
        save_final_model(model, out, {"method": config.method, "trained_steps": result.steps})
        write_json_atomic(out / "train.json", info)
    accelerator.wait_for_everyone()
    return result
