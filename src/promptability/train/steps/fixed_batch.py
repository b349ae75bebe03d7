"""The few-shot step: the same fixed batch every step (one template's k shots), loss weighted by ``train.losses``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from promptability.train.losses import check_weighting, loss_units, row_nll, weigh_rows


class FixedBatchStep:
    """The train step of few-shot tuning: the same batch every step.

    ``loss_weighting``: "token" (the mean over the batch's target tokens, as the
    reference's few-shot tuning did with its one batch of 16) or "example" (the
    mean over examples of each one's mean token NLL).
    """

    def __init__(self, batch: Mapping[str, torch.Tensor], loss_weighting: str = "token") -> None:
        self.batch = dict(batch)
        self.loss_weighting = check_weighting(loss_weighting)
        self.calls = 0
        self.first_loss: float | None = None  # the loss before any update

    def __call__(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        batch = {k: v.to(accelerator.device) for k, v in self.batch.items()}
        mask = batch["decoder_attention_mask"]
        with accelerator.autocast():
            nll = weigh_rows(row_nll(model, batch), mask.sum(1), self.loss_weighting).sum()
        units = loss_units(mask.sum(1), self.loss_weighting)
        accelerator.backward(nll / units)
        self.calls += 1
        loss = float(nll.detach()) / units
        if self.first_loss is None:
            self.first_loss = loss
        tokens = int(mask.sum()) + int(batch["attention_mask"].sum())
        return {"loss": loss, "tokens": float(tokens), "examples": float(len(batch["labels"]))}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
