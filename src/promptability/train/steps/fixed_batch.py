"""The few-shot step: the same fixed batch every step (one template's k shots), loss weighted by ``train.losses``.

With ``micro_batch_tokens`` the batch runs as micro-batches of similar lengths (``data.batching.split_batch``)
whose gradients add up to the whole batch's: the loss's denominator is the whole batch's, so only the order of
float additions differs (and, in a model with dropout, the masks drawn). On 2 CPU cores this takes about a
sixth off the real study's tuning steps (less padding, and smaller activations that stay in cache:
``benchmarks/study_steps.py``); on a GPU one batch of 16 is faster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from promptability.data.batching import split_batch
from promptability.train.losses import loss_units, row_nll, weigh_rows


class FixedBatchStep:
    """The train step of few-shot tuning: the same batch every step.

    ``loss_weighting``: "token" (the mean over the batch's target tokens, as the
    reference's few-shot tuning did with its one batch of 16) or "example" (the
    mean over examples of each one's mean token NLL). ``micro_batch_tokens``: 0 runs the batch whole; N > 0 in
    micro-batches of at most N padded source + target tokens (the same gradient up to float order and dropout).
    """

    def __init__(
        self, batch: Mapping[str, torch.Tensor], loss_weighting: str = "token", micro_batch_tokens: int = 0
    ) -> None:
        self.batch = dict(batch)
        self.micro_batches = [self.batch] if micro_batch_tokens == 0 else split_batch(batch, micro_batch_tokens)
        self.loss_weighting = loss_weighting
        self.calls = 0
        self.first_loss: float | None = None  # the loss before any update

    def __call__(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        units = loss_units(self.batch["decoder_attention_mask"].sum(1), self.loss_weighting)  # of the whole batch
        nll_total = torch.zeros((), dtype=torch.float64, device=accelerator.device)  # summed on the device: no sync
        for micro in self.micro_batches:
            batch = {k: v.to(accelerator.device) for k, v in micro.items()}
            with accelerator.autocast():
                nll = weigh_rows(row_nll(model, batch), batch["decoder_attention_mask"].sum(1), self.loss_weighting)
                nll = nll.sum()
            accelerator.backward(nll / units)
            nll_total += nll.detach().double()
        self.calls += 1
        loss = float(nll_total) / units
        if self.first_loss is None:
            self.first_loss = loss
        tokens = int(self.batch["decoder_attention_mask"].sum()) + int(self.batch["attention_mask"].sum())
        return {"loss": loss, "tokens": float(tokens), "examples": float(len(self.batch["labels"]))}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
