"""The few collectives of steps that all-reduce by hand (meta-learning) instead of through DDP."""

from __future__ import annotations

from collections.abc import Iterable
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
    world = (
        accelerator.num_processes
        if accelerator is not None
        else (torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1)
    )
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
        device = tensor.device if tensor.device.type != "cpu" else collective_device()
        parts = [torch.empty_like(tensor, device=device) for _ in range(world)]
        torch.distributed.all_gather(parts, tensor.to(device).contiguous())
        for r, part in enumerate(parts):
            out[r][key] = part.cpu() if torch.is_tensor(value) else type(value)(part.item())
    return out


def collective_device() -> torch.device:
    """Where tensors must be for a collective of the current backend."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
