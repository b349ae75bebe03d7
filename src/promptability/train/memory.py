"""GPU memory per process for each distributed strategy (``promptability plan``), in bytes.

Exact for what the loop keeps (fp32 parameters, also under bf16 autocast; fp32 gradients of the trained ones;
Adafactor's state as ``build_optimizer`` makes it: a row and a column vector per trained matrix, a full second
moment per vector, a scalar RMS per tensor, no first moment) and for how ``distributed=fsdp`` shards them
(``distributed.prepare_model``: PyTorch's FSDP2 splits dim 0 of every tensor into ``gpus`` chunks of
``ceil(dim0 / gpus)`` rows; Adafactor's column vectors stay whole). Activations are measured, not modelled: the
bytes autograd saves in one forward pass of a micro-batch at the maximum lengths, run on the ``meta`` device
(shapes only) with the method's freeze preset; fp32, so an upper bound under bf16 autocast.

Not counted: the CUDA context and allocator slack (~0.5-1 GiB), the logits' softmax workspace, temporaries.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
from torch import nn

from promptability.train.distributed import FSDPConfig, transformer_blocks

FP32 = 4


def _adafactor_state(p: torch.Tensor, rows: int) -> int:
    """Adafactor's state of ``p`` when its dim 0 holds ``rows`` rows (all of them, or one FSDP shard)."""
    if p.dim() == 0:
        return 2 * FP32
    shape = (rows, *p.shape[1:])
    if len(shape) == 1:
        return (rows + 1) * FP32  # the second moment, and RMS
    # rows: shape[:-1]; columns: shape[:-2] + shape[-1:] (of a matrix: whole on every process)
    return (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1] + 1) * FP32


def _shard_rows(p: torch.Tensor, gpus: int) -> int:
    return -(-p.shape[0] // gpus) if p.dim() else 1


def _bytes(params: list[nn.Parameter]) -> int:
    return sum(p.numel() for p in params) * FP32


def model_state(model: nn.Module, gpus: int = 1) -> dict[str, int]:
    """Parameters, gradients and optimizer state held per process: whole (``gpus=1``) or FSDP-sharded."""
    params = list(model.parameters())
    trained = [p for p in params if p.requires_grad]

    def sharded(p: torch.Tensor) -> int:
        return _shard_rows(p, gpus) * (p.numel() // max(p.shape[0], 1) if p.dim() else 1) * FP32

    return {
        "params": sum(sharded(p) for p in params),
        "grads": sum(sharded(p) for p in trained),
        "optimizer": sum(_adafactor_state(p, _shard_rows(p, gpus)) for p in trained),
    }


def gathered(model: nn.Module, fsdp: FSDPConfig) -> dict[str, int]:
    """Whole tensors FSDP holds besides the shards, at their peak (the backward of the first block).

    The root unit (embeddings, LM head, prompt, final norms: all but the blocks) stays gathered from forward to
    backward; of the blocks, two are gathered at a time (the one running and the one prefetched), with one
    block's whole gradients before their reduce-scatter. ``reshard_after_forward=false`` keeps every block
    gathered from its forward to its backward; ``wrap=model`` gathers everything.
    """
    blocks = transformer_blocks(model) if fsdp.wrap == "block" else []
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    root = [p for p in model.parameters() if id(p) not in in_blocks]
    largest = max((list(b.parameters()) for b in blocks), key=_bytes, default=[])
    every = list(model.parameters())
    params = (
        _bytes(every)
        if not blocks or not fsdp.reshard_after_forward
        else _bytes(root) + min(len(blocks), 2) * _bytes(largest)
    )
    held = every if not blocks else root + largest
    return {"params": params, "grads": _bytes([p for p in held if p.requires_grad])}


def activation_bytes(model: nn.Module, micro_batch: int, source_len: int, target_len: int) -> int:
    """Bytes autograd saves for the backward of one forward pass (``model`` on the meta device, freeze applied)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    saved: list[weakref.ref] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(weakref.ref(t))  # autograd keeps t while its node lives: what is dead by the end never counted
        return t

    device = next(model.parameters()).device
    ids = torch.zeros(micro_batch, source_len, dtype=torch.long, device=device)
    labels = torch.zeros(micro_batch, target_len, dtype=torch.long, device=device)
    kwargs: dict[str, Any] = {"input_ids": ids, "labels": labels}
    if getattr(model, "is_causal", False):
        kwargs = {"input_ids": torch.cat([ids, labels], 1), "labels": torch.cat([ids, labels], 1)}
    model.train()
    # Fake tensors, not bare meta ones: Transformers then builds the attention mask instead of reading its values.
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**kwargs)
        params = [mode.from_tensor(p) for p in model.parameters()]  # counted as parameters
        skip = {p.untyped_storage()._cdata for p in params}
        # Each storage once (views share their base's): the saved tensors that are alive, but the parameters.
        alive = [t for ref in saved if (t := ref()) is not None]
        storages = {s._cdata: s.nbytes() for t in alive if (s := t.untyped_storage())._cdata not in skip}
        return sum(storages.values())


def memory_per_gpu(
    model: nn.Module, *, gpus: int, activations: int, fsdp: FSDPConfig | None = None, meta: bool = False
) -> dict[str, Any]:
    """Bytes per GPU for DDP (and FSDP unless ``meta``: meta-learning runs only under DDP) on ``gpus`` GPUs."""
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    whole = model_state(model)
    ddp = {**whole, "ddp_buckets": whole["grads"] if gpus > 1 else 0, "activations": activations}
    out: dict[str, Any] = {"gpus": gpus, "ddp": {**ddp, "total": sum(ddp.values())}}
    if meta:
        out["fsdp"] = None
        return out
    fsdp = fsdp or FSDPConfig()
    shards = model_state(model, gpus)
    full = gathered(model, fsdp)
    f = {**shards, "gathered_params": full["params"], "gathered_grads": full["grads"], "activations": activations}
    out["fsdp"] = {**f, "total": sum(f.values())}
    return out
