"""The training losses: target-token negative log-likelihood (the pad id is ``PromptedModel.pad_token_id``).

Every step's loss is a sum of token NLLs divided by a count of target tokens; the
steps differ only in which tokens that count spans (a global batch, one task's
batch, one template's rows), so the sum is computed here and the division there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of the target tokens' negative log-likelihoods (fp32), padding excluded."""
    labels = labels.masked_fill(mask == 0, -100)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")


def token_nll_per_row(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each example's summed target-token NLL (fp32), padding excluded: shape (batch,)."""
    targets = labels.masked_fill(mask == 0, -100)
    return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none").sum(1)
