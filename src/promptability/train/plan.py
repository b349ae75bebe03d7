"""``promptability plan``: what a continued-pretraining config will do, resolved without training.

``make_plan(config, data)`` reads the config as ``pretrain`` does and, when given the data, reads,
tokenizes (the same cache) and mixes it with ``pretrain``'s own functions, and builds the method's
step with the registry, so the counts it reports are the ones ``pretrain`` then consumes. The model
is built on PyTorch's ``meta`` device (shapes only, no weights, nothing downloaded for the paper's
two models), which gives exact parameter counts for any size.

Training FLOPs are counted per stack (the matmul weights of the encoder times source positions, of the
decoder and LM head times target positions): 2 per weight and position forward, 2 more for the
activations' gradients and 2 for the weights' gradients when the transformer trains. Attention's
score/value products and the embedding lookups are left out (a few percent at these lengths), so
the estimate is a lower bound. GPU-hours = FLOPs / (peak FLOP/s x MFU).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from promptability.model.prompts import NO_PROMPT, kind_of
from promptability.train.config import ConfigError, FewShotConfig, TrainConfig
from promptability.train.memory import activation_bytes, memory_per_gpu
from promptability.train.methods import METHODS, build_step
from promptability.train.pretrain import check_data

# The paper's two base models, so that planning them needs neither the Hub nor their 3-11 GB of weights:
# T5 v1.1 LM-adapted shapes (the `config.json` of google/t5-{large,xl}-lm-adapt).
KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "google/t5-large-lm-adapt": dict(d_model=1024, d_ff=2816, num_layers=24, num_heads=16),
    "google/t5-xl-lm-adapt": dict(d_model=2048, d_ff=5120, num_layers=24, num_heads=32),
}
_T5_V1_1: dict[str, Any] = dict(d_kv=64, vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)  # fmt: skip

# Dense peak FLOP/s that GPU-hours are estimated against unless given: an A100's. fp32 without TF32
# (PyTorch's default for matmuls) runs on the CUDA cores, not the tensor cores.
DEFAULT_PEAK_TFLOPS = {"bf16": 312.0, "fp32": 19.5}
DEFAULT_MFU = 0.35
DEFAULT_GPUS = 8  # for the memory per GPU
_DEPTH_FIELDS = ("num_layers", "num_decoder_layers", "num_hidden_layers")  # blocks per stack: T5's, decoder-only's


def _transformer_config(name: str) -> Any:
    from transformers import AutoConfig, T5Config

    if name in KNOWN_ARCHITECTURES:
        return T5Config(**_T5_V1_1, **KNOWN_ARCHITECTURES[name], num_decoder_layers=None)
    return _model_part(name, AutoConfig, lambda model: model.transformer.config)


def shape_model(config: TrainConfig, layers: int | None = None) -> nn.Module:
    """``config``'s model with its prompt, on the meta device: every parameter's shape, no storage.

    ``layers``: that many blocks per stack instead of the model's (to measure what one more block adds).
    """
    from transformers import AutoModelForCausalLM, T5ForConditionalGeneration

    from promptability.model.causal import PromptedCausalLM
    from promptability.model.prompted import PromptedSeq2SeqLM

    cfg = _transformer_config(config.model)
    if layers is not None:
        cfg = copy.deepcopy(cfg)
        for name in _DEPTH_FIELDS:
            if hasattr(cfg, name):
                setattr(cfg, name, layers)
    causal = not getattr(cfg, "is_encoder_decoder", False)
    prompt = config.prompt or NO_PROMPT
    with torch.device("meta"):
        if causal:
            return PromptedCausalLM(AutoModelForCausalLM.from_config(cfg), None, prompt, config.prompt_length)
        transformer = T5ForConditionalGeneration(cfg)
        if (
            getattr(cfg, "scale_decoder_outputs", True) is False
            and transformer.lm_head.weight is transformer.shared.weight
        ):
            # T5 v1.1 (the LM-adapted models) has its own LM head. Transformers 5 ties it to the embedding in a
            # model built from a config, and keeps a checkpoint's separate head when loading: count it separately.
            transformer.lm_head.weight = nn.Parameter(torch.empty_like(transformer.shared.weight))
        return PromptedSeq2SeqLM(transformer, None, prompt, config.prompt_length)


def parameter_counts(model: nn.Module, method: str) -> dict[str, int]:
    """Total, trained (by the method's freeze preset), prompt, and the matmul weights of each stack."""
    groups = {g: sum(p.numel() for p in ps) for g, ps in model.parameter_groups().items()}  # type: ignore[operator]
    trained = sum(p.numel() for p in model.freeze(METHODS[method].freeze))  # type: ignore[operator]
    matmul = {"encoder": 0, "decoder": 0}
    for name, module in model.transformer.named_modules():  # type: ignore[union-attr]
        if isinstance(module, nn.Embedding):
            continue  # a lookup, not a matmul (a head tied to the embedding is its own Linear module)
        for p in module.parameters(recurse=False):
            if p.dim() >= 2:  # layer norms and biases do no matmul
                matmul["encoder" if name.startswith("encoder.") else "decoder"] += p.numel()
    return {
        "total": sum(groups.values()), "trained": trained, "prompt": groups.get("prompt", 0),
        "encoder_matmul": matmul["encoder"], "decoder_matmul": matmul["decoder"],
    }  # fmt: skip


def _settings(config: TrainConfig) -> dict[str, Any]:
    data = config.data
    fewshot = FewShotConfig()
    return {
        "model": config.model, "method": config.method, "prompt": config.prompt,
        "prompt_length": config.prompt_length if config.prompt != NO_PROMPT else None,
        "precision": config.precision,
        "optimizer": "Adafactor (constant lr, no parameter scaling, no relative step, no warmup)",
        "lr": config.lr, "global_batch": config.batch_size, "micro_batch": config.micro_batch_size,
        "clip_norm": config.clip_norm, "max_source_len": data.max_source_len, "max_target_len": data.max_target_len,
        "cap": data.cap, "cap_per": data.cap_per, "deep_init": config.deep_init if (kind := kind_of(config.prompt)) and kind.takes_deep_init else None,
        "loss_weighting": config.loss_weighting,
        "step_composition": data.step_composition,
        "epochs": config.epochs, "max_steps": config.max_steps, "seed": config.seed,
        "meta": asdict(config.meta) if METHODS[config.method].meta else None,
        "fewshot": {"shots": fewshot.shots, "epochs": fewshot.epochs, "lr": fewshot.lr, "draw": fewshot.draw,
                    "seeds": len(fewshot.seeds), "loss_weighting": fewshot.loss_weighting,
                    "precision": fewshot.precision, "source_eos": fewshot.source_eos},
    }  # fmt: skip


def _examples_per_step(config: TrainConfig) -> int:
    if METHODS[config.method].meta:
        m = config.meta
        return m.meta_batch_size * (m.inner_steps + 1) * m.task_batch_size
    return config.batch_size


def _flop_factor(config: TrainConfig) -> float:
    """FLOPs per matmul weight and position, averaged over the examples of a step (see the module docstring)."""
    trains_transformer = METHODS[config.method].freeze != "mtl-p"
    if not METHODS[config.method].meta:
        return 6.0 if trains_transformer else 4.0
    # Support batches train only the prompt (Reptile's full-model step uses the query pass's gradients).
    inner = config.meta.inner_steps
    return (inner * 4.0 + 6.0) / (inner + 1)


def _data_plan(config: TrainConfig, model: nn.Module) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from promptability.data.batching import lengths_of
    from promptability.train.pretrain import load_pretraining_data

    tokenizer = _model_part(config.model, AutoTokenizer, lambda loaded: loaded.tokenizer)  # counts the tokens
    dataset, info = load_pretraining_data(config, tokenizer, continuation=bool(model.is_causal))
    step = build_step(config.method, model, dataset, config)  # type: ignore[arg-type]
    steps = config.max_steps or max(1, math.ceil(config.epochs * step.steps_per_epoch))
    lengths = lengths_of(dataset)
    read = info["examples_before_cap"]
    return {
        "templates": info["tasks"], "examples_before_cap": read, "examples": info["examples"],
        "per_template": info["per_task"], "steps_per_epoch": step.steps_per_epoch, "steps": steps,
        "examples_per_step": _examples_per_step(config),
        "source_tokens": int(lengths[:, 0].sum()), "target_tokens": int(lengths[:, 1].sum()),
        "sources_truncated": info["sources_truncated"] / read if read else 0.0,
        "targets_truncated": info["targets_truncated"] / read if read else 0.0,
    }  # fmt: skip


def _compute(config: TrainConfig, params: dict[str, int], data: dict[str, Any], peak: float, mfu: float) -> dict:
    n = data["examples"]
    prepended = config.prompt_length if (kind := kind_of(config.prompt)) and kind.prepends else 0
    source, target = data["source_tokens"] + prepended * n, data["target_tokens"]
    if params["encoder_matmul"] == 0:  # decoder-only: source and target run through the one stack
        per_epoch = params["decoder_matmul"] * (source + target)
    else:
        per_epoch = params["encoder_matmul"] * source + params["decoder_matmul"] * target
    examples_trained = data["steps"] * data["examples_per_step"]
    flops = _flop_factor(config) * per_epoch * examples_trained / n
    return {
        "examples_trained": examples_trained, "epochs_trained": examples_trained / n, "train_flops": flops,
        "peak_tflops": peak, "mfu": mfu, "gpu_hours": flops / (peak * 1e12 * mfu) / 3600,
    }  # fmt: skip


def _memory(config: TrainConfig, model: nn.Module, gpus: int) -> dict[str, Any]:
    """Bytes per GPU of each strategy (``train.memory``); activations measured at 1 and 2 blocks per stack and
    extrapolated (every block after the first saves the same), or at full depth where the stacks differ."""
    cfg = model.transformer.config  # type: ignore[union-attr]
    depths = {getattr(cfg, n) for n in _DEPTH_FIELDS if isinstance(getattr(cfg, n, None), int)}

    def measured(layers: int | None) -> int:
        shaped = shape_model(config, layers)
        shaped.freeze(METHODS[config.method].freeze)  # type: ignore[operator]
        d = config.data
        return activation_bytes(shaped, config.micro_batch_size, d.max_source_len, d.max_target_len)

    if len(depths) == 1 and (depth := depths.pop()) > 2:
        one, two = measured(1), measured(2)
        activations = one + (depth - 1) * (two - one)
    else:
        activations = measured(None)
    meta = METHODS[config.method].meta
    memory = memory_per_gpu(model, gpus=gpus, activations=activations, fsdp=config.fsdp, meta=meta)
    return {"micro_batch": config.micro_batch_size, "source_len": config.data.max_source_len,
            "target_len": config.data.max_target_len, **memory}  # fmt: skip


def make_plan(
    config: TrainConfig,
    data: str | None = None,
    *,
    peak_tflops: float | None = None,
    mfu: float = DEFAULT_MFU,
    gpus: int = DEFAULT_GPUS,
    memory: bool = True,
) -> dict[str, Any]:
    """What ``pretrain(config)`` will do; with ``data`` (or ``config.data.path``) also what it will read and cost.

    Tokens are counted with the model's tokenizer, loaded without its weights where Transformers can. ``gpus``:
    for the memory per GPU of each strategy (``memory=False``: not measured). The keys of the result are
    documented in the README (``promptability plan``).
    """
    config.validate()
    if data is not None:
        config.data.path = data
    if not 0 < mfu <= 1:
        raise ConfigError(f"mfu must be in (0, 1], got {mfu}")
    model = shape_model(config)
    plan: dict[str, Any] = {"settings": _settings(config), "parameters": parameter_counts(model, config.method)}
    if memory:
        plan["memory"] = _memory(config, model, gpus)
    if config.data.path is None:
        return plan
    check_data(config.data)  # before a tokenizer is fetched
    plan["data"] = _data_plan(config, model)
    peak = peak_tflops if peak_tflops is not None else DEFAULT_PEAK_TFLOPS[config.precision]
    plan["compute"] = _compute(config, plan["parameters"], plan["data"], peak, mfu)
    return plan


@lru_cache(maxsize=1)
def _tiny() -> Any:
    """The offline tiny model, built once per process: its tokenizer is trained afresh each time (not bit for bit
    the same run to run), so the shapes and the token counts must come from the same one."""
    from promptability.model.loading import load_model

    return load_model("tiny")


def _model_part(name: str, auto: Any, part: Callable[[Any], Any]) -> Any:
    """``auto.from_pretrained(name)`` (a Transformers Auto class), without the weights where it can.

    The tiny model gives its own ``part``; a prompt-only save names its base model: ``part`` of the loaded model.
    A Hub id that is not cached, with no network, fails at once (``HubUnreachableError``), not after retries.
    """
    from promptability.model.loading import fail_fast_offline, load_model

    if name == "tiny":
        return part(_tiny())
    if not Path(name).exists():
        fail_fast_offline(name)
    try:
        return auto.from_pretrained(name)
    except OSError:
        return part(load_model(name))


def format_plan(plan: dict[str, Any]) -> str:
    """The plan for a reader: settings, parameters, then data and compute when known."""
    s, p = plan["settings"], plan["parameters"]
    lines = [
        f"model      {s['model']}: {p['total'] / 1e6:,.1f}M parameters, {p['trained'] / 1e6:,.3f}M trained "
        f"({s['method']}, prompt {s['prompt']}" + (f" x {s['prompt_length']})" if s["prompt_length"] else ")"),
        f"optimizer  {s['optimizer']}, lr {s['lr']:g}, clip {s['clip_norm']:g}, {s['precision']}",
        (
            f"batches    {s['global_batch']} examples per step ({s['step_composition']} steps), micro-batch "
            f"{s['micro_batch']}, loss weighted per {s['loss_weighting']}"
        ),
        (
            f"data       sources <= {s['max_source_len']} tokens, targets <= {s['max_target_len']}, "
            f"cap {s['cap']} per {s['cap_per']}" + (f"; deep prompt init {s['deep_init']}" if s["deep_init"] else "")
        ),
    ]
    if s["meta"]:
        m = s["meta"]
        lines.append(
            f"meta       {m['meta_batch_size']} tasks per step, {m['inner_steps']} inner steps x "
            f"{m['task_batch_size']} examples, inner lr {m['inner_lr']:g}; episodes: {m['episodes']}; Reptile's "
            f"transformer step: {m['reptile_transformer_step']}"
        )
    f = s["fewshot"]
    lines.append(
        f"few-shot   {f['shots']} shots ({f['draw']} draw, {f['seeds']} seeds), {f['epochs']} steps at lr {f['lr']:g}, "
        f"loss per {f['loss_weighting']}, {f['precision']}"
    )
    lines += _format_memory(plan["memory"], s) if "memory" in plan else []
    if "data" in plan:
        d, c = plan["data"], plan["compute"]
        lines += [
            (
                f"mixture    {d['templates']} templates, {d['examples']:,} examples after the cap "
                f"({d['examples_before_cap']:,} read); {d['source_tokens']:,} source + {d['target_tokens']:,} target tokens"
            ),
            f"truncated  {d['sources_truncated']:.2%} of sources, {d['targets_truncated']:.2%} of targets",
            (
                f"steps      {d['steps']:,} ({d['steps_per_epoch']:,} per epoch, {d['examples_per_step']:,} examples "
                f"each: {c['epochs_trained']:.2f} epochs)"
            ),
            (
                f"compute    {c['train_flops']:.3g} FLOPs = {c['gpu_hours']:,.3g} GPU-hours at {c['mfu']:.0%} MFU "
                f"of {c['peak_tflops']:g} TFLOP/s"
            ),
        ]
    else:
        lines.append("(give --data for the mixture's counts, steps and compute)")
    return "\n".join(lines)


def _format_memory(m: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    def gib(n: int) -> str:
        return f"{n / 2**30:,.2f}"

    d = m["ddp"]
    lines = [
        (
            f"memory     per GPU on {m['gpus']} GPUs, micro-batch {m['micro_batch']} at {m['source_len']}+"
            f"{m['target_len']} tokens, GiB (without the CUDA context):"
        ),
        (
            f"  ddp      {gib(d['total'])} = params {gib(d['params'])} + grads {gib(d['grads'])} + DDP buckets "
            f"{gib(d['ddp_buckets'])} + Adafactor {gib(d['optimizer'])} + activations {gib(d['activations'])}"
        ),
    ]
    f = m["fsdp"]
    if f is None:
        lines.append(f"  fsdp     not available for {settings['method']} (meta-learning): distributed=ddp")
    else:
        lines.append(
            f"  fsdp     {gib(f['total'])} = shards of params {gib(f['params'])} + grads {gib(f['grads'])} + Adafactor "
            f"{gib(f['optimizer'])}, gathered params {gib(f['gathered_params'])} + grads {gib(f['gathered_grads'])}"
            f", activations {gib(f['activations'])}"
        )
    return lines
