"""The multi-task step (MTL-T, MTL-P, MTL-TP): one optimizer step over one global batch of the mixture.

One epoch = one pass over the mixture. ``composition`` (``data.step_composition``)
says how global batches are drawn: "iid" slices of the shuffled mixture, sorted
by length inside the step, or "length_bands" (one length band per step; see
``data.batching.LengthGroupedBatchSampler``). Each global batch is split into
micro-batches for gradient accumulation and across processes. The loss does not
depend on that split (``train.losses``; ``loss_weighting``):

    loss = (sum of row NLLs over the global batch) / (units in the global batch)

with a row's NLL its mean token NLL and one unit per example ("example"), or its
summed token NLL and one unit per target token ("token"). The unit count is
all-reduced before any backward pass, each micro-batch's summed NLL is scaled
by ``world_size / units`` (DDP averages over processes), so 2 processes x half a
batch give the gradients of 1 process x the whole batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from promptability.data.batching import TRAIN_COLUMNS, LengthGroupedBatchSampler, collate, lengths_of
from promptability.train.losses import loss_units, row_nll, token_nll_per_row, weigh_rows

if TYPE_CHECKING:
    from promptability.model.prompted import PromptedModel
    from promptability.train.config import TrainConfig


class MTLStep:
    """One optimizer step of multi-task training over a tokenized mixture (see the module docstring).

    ``batch_size`` is global (all processes); each process reads its share
    ``batch_size / num_replicas`` and runs it in micro-batches of at most
    ``micro_batch_size``. ``steps_per_epoch`` is one pass over ``dataset``.
    ``loss_weighting`` and ``composition`` default to the step's original
    behaviour (token, length bands); training runs take them from the config
    (``mtl_step_options``), whose defaults are the paper's reference code's.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        pad_id: int,
        batch_size: int,
        micro_batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        megabatch_mult: int = 50,
        loss_weighting: str = "token",
        composition: str = "length_bands",
    ) -> None:
        if len(dataset) == 0:
            raise ValueError("the training mixture is empty")
        self.loss_weighting = loss_weighting
        # The sampler checks the sizes: all >= 1, batch_size divisible by num_replicas.
        self.sampler = LengthGroupedBatchSampler(
            lengths_of(dataset), batch_size, seed=seed, megabatch_mult=megabatch_mult,
            num_replicas=num_replicas, rank=rank, composition=composition, micro_batch_size=micro_batch_size,
        )  # fmt: skip
        self.view = dataset.select_columns(TRAIN_COLUMNS)
        self.pad_id = pad_id
        self.micro_batch_size = micro_batch_size
        self.steps_per_epoch = len(self.sampler)
        self._iterator: Iterator[list[int]] | None = None

    def prepare(self, model: nn.Module, accelerator: Any) -> nn.Module:
        return accelerator.prepare(model)  # DDP when several processes run

    def _next_indices(self) -> list[int]:
        if self._iterator is None:
            self._iterator = iter(self.sampler)
        try:
            return next(self._iterator)
        except StopIteration:  # end of an epoch: the sampler moved on to the next one
            self._iterator = iter(self.sampler)
            return next(self._iterator)

    def __call__(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        device = accelerator.device
        rows = self.view[self._next_indices()]
        n = len(rows["labels"])
        target_lengths = [len(x) for x in rows["labels"]]
        counts = torch.tensor(
            [loss_units(target_lengths, self.loss_weighting), sum(target_lengths), sum(map(len, rows["input_ids"])), n],
            dtype=torch.int64, device=device,
        )  # fmt: skip
        if accelerator.num_processes > 1:
            counts = accelerator.reduce(counts, "sum")
        units, target_tokens, source_tokens, examples = (int(c) for c in counts.tolist())
        scale = accelerator.num_processes / units
        starts = range(0, n, self.micro_batch_size)
        nll_total = torch.zeros((), dtype=torch.float64, device=device)
        for j, start in enumerate(starts):
            micro = {k: v[start : start + self.micro_batch_size] for k, v in rows.items()}
            batch = {k: v.to(device) for k, v in collate(micro, self.pad_id).items()}
            # DDP all-reduces the gradients once a step: in the last micro-batch's backward.
            sync = contextlib.nullcontext() if j == len(starts) - 1 else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                mask = batch["decoder_attention_mask"]
                per_row = self._row_losses(model, batch)  # reduced over the global batch below
                nll = weigh_rows(per_row, mask.sum(1), self.loss_weighting).sum()
            accelerator.backward(nll * scale)
            nll_total += nll.detach().double()
        if accelerator.num_processes > 1:
            nll_total = accelerator.reduce(nll_total, "sum")
        return {
            "loss": float(nll_total) / units,
            "tokens": float(target_tokens + source_tokens),
            "target_tokens": float(target_tokens),
            "examples": float(examples),
        }

    def _row_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if type(self).token_loss is MTLStep.token_loss:  # the plain NLL: without full logits (train.losses.row_nll)
            return row_nll(model, batch)
        logits = model(**batch, return_loss=False).logits  # a subclass's token_loss reads them
        return self.token_loss(logits, batch["labels"], batch["decoder_attention_mask"])

    def token_loss(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each row's summed token loss, shape (batch,); the step weighs the rows and divides by the global units."""
        return token_nll_per_row(logits, labels, mask)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self._iterator = None


def mtl_step_options(model: PromptedModel, config: TrainConfig, accelerator: Any) -> dict[str, Any]:
    """``MTLStep``'s keyword arguments for ``config`` on this process (for steps built on MTLStep)."""
    world, rank = (1, 0) if accelerator is None else (accelerator.num_processes, accelerator.process_index)
    return dict(
        pad_id=model.pad_token_id, batch_size=config.batch_size, micro_batch_size=config.micro_batch_size,
        seed=config.seed, num_replicas=world, rank=rank, megabatch_mult=config.data.megabatch_mult,
        loss_weighting=config.loss_weighting, composition=config.data.step_composition,
    )  # fmt: skip


def build_mtl_step(method: str, model: PromptedModel, data: Any, config: TrainConfig, accelerator: Any) -> MTLStep:
    """The step of ``mtl-t``/``mtl-p``/``mtl-tp`` (they differ only in what is frozen) over the tokenized ``data``."""
    return MTLStep(data, **mtl_step_options(model, config, accelerator))
