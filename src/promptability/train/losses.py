"""The training losses: target-token negative log-likelihood (the pad id is ``PromptedModel.pad_token_id``).

Every step's loss is a weighted mean of its rows' NLLs over a group of rows (a
global batch, one task's batch, one template's rows):

    loss = sum over rows of row_nll(row) / sum over rows of row_units(row)

Both sums are additive, so the steps accumulate them over micro-batches and
processes and the loss does not depend on how the group is split. The
``loss_weighting`` option (``LOSS_WEIGHTINGS``) says what a row contributes:

* ``"example"``: the row's mean token NLL, one unit per row, so every example
  weighs the same whatever its target length. The paper's reference code
  (allenai/better-promptability, ``models/model.py: compute_loss``) averaged
  tokens within 2-example micro-batches (MTL) or single examples (meta-learning,
  ``meta_accumulate_grad_batches`` = the support batch size), then averaged those
  micro-batch losses: close to this.
* ``"token"``: the row's summed token NLL, one unit per target token: the mean
  over all target tokens of the group, so a 192-token summary weighs ~100x a
  one-token label. The reference's few-shot tuning (one batch of 16) did this.

This module is the one place that computes the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LOSS_WEIGHTINGS = ("example", "token")


def check_weighting(weighting: str, where: str = "loss_weighting") -> str:
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"{where} must be one of {', '.join(LOSS_WEIGHTINGS)}, got {weighting!r}")
    return weighting


def token_nll_per_row(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each example's summed target-token NLL (fp32), padding excluded: shape (batch,)."""
    targets = labels.masked_fill(mask == 0, -100)
    return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none").sum(1)


def row_nll(
    model: nn.Module, batch: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Each row's summed target-token NLL (fp32), shape (batch,): ``token_nll_per_row`` of the model's logits.

    A model with ``computes_row_nll`` (``PromptedSeq2SeqLM``) runs its LM head and softmax on the real target
    tokens only and makes no (batch, target length, vocabulary) logits; others give logits, reduced here.
    ``params``: tensors swapped in for this call (``torch.func.functional_call``), e.g. per-example prompts.
    ``model`` may be wrapped (DDP, FSDP: ``.module``); the call goes through the wrapper.
    """

    def call(**kwargs: Any) -> Any:
        return (
            model(**batch, **kwargs)
            if params is None
            else torch.func.functional_call(model, dict(params), (), {**batch, **kwargs})
        )

    if getattr(getattr(model, "module", model), "computes_row_nll", False):
        return call(row_nll=True).loss
    logits = call(return_loss=False).logits
    return token_nll_per_row(logits, batch["labels"], batch["decoder_attention_mask"])


def weigh_rows(summed: torch.Tensor, target_lengths: torch.Tensor, weighting: str) -> torch.Tensor:
    """Each row's loss numerator under ``weighting`` from its summed token loss: the sum, or the per-token mean."""
    if check_weighting(weighting) == "token":
        return summed
    return summed / target_lengths.clamp(min=1).to(summed.dtype)  # an empty target adds 0 and still counts once


def row_units(target_lengths: torch.Tensor, weighting: str) -> torch.Tensor:
    """Each row's share of the loss denominator under ``weighting``: its target-token count, or 1."""
    lengths = target_lengths.to(torch.float64)
    return lengths if check_weighting(weighting) == "token" else torch.ones_like(lengths)


def loss_units(target_lengths: Sequence[int] | torch.Tensor, weighting: str) -> int:
    """The denominator of a group of rows with these target lengths: their target tokens (token) or rows (example)."""
    lengths = torch.as_tensor(target_lengths if len(target_lengths) else [], dtype=torch.float64)
    return int(row_units(lengths, weighting).sum())
