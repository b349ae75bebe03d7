"""Several templates' prompts tuned in one batch, each exactly as if tuned alone.

Few-shot evaluation tunes one prompt per held-out template (116 in P3) and
seed, on 16 examples each: one template at a time, every step is a tiny batch.
Here the fixed batches of several templates are concatenated and every example
reads its own template's prompt (per-example prompts enter through the same
seam as shared ones: ``functional_call`` swaps in a (batch, ...) tensor). Each
template keeps its own parameters; its loss term is its own loss (weighted as
``FixedBatchStep`` weighs it, ``loss_weighting``), so
its gradient is what it would be alone; clipping is per template; Adafactor's
state and update are per parameter. The result equals sequential tuning up to
floating-point summation order (test: tests/train/test_multi_prompt.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from promptability.data.batching import collate
from promptability.train.loop import build_optimizer
from promptability.train.losses import row_nll, row_units, weigh_rows


def tune_prompts_together(
    model: nn.Module,
    rows: Mapping[str, list[Mapping[str, Any]]],
    start: Mapping[str, torch.Tensor],
    *,
    epochs: int,
    pad_id: int,
    lr: float = 1e-3,
    clip_norm: float = 1.0,
    autocast: torch.dtype | None = None,
    progress: bool = False,
    loss_weighting: str = "token",
) -> dict[str, dict[str, Any]]:
    """Tunes one prompt per template in ``rows`` (tokenized rows: input_ids, labels), all starting from ``start``
    (the prompt module's state dict). Returns ``{template: {"state": prompt state, "first_loss", "final_loss"}}``.
    ``autocast``: the forward pass's dtype (e.g. torch.bfloat16); prompts and optimizer state stay fp32.
    ``loss_weighting``: as ``FixedBatchStep``'s, per template.
    """
    templates = list(rows)
    device = next(model.parameters()).device
    params = {t: {n: nn.Parameter(v.detach().clone().to(device)) for n, v in start.items()} for t in templates}
    optimizer = build_optimizer([p for t in templates for p in params[t].values()], lr)
    flat = [r for t in templates for r in rows[t]]
    owner = torch.tensor([i for i, t in enumerate(templates) for _ in rows[t]], device=device)
    batch = {k: v.to(device) for k, v in collate(flat, pad_id).items()}
    mask = batch["decoder_attention_mask"]
    units = row_units(mask.sum(1), loss_weighting).float()
    units = torch.zeros(len(templates), device=device).index_add_(0, owner, units)
    first: torch.Tensor | None = None
    losses = torch.zeros(len(templates))
    was_training = model.training
    model.train()
    cast = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    bar = tqdm(range(epochs), desc=f"tuning {len(templates)} prompts", unit="epoch", disable=not progress,
               leave=False, dynamic_ncols=True)  # fmt: skip
    for _ in bar:
        swapped = {f"prompt.{n}": torch.stack([params[t][n] for t in templates])[owner] for n in start}
        with cast:
            per_row = weigh_rows(row_nll(model, batch, swapped), mask.sum(1), loss_weighting)
        per_template = torch.zeros(len(templates), device=device).index_add_(0, owner, per_row) / units
        per_template.sum().backward()
        losses = per_template.detach().cpu()
        bar.set_postfix(loss=f"{float(losses.mean()):.3f}")
        if first is None:
            first = losses
        for t in templates:
            torch.nn.utils.clip_grad_norm_(list(params[t].values()), clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.train(was_training)
    return {
        t: {
            "state": {n: p.detach() for n, p in params[t].items()},
            "first_loss": float(first[i]) if first is not None else None,
            "final_loss": float(losses[i]),
        }
        for i, t in enumerate(templates)
    }
