"""Training configurations: dataclasses with the paper's defaults, loaded from YAML.

A YAML file holds any subset of ``TrainConfig``'s fields (nested ``data:`` and
``meta:`` sections); unknown keys are errors naming the file and the key, and
values are converted to the field's type (so ``lr: 1e-3``, which YAML reads as
a string, is a float here). A ``base: other.yaml`` key (relative to the file)
starts from that file's settings: the file's own keys override the base's,
sections key by key; bases may have bases. Command-line flags override the file.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from promptability.data.caps import CAP_PER
from promptability.data.episodes import DEFAULT_EPISODES, EPISODE_ORDERS
from promptability.data.sampler import STEP_COMPOSITIONS
from promptability.data.tokenize import MAX_SOURCE_LEN, MAX_TARGET_LEN
from promptability.model.prompts import DEFAULT_PROMPT, NO_PROMPT, PROMPT_KINDS, prompt_names
from promptability.model.prompts.deep import DEEP_INITS, DEFAULT_DEEP_INIT
from promptability.train.distributed import DISTRIBUTED_STRATEGIES, FSDP_WRAPS, FSDPConfig
from promptability.train.losses import LOSS_WEIGHTINGS
from promptability.train.methods import METHODS
from promptability.train.steps.meta import DEFAULT_TRANSFORMER_STEP, TRANSFORMER_STEPS

PRECISIONS = ("fp32", "bf16")
# Few-shot draws. "auto": the paper's reference 16-shot subsample where the data is P3 and every template
# has one (shots=16), else seeded random draws; "reference" insists on it; "random" always samples.
DRAWS = ("auto", "reference", "random")
T0_TRAIN = "t0-train"  # data.tasks value: the 313 P3 training templates of the T0 mixture


class ConfigError(ValueError):
    """A configuration value or combination is invalid; the message names the field."""


def _one_of(name: str, value: Any, known: Collection[str]) -> None:
    """Raises ConfigError unless ``value`` is one of ``known``; the message names the field ``name``."""
    if value not in known:
        raise ConfigError(f"{name} must be one of {', '.join(known)}, got {value!r}")


def _bound(config: Any, low: float, *names: str, above: bool = False) -> None:
    """Raises ConfigError naming the first dotted field of ``names`` below ``low`` (``above``: not above it)."""
    for name in names:
        value = functools.reduce(getattr, name.split("."), config)
        if not (value > low if above else value >= low):
            raise ConfigError(f"{name} must be {'>' if above else '>='} {low}, got {value}")


@dataclass
class DataConfig:
    path: str | None = None  # a file or directory that read_examples understands
    # Templates to pretrain on: a list, "t0-train", or null for every template with a `split` split
    # except the registry's held-out and dev templates (they are evaluation data).
    tasks: list[str] | str | None = None
    split: str = "train"
    cap: int | None = 500_000  # T0's mixing cap: examples per template, or per dataset (cap_per)
    # "template": each template capped at `cap` (the reference code's rule, behind the paper's numbers);
    # "dataset": `cap` split evenly over a dataset's templates (T0's 500k // templates; see data/caps.py).
    cap_per: str = "template"
    max_source_len: int = MAX_SOURCE_LEN
    max_target_len: int = MAX_TARGET_LEN
    # How a global batch (one optimizer step) is drawn from the shuffled mixture. "iid": the next batch_size
    # examples, sorted by length only inside the step (micro-batches pad little), as the paper's reference code
    # grouped per 2-example device batch; "length_bands": sort chunks of megabatch_mult batches and cut them, so a
    # step holds one length band (only short labels or only long contexts; least padding).
    step_composition: str = "iid"
    megabatch_mult: int = 50  # length_bands only: sort chunks of this many batches


@dataclass
class MetaConfig:
    meta_batch_size: int = 128  # tasks per outer step
    inner_steps: int = 7  # k support batches, one inner prompt step each
    task_batch_size: int = 16  # examples per support batch and per query batch
    inner_lr: float = 1e-3
    task_sampling: str = "proportional"  # or "uniform" (episodes="sample" only)
    carry_inner_state: bool = True
    # "pass": the reference's episodes, one pass over the mixture without replacement (each task's examples
    # shuffled and cut into episodes, tasks in proportion to their remaining episodes); "sample": every
    # episode draws its task (task_sampling) and examples afresh.
    episodes: str = DEFAULT_EPISODES
    # Reptile's full-model step on the transformer: "adafactor" (Algorithm 2 and the reference: the inner
    # Adafactor, its state carried like the prompt's) or "sgd" (plain SGD at inner_lr: no transformer-sized buffer).
    reptile_transformer_step: str = DEFAULT_TRANSFORMER_STEP


@dataclass
class TrainConfig:
    method: str = "mtl-tp"
    prompt: str | None = None  # None: "none" for mtl-t, "shallow" for the other methods
    prompt_length: int = 20
    deep_init: str = DEFAULT_DEEP_INIT  # a fresh deep prompt: "normal" N(0, 1) as the reference, or "tokens"
    model: str = "tiny"  # Hub id, model dir, or "tiny" (the offline tiny T5)
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 4096  # examples per optimizer step, over all processes (MTL)
    micro_batch_size: int = 32  # examples per forward pass on one process (gradient accumulation)
    # What each example weighs in a step's loss (MTL's global batch, meta-learning's support and query batches):
    # "example": each example's mean token NLL, averaged over the examples, as the reference code (token means over
    # micro-batches of 2 or 1) nearly did; "token": the mean over all target tokens, so a 192-token summary weighs
    # ~100x a one-token label. Independent of micro_batch_size and the number of processes either way.
    loss_weighting: str = "example"
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    lr: float = 1e-3
    clip_norm: float = 1.0
    precision: str = "fp32"
    seed: int = 0
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 1
    meta: MetaConfig = field(default_factory=MetaConfig)
    # "ddp": each process holds the whole model; "fsdp": parameters, gradients, optimizer state sharded (MTL only)
    distributed: str = "ddp"
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    notes: str = ""

    def validate(self) -> TrainConfig:
        _one_of("method", self.method, METHODS)
        prompted = METHODS[self.method].prompted
        if self.prompt is None:
            self.prompt = DEFAULT_PROMPT if prompted else NO_PROMPT
        _one_of("prompt", self.prompt, prompt_names())
        if not prompted and self.prompt != NO_PROMPT:
            raise ConfigError(
                f"method {self.method} trains the transformer without a prompt: use --prompt none (got {self.prompt!r})"
            )
        if prompted and self.prompt == NO_PROMPT:
            kinds = " or ".join(f"--prompt {k}" for k in PROMPT_KINDS)
            raise ConfigError(f"method {self.method} trains a soft prompt: use {kinds}")
        if self.prompt != NO_PROMPT and self.prompt_length < 1:
            raise ConfigError(f"prompt_length must be >= 1, got {self.prompt_length}")
        _one_of("precision", self.precision, PRECISIONS)
        _bound(self, 1, "batch_size", "micro_batch_size", "log_every", "keep_checkpoints", "meta.meta_batch_size",
               "meta.task_batch_size")  # fmt: skip
        _bound(self, 0, "save_every", "meta.inner_steps")
        _bound(self, 0, "lr", "epochs", "meta.inner_lr", above=True)
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        _one_of("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        _one_of("data.step_composition", self.data.step_composition, STEP_COMPOSITIONS)
        if self.data.cap is not None and self.data.cap < 1:
            raise ConfigError(f"data.cap must be >= 1 or null, got {self.data.cap}")
        _one_of("data.cap_per", self.data.cap_per, CAP_PER)
        m = self.meta
        _one_of("meta.task_sampling", m.task_sampling, ("proportional", "uniform"))
        _one_of("meta.episodes", m.episodes, EPISODE_ORDERS)
        if m.episodes == "pass" and m.task_sampling != "proportional":
            raise ConfigError(
                f"meta.task_sampling={m.task_sampling!r} needs meta.episodes='sample' (a pass over the mixture "
                "draws tasks in proportion to their episodes)"
            )
        _one_of("meta.reptile_transformer_step", m.reptile_transformer_step, TRANSFORMER_STEPS)
        _one_of("deep_init", self.deep_init, DEEP_INITS)
        _one_of("distributed", self.distributed, DISTRIBUTED_STRATEGIES)
        _one_of("fsdp.wrap", self.fsdp.wrap, FSDP_WRAPS)
        if self.distributed == "fsdp" and METHODS[self.method].meta:
            raise ConfigError(  # their inner loops clone the prompt per task and all-reduce whole gradients by hand
                f"distributed=fsdp shards the model for the MTL methods; {self.method} (meta-learning) computes its "
                "gradients outside the model's backward: use distributed=ddp"
            )
        return self


# ----- dict / YAML -> dataclass -------------------------------------------------------------------
_EXPECTED = {bool: "true or false", str: "a string"}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1] if errors else f"{where}: got {value!r}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint in _EXPECTED:  # bool, str: taken as they are, never converted
        if isinstance(value, hint):
            return value
        raise ConfigError(f"{where}: expected {_EXPECTED[hint]}, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            if hint is int:
                if not float(number).is_integer():
                    raise ValueError
                return int(number)
            return float(number)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: expected {'an integer' if hint is int else 'a number'}, got {value!r}"
            ) from None
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Builds dataclass ``cls`` from ``data``, converting types; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def _merge(base: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """``row`` over ``base``; sections (``data:``, ``meta:``) are merged key by key."""
    merged = dict(base)
    for key, value in row.items():
        section = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if section else value
    return merged


def resolve_config(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The settings of a YAML file with its ``base:`` chain applied (a path relative to the file, recursive).

    Each file is type-checked on its own, so an error names the file that holds the bad key.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    chain = (*_chain, p.resolve())
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of TrainConfig fields at the top level")
    base = data.pop("base", None)
    from_dict(TrainConfig, data, str(p))
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{p}: base must be a path to a YAML file, got {base!r}")
    base_path = p.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{p}: base file {base_path} does not exist")
    if base_path.resolve() in chain:
        cycle = " -> ".join(str(c) for c in (*chain, base_path.resolve()))
        raise ConfigError(f"{p}: base files form a cycle: {cycle}")
    return _merge(resolve_config(base_path, chain), data)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """A TrainConfig from a YAML file and its ``base:`` chain (missing fields keep their defaults); validated."""
    p = Path(path)
    config = from_dict(TrainConfig, resolve_config(p), str(p))
    try:
        return config.validate()
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None


def setting_names(cls: type, prefix: str = "") -> list[str]:
    """The dotted names ``apply_overrides`` accepts for dataclass ``cls``: its fields, sections' fields nested."""
    hints = typing.get_type_hints(cls)
    names: list[str] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        is_section = isinstance(hint, type) and dataclasses.is_dataclass(hint)
        names += setting_names(hint, f"{prefix}{f.name}.") if is_section else [prefix + f.name]
    return names


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Sets ``{"lr": v, "data.cap": v, "meta.inner_lr": v, ...}`` on dataclass ``config``, converting types.

    Keys are dotted field names (``setting_names``); an unknown one raises ConfigError listing the valid ones.
    """
    names = setting_names(type(config))
    for key, value in overrides.items():
        if key not in names:
            inside = [n for n in names if n.startswith(key + ".")]
            if inside:
                raise ConfigError(f"{key!r} is a section: set its fields, e.g. {inside[0]}")
            raise ConfigError(f"unknown setting {key!r}; the settings are: {', '.join(names)}")
        *sections, name = key.split(".")
        target = functools.reduce(getattr, sections, config)
        setattr(target, name, _coerce(value, typing.get_type_hints(type(target))[name], key))
    return config


@dataclass
class FewShotConfig:
    """Few-shot prompt tuning as in the paper: k=16, 100 epochs on one fixed batch, final prompt evaluated."""

    shots: int = 16
    epochs: int = 100  # = optimizer steps: the k examples are one batch
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    prompt: str | None = None  # kind of a fresh prompt for a model without one (default "shallow")
    prompt_length: int = 20
    deep_init: str = DEFAULT_DEEP_INIT  # a fresh deep prompt: "normal" N(0, 1) as the reference, or "tokens"
    tasks: list[str] | None = None  # default: every held-out template in the data
    method: str | None = None  # method recorded in run.json (default: the model's train.json, else "none")
    templates_per_step: int = 1  # >1: tune that many templates' prompts together in one batch (same result)
    # 0: a template's k shots run as one batch; N > 0: as micro-batches of at most N padded tokens, similar lengths
    # together (the same gradient up to float order and dropout masks: train/steps/fixed_batch.py); faster on a
    # CPU, not on a GPU.
    micro_batch_tokens: int = 0
    draw: str = "auto"  # which k shots (DRAWS): reference subsample on P3 held-out templates, else seeded random
    source_eos: bool = True  # EOS after the source, as the paper; False: as official T0 checkpoints were trained
    lr: float = 1e-3
    clip_norm: float = 1.0
    eval_batch_size: int = 32
    score: str = "mean"
    precision: str = "fp32"
    max_source_len: int = MAX_SOURCE_LEN
    max_target_len: int = MAX_TARGET_LEN
    # TrainConfig.loss_weighting's choice for the k-shot batch; "token" here because the reference tuned on one
    # batch of 16 with the mean over its target tokens.
    loss_weighting: str = "token"

    def validate(self) -> FewShotConfig:
        _bound(self, 1, "shots", "epochs", "templates_per_step", "prompt_length")
        _bound(self, 0, "lr", above=True)
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        _one_of("draw", self.draw, DRAWS)
        if self.draw == "reference" and self.shots != 16:
            raise ConfigError(f"the reference subsample has 16 shots; got shots={self.shots}")
        if self.micro_batch_tokens < 0:
            raise ConfigError(f"micro_batch_tokens must be >= 0 (0: one batch), got {self.micro_batch_tokens}")
        if self.micro_batch_tokens and self.templates_per_step > 1:
            raise ConfigError("micro_batch_tokens splits one template's batch: use it with templates_per_step 1")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {self.seeds}")
        if self.prompt is not None and self.prompt not in PROMPT_KINDS:
            kinds = " or ".join(PROMPT_KINDS)
            raise ConfigError(f"few-shot tuning trains a prompt: --prompt must be {kinds}, got {self.prompt!r}")
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        _one_of("score", self.score, ("mean", "sum"))
        _one_of("deep_init", self.deep_init, DEEP_INITS)
        return self
