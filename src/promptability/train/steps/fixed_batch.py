"""The few-shot step: the same fixed batch every step (one template's k shots), loss = its mean token NLL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from promptability.train.losses import token_nll_sum


class FixedBatchStep:
    """The train step of few-shot tuning: the same batch every step, mean token NLL."""

    def __init__(self, batch: Mapping[str, torch.Tensor]) -> None:
        self.batch = dict(batch)
        self.calls = 0
        self.first_loss: float | None = None  # the loss before any update

    def __call__(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        batch = {k: v.to(accelerator.device) for k, v in self.batch.items()}
        with accelerator.autocast():
            out = model(**batch, return_loss=False)
            nll = token_nll_sum(out.logits, batch["labels"], batch["decoder_attention_mask"])
        n = int(batch["decoder_attention_mask"].sum())
        accelerator.backward(nll / n)
        self.calls += 1
        loss = float(nll.detach()) / n
        if self.first_loss is None:
            self.first_loss = loss
        tokens = n + int(batch["attention_mask"].sum())
        return {"loss": loss, "tokens": float(tokens), "examples": float(len(batch["labels"]))}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
