"""The one training loop every method shares; methods differ only in their *train step*.

A train step (``TrainStep``) consumes its own data for ONE optimizer step and
leaves the gradient of that step in ``.grad`` of every trainable parameter,
already averaged across processes. The loop owns everything else: Adafactor
(constant lr 1e-3, as in the paper) over the trainable parameters only,
gradient-norm clipping, the step budget, seeding, the progress bar, the metrics
log, non-finite-loss detection, checkpoints and exact resumption.

A step may also define ``prepare(model, accelerator) -> model`` to wrap the
model before training (``MTLStep`` uses ``accelerator.prepare``, i.e. DDP when
distributed); without it the model is only moved to ``accelerator.device``.
Its ``state_dict()`` must be the same on every process (rank 0's is saved).

Checkpoint layout, ``OUT/checkpoints/step-N/`` (written to a temp dir, then renamed):

    model/                      a loadable model dir (model.save): the full model, or a prompt-only
                                save when the transformer is frozen; holds every trainable tensor
    optimizer.{safetensors,json}   Adafactor state      train_step.{safetensors,json}  data position etc.
    rng-rank{R}.{safetensors,json} each process's RNGs  trainer.json                   step counter, totals

``--resume`` restores all of it, so a resumed run ends with the very parameters
an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from promptability.io import write_json_atomic, write_jsonl_atomic
from promptability.train import distributed as shards
from promptability.train.adafactor import FusedAdafactor
from promptability.train.distributed import make_accelerator as make_accelerator  # its home before FSDP
from promptability.train.state import (
    load_optimizer_state,
    load_state,
    rng_state,
    save_state,
    seed_everything,
    set_rng_state,
)

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class TrainStep(Protocol):
    def __call__(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        """One optimizer step's gradients into ``.grad`` (averaged across processes); metrics incl. loss, tokens."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; parameters were not updated with it."""


class DivergenceError(NonFiniteLossError):
    """An update blew the trained parameters up (see ``DIVERGENCE_FACTOR``); nothing after it was saved."""


# A run stops when the trained parameters' L2 norm exceeds DIVERGENCE_FACTOR x max(its start, 1) or is not finite:
# healthy runs change it a few times at most; an lr far too high crosses it at once (the loss may stay finite).
DIVERGENCE_FACTOR = 100.0


@dataclass
class TrainResult:
    steps: int
    examples: int
    tokens: int
    wall_time_s: float
    resumed_from: int | None = None
    last: dict[str, float] = field(default_factory=dict)


def build_optimizer(params: Iterable[torch.Tensor], lr: float = 1e-3) -> FusedAdafactor:
    """Adafactor with a constant ``lr``, no parameter scaling, no relative step, no warmup.

    As Wu et al. (2022) use it (Lester et al. 2021 for prompt tuning); built here only, fused (train/adafactor.py).
    """
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters: freeze the model with a preset that trains something")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    return FusedAdafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)


def autocast(accelerator: Any) -> contextlib.AbstractContextManager:
    """The accelerator's autocast context (bf16 when asked for), or none for a stand-in without one."""
    return accelerator.autocast() if hasattr(accelerator, "autocast") else contextlib.nullcontext()


# ----- checkpoints --------------------------------------------------------------------------------
def checkpoint_dirs(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (with trainer.json) under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / CHECKPOINTS  # glob finds nothing where it does not exist
    found = [
        (int(m[1]), p) for p in root.glob("step-*") if (m := _STEP_DIR.match(p.name)) and (p / "trainer.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    return next(reversed(checkpoint_dirs(out_dir)), None)


def _transformer_frozen(model: nn.Module) -> bool:
    params = model.transformer_parameters() if hasattr(model, "transformer_parameters") else []  # type: ignore[operator]  # nn.Module.__getattr__ types dynamic attributes as Tensor | Module
    return bool(params) and not any(p.requires_grad for p in params)


def save_checkpoint(
    out_dir: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: TrainStep,
    trainer_state: dict[str, Any],
    accelerator: Any,
    keep: int = 2,
) -> Path:
    """Writes ``out_dir/checkpoints/step-N`` atomically (every process must call it); keeps the ``keep`` newest."""
    root = Path(out_dir) / CHECKPOINTS
    final = root / f"step-{trainer_state['step']}"
    tmp = root / f".step-{trainer_state['step']}.tmp"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_state(tmp, f"rng-rank{accelerator.process_index}", rng_state())
    step_state, optimizer_state = step.state_dict(), shards.full_state(optimizer.state_dict())  # FSDP: gathered whole
    if main:
        prompt_only = _transformer_frozen(model) and getattr(model, "base_model", None) is not None
        model.save(tmp / "model", prompt_only=prompt_only)  # type: ignore[operator]  # nn.Module.__getattr__ types dynamic attributes as Tensor | Module
        save_state(tmp, "optimizer", optimizer_state)
        save_state(tmp, "train_step", step_state)
        write_json_atomic(tmp / "trainer.json", {**trainer_state, "world_size": accelerator.num_processes})
    accelerator.wait_for_everyone()
    if main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(out_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, step: TrainStep, accelerator: Any
) -> dict[str, Any]:
    """Restores trainable parameters, optimizer, step state and this process's RNGs; returns trainer.json."""
    from promptability.model.prompted import PROMPT_FILE

    path = Path(path)
    saved: dict[str, torch.Tensor] = {}  # the model dir's tensors, named as in the model's named_parameters()
    for f in sorted((path / "model").glob("*.safetensors")):
        prefix = "prompt." if f.name == PROMPT_FILE else "transformer."
        saved.update({prefix + k: v for k, v in load_file(str(f)).items()})
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, _ in trainable if n not in saved]
    if missing:
        raise ValueError(f"{path / 'model'} lacks trainable parameters {missing[:5]} (another --method or --prompt?)")
    with torch.no_grad():
        for name, p in trainable:
            if saved[name].shape != p.shape:
                raise ValueError(
                    f"{path / 'model'}: {name} has shape {tuple(saved[name].shape)}, the model {tuple(p.shape)}"
                )
            shards.copy_full_(p, saved[name])
    load_optimizer_state(optimizer, load_state(path, "optimizer"))
    step.load_state_dict(load_state(path, "train_step"))
    rank_file = f"rng-rank{accelerator.process_index}"
    if (path / f"{rank_file}.json").is_file():
        set_rng_state(load_state(path, rank_file))
    else:
        logger.warning("%s has no %s: continuing with a fresh seed", path, rank_file)
    return json.loads((path / "trainer.json").read_text())


# ----- metrics log --------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.jsonl`` (one JSON object per logged step) and, when installed, TensorBoard scalars."""

    def __init__(self, out_dir: Path, resume_step: int | None) -> None:
        self.path = out_dir / METRICS_FILE
        kept: list[dict] = []
        if resume_step is not None and self.path.is_file():
            # Steps after the checkpoint will be run again: drop their old lines.
            lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            kept = [r for r in lines if r.get("step", 0) <= resume_step]
        write_jsonl_atomic(self.path, kept)  # makes ``out_dir`` too
        self.handle = self.path.open("a", encoding="utf-8")
        self.tb = None
        with contextlib.suppress(ImportError):  # tensorboard not installed: the JSONL log is enough
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=resume_step)

    def write(self, record: dict[str, Any]) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self.handle.close()
        if self.tb is not None:
            self.tb.close()


# ----- the loop -----------------------------------------------------------------------------------
def _norm(params: list[torch.Tensor]) -> float:
    return float(torch.nn.utils.get_total_norm([p.detach() for p in params])) if params else 0.0


def _check_divergence(params: list[torch.Tensor], start_norm: float, step: int, last_good: Path | None) -> None:
    norm, limit = _norm(params), DIVERGENCE_FACTOR * max(start_norm, 1.0)
    if not (math.isfinite(norm) and norm <= limit):
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        raise DivergenceError(
            f"step {step}: the trained parameters' norm went from {start_norm:.4g} to {norm:.4g} (limit {limit:.4g}): "
            f"training diverged and stopped without saving; {where}. Try a lower --lr."
        )


def train(
    model: nn.Module,
    step: TrainStep,
    accelerator: Any = None,
    *,
    max_steps: int,
    out_dir: str | os.PathLike | None = None,
    lr: float = 1e-3,
    clip_norm: float = 1.0,
    save_every: int = 0,
    keep_checkpoints: int = 2,
    resume: bool = False,
    seed: int = 0,
    log_every: int = 1,
    progress: bool = True,
    desc: str = "train",
    fsdp: shards.FSDPConfig | None = None,
) -> TrainResult:
    """Runs ``step`` for ``max_steps`` optimizer steps on ``model``'s trainable parameters.

    Freeze the model first (``model.freeze(preset)``): only parameters with
    ``requires_grad`` get an optimizer and its state. With ``out_dir`` the loop
    writes ``metrics.jsonl`` and checkpoints (every ``save_every`` steps when
    > 0, and at the end); without it nothing is written (few-shot tuning).
    ``resume`` continues from the newest complete checkpoint in ``out_dir``. ``fsdp``: shard the model, its
    gradients and optimizer state over the processes (``distributed.FSDPConfig``) instead of DDP's replicas.
    """
    accelerator = accelerator if accelerator is not None else make_accelerator()
    whole = accelerator.unwrap_model(model)
    out = Path(out_dir) if out_dir is not None else None
    seed_everything(seed + accelerator.process_index)
    base, wrapped = shards.prepare_model(step, whole, accelerator, fsdp)  # base: whole, or its FSDP-sharded copy
    params: list[torch.Tensor] = [p for p in base.parameters() if p.requires_grad]  # after device placement
    optimizer = build_optimizer(params, lr)

    state: dict[str, Any] = {"step": 0, "examples": 0, "tokens": 0, "wall_time_s": 0.0}
    resumed_from: int | None = None
    last_good = None
    if resume and out is not None and (ckpt := latest_checkpoint(out)) is not None:
        state.update(load_checkpoint(ckpt, base, optimizer, step, accelerator))
        state.pop("world_size", None)
        resumed_from, last_good = int(state["step"]), ckpt
        logger.info("resumed from %s (step %d)", ckpt, state["step"])
    shards.shard_optimizer_state(optimizer)
    main = accelerator.is_main_process
    if out is not None and main:  # temporaries of checkpoints a killed run was writing
        for stale in (out / CHECKPOINTS).glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    log = MetricsLog(out, resumed_from) if out is not None and main else None

    start_norm = _norm(params)
    was_training = whole.training
    wrapped.train()
    bar = tqdm(total=max_steps, initial=state["step"], desc=desc, unit="step", dynamic_ncols=True,
               disable=not (progress and main))  # fmt: skip
    session_start, session_tokens, wall0 = time.perf_counter(), 0, state["wall_time_s"]
    metrics: dict[str, float] = {}
    saved_at = resumed_from
    try:
        while state["step"] < max_steps:
            metrics = {k: float(v) for k, v in step(wrapped, accelerator).items()}
            loss = metrics.get("loss", float("nan"))
            if accelerator.num_processes > 1:  # every process must agree on stopping
                shared = torch.tensor(loss, dtype=torch.float64, device=accelerator.device)
                loss = float(accelerator.reduce(shared, "mean"))
                metrics["loss"] = loss
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip_norm if clip_norm > 0 else float("inf")))
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
                raise NonFiniteLossError(
                    f"step {state['step'] + 1}: loss {loss} / gradient norm {grad_norm} is not finite, so training "
                    f"stopped before updating the parameters; {where}. "
                    "Try a lower --lr, --precision fp32, or check the data."
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _check_divergence(params, start_norm, state["step"] + 1, last_good)
            state["step"] += 1
            state["examples"] += int(metrics.get("examples", 0))
            state["tokens"] += int(metrics.get("tokens", 0))
            session_tokens += int(metrics.get("tokens", 0))
            elapsed = time.perf_counter() - session_start
            state["wall_time_s"] = wall0 + elapsed
            tok_s = session_tokens / max(elapsed, 1e-9)
            if log is not None and (state["step"] % max(log_every, 1) == 0 or state["step"] == max_steps):
                log.write({"step": state["step"], **metrics, "grad_norm": grad_norm, "lr": lr, "tokens_per_s": tok_s,
                           "examples_seen": state["examples"], "elapsed_s": state["wall_time_s"]})  # fmt: skip
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}")
            bar.update()
            if out is not None and save_every > 0 and state["step"] % save_every == 0:
                ckpt_model = shards.gather_into(base, whole)
                last_good = save_checkpoint(out, ckpt_model, optimizer, step, state, accelerator, keep_checkpoints)
                saved_at = state["step"]
        shards.gather_into(base, whole)  # the trained parameters, when a sharded copy trained
        if out is not None and saved_at != state["step"]:
            save_checkpoint(out, whole, optimizer, step, state, accelerator, keep_checkpoints)
    finally:
        bar.close()
        if log is not None:
            log.close()
        accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
        whole.train(was_training)
    return TrainResult(
        steps=state["step"],
        examples=state["examples"],
        tokens=state["tokens"],
        wall_time_s=state["wall_time_s"],
        resumed_from=resumed_from,
        last=metrics,
    )
