"""The few collectives of steps that all-reduce by hand (meta-learning) instead of through DDP, and FSDP sharding."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def world_of(accelerator: Any) -> tuple[int, int]:
    """(processes, this rank) from the accelerator, else from torch.distributed."""
    if accelerator is not None:
        return int(accelerator.num_processes), int(accelerator.process_index)
    return dist_world()


def dist_world() -> tuple[int, int]:
    """(processes, this rank) of the torch.distributed group; (1, 0) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def average_gradients(params: Iterable[nn.Parameter], accelerator: Any = None, bucket_mb: int = 256) -> None:
    """All-reduces ``.grad`` of ``params`` to its mean over processes (missing grads count as zeros).

    For steps that compute gradients by hand (meta-learning) instead of through DDP.
    """
    world, _ = world_of(accelerator)
    if world == 1:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    limit = bucket_mb * 2**20
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}
    for g in grads:
        slots = buckets.setdefault((g.dtype, g.device), [[]])
        if slots[-1] and sum(t.numel() * t.element_size() for t in slots[-1]) + g.numel() * g.element_size() > limit:
            slots.append([])
        slots[-1].append(g)
    for slots in buckets.values():
        for group in slots:
            flat = _flatten_dense_tensors(group)
            torch.distributed.all_reduce(flat)
            flat.div_(world)
            for g, avg in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
                g.copy_(avg)


def gather_ranks(local: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's inner-optimizer state, in rank order.

    ``local`` is nested dicts of tensors and numbers with the same structure on every rank (same steps, same
    prompt, same trained transformer tensors); keys are visited in sorted order so that the collectives pair up.
    """
    world, _ = dist_world()
    if world == 1:
        return [local]
    out: list[dict[str, Any]] = [{} for _ in range(world)]
    for key in sorted(local):
        value = local[key]
        if isinstance(value, dict):
            for r, nested in enumerate(gather_ranks(value)):
                out[r][key] = nested
            continue
        tensor = value if torch.is_tensor(value) else torch.tensor(float(value), dtype=torch.float64)
        device = tensor.device  # where the backend's collectives need it: NCCL's on the GPU
        if device.type == "cpu" and torch.distributed.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        parts = [torch.empty_like(tensor, device=device) for _ in range(world)]
        torch.distributed.all_gather(parts, tensor.to(device).contiguous())
        for r, part in enumerate(parts):
            out[r][key] = part.cpu() if torch.is_tensor(value) else type(value)(part.item())
    return out


def fast_bf16() -> bool:
    """Whether bf16 matmuls are fast here: a GPU with native bf16 (Ampere or newer), or a CPU with native bf16
    instructions (AVX512_BF16 or AMX). Elsewhere bf16 is emulated: on an AVX2-only CPU its matmuls take a scalar
    path, 5-70x slower than fp32 (measured, AMD EPYC); plain AVX-512 converts in software."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str) -> str:
    """ "auto" -> "bf16" where ``fast_bf16()``, else "fp32"; "fp32" and "bf16" stay as given."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if fast_bf16() else "fp32"


def make_accelerator(precision: str = "fp32", cpu: bool | None = None):
    """An ``accelerate.Accelerator``; ``precision`` "bf16" turns on bf16 autocast (parameters stay fp32)."""
    from accelerate import Accelerator

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if cpu is None:
        cpu = not torch.cuda.is_available()
    want = "bf16" if precision == "bf16" else "no"
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", want)) != want:
        # Accelerate keeps one precision per process; a later stage (e.g. few-shot after pretraining in one
        # session) may ask for another. The process group (PartialState) is kept.
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=want, cpu=cpu)


# ----- FSDP (fully sharded data parallel) ---------------------------------------------------------
DISTRIBUTED_STRATEGIES = ("ddp", "fsdp")
FSDP_WRAPS = ("block", "model")


@dataclass
class FSDPConfig:
    """How ``distributed: fsdp`` shards (PyTorch's FSDP2 ``fully_shard``, what Accelerate's ``fsdp_version: 2`` runs).

    Parameters, gradients and Adafactor's state are split over the processes; the loop gathers them for checkpoints,
    which keep the one-process format. CPU offload is not offered: Adafactor's state is small next to the weights.
    """

    # true: FULL_SHARD, a unit's parameters are freed after its forward and gathered again for its backward;
    # false: SHARD_GRAD_OP, kept from forward to backward (one more all-gather saved per unit, more memory).
    reshard_after_forward: bool = True
    # "block": each transformer block (T5Block, a decoder layer: the model's _no_split_modules) is its own unit, so
    # only one block is gathered at a time; "model": the whole model is one unit (gathered whole: least saving).
    wrap: str = "block"


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """``model``'s transformer blocks: the modules of the classes Transformers keeps whole when splitting a model."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    classes = tuple({type(m) for m in model.modules() if type(m).__name__ in names})
    return [m for m in model.modules() if isinstance(m, classes)]


def prepare_model(step: Any, model: nn.Module, accelerator: Any, fsdp: FSDPConfig | None) -> tuple[nn.Module, Any]:
    """``(trained module, what the step is called with)``.

    Without ``fsdp`` (or in one process) both are ``model``'s own objects: the step's ``prepare`` (DDP) or ``model``
    on the device. With it, the trained module is a sharded copy of ``model`` (``model`` itself stays whole and
    untouched, to receive the trained parameters: ``gather_into``).
    """
    if fsdp is None or world_of(accelerator)[0] == 1:
        wrapped = step.prepare(model, accelerator) if hasattr(step, "prepare") else model.to(accelerator.device)
        return model, wrapped
    # TrainConfig.validate checks both for training runs; these guard direct calls.
    if not hasattr(step, "prepare"):
        raise ValueError(
            f"distributed=fsdp needs a step that trains through the model's own forward and backward (the MTL "
            f"methods); {type(step).__name__} computes and averages its gradients by hand"
        )
    if fsdp.wrap not in FSDP_WRAPS:
        raise ValueError(f"fsdp.wrap must be one of {', '.join(FSDP_WRAPS)}, got {fsdp.wrap!r}")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    sharded = copy.deepcopy(model).to(accelerator.device)
    mesh = init_device_mesh(accelerator.device.type, (world_of(accelerator)[0],))
    if fsdp.wrap == "block":
        for module in transformer_blocks(sharded):
            fully_shard(module, mesh=mesh, reshard_after_forward=fsdp.reshard_after_forward)
    fully_shard(sharded, mesh=mesh, reshard_after_forward=fsdp.reshard_after_forward)
    return sharded, sharded


def _is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_state(obj: Any) -> Any:
    """``obj`` (nested dicts/lists) with every sharded tensor gathered whole on every process (a collective)."""
    if _is_dtensor(obj):
        return obj.full_tensor()
    if isinstance(obj, dict):
        return {k: full_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(full_state(v) for v in obj)
    return obj


def gather_into(sharded: nn.Module, whole: nn.Module) -> nn.Module:
    """Copies ``sharded``'s parameters, gathered, into ``whole`` (every process must call it); returns ``whole``."""
    if sharded is whole:
        return whole
    target = dict(whole.named_parameters())
    with torch.no_grad():
        for name, p in sharded.named_parameters():
            target[name].copy_(full_state(p.detach()))
    return whole


def copy_full_(param: torch.Tensor, full: torch.Tensor) -> None:
    """``param.copy_(full)`` for a whole ``full`` (the same on every process), sharded like ``param`` if it is."""
    if _is_dtensor(param):
        from torch.distributed.tensor import DTensor, distribute_tensor

        assert isinstance(param, DTensor)
        full = distribute_tensor(full.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    param.copy_(full)


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Gives Adafactor's state of sharded parameters the parameters' sharding (zeros where there is none yet).

    Adafactor creates its state as plain tensors, which cannot meet a sharded gradient; sharded like the
    parameter (rows), or whole on every process (the columns of a matrix sharded by rows), its update is the
    one-process update: the column means are reduced over the processes.
    """
    from torch.distributed.tensor import Replicate, distribute_tensor

    for group in optimizer.param_groups:
        for p in group["params"]:
            if not _is_dtensor(p):
                continue
            state = optimizer.state[p]
            if not state:
                factored, _ = optimizer._get_options(group, p.shape)  # type: ignore[attr-defined]
                zeros = {"exp_avg_sq_row": p.shape[:-1], "exp_avg_sq_col": p.shape[:-2] + p.shape[-1:]}
                state.update({"step": 0, "RMS": 0} | (
                    {k: torch.zeros(s) for k, s in zeros.items()} if factored else {"exp_avg_sq": torch.zeros(p.shape)}
                ))  # fmt: skip
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() > 0 and not _is_dtensor(value):
                    whole = key == "exp_avg_sq_col" and p.dim() == 2  # the sharded dim 0 was averaged away
                    placements = [Replicate()] if whole else p.placements
                    value = value.to(device=p.device, dtype=p.dtype)
                    state[key] = distribute_tensor(value, p.device_mesh, placements, src_data_rank=None)
