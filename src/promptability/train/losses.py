"""The training losses: target-token negative log-likelihood, and the pad id batches are padded with.

Every step's loss is a sum of token NLLs divided by a count of target tokens; the
steps differ only in which tokens that count spans (a global batch, one task's
batch, one template's rows), so the sum is computed here and the division there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_id_of(model: nn.Module) -> int:
    """The id batches for ``model`` are padded with: its tokenizer's, else its transformer config's."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(model.transformer.config.pad_token_id)  # type: ignore[union-attr, arg-type]  # nn.Module.__getattr__ types dynamic attributes as Tensor | Module


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of the target tokens' negative log-likelihoods (fp32), padding excluded."""
    labels = labels.masked_fill(mask == 0, -100)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")


def token_nll_per_row(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each example's summed target-token NLL (fp32), padding excluded: shape (batch,)."""
    targets = labels.masked_fill(mask == 0, -100)
    return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none").sum(1)
