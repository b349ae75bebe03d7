"""The meta-learning steps' inner optimizers: Reptile's transformer step, and their state as plain dicts.

The inner Adafactor's state is keyed by tensor objects that live only as long
as a ``MetaStep``; ``export_state``/``import_state`` key it by name instead
(a prompt tensor's index, a transformer tensor's parameter name), which is what
``MetaStep.state_dict`` saves and a resumed run loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn
from transformers.optimization import Adafactor

from promptability.train.loop import build_optimizer

TRANSFORMER_STATE = "transformer"  # the key of a rank's inner state that holds the transformer tensors' state


def export_state(optimizer: torch.optim.Optimizer, named: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``optimizer``'s state of each of the ``named`` tensors that has one, copied, by name."""
    return {
        name: {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in entry.items()}
        for name, t in named.items()
        if (entry := optimizer.state.get(t))
    }


def import_state(
    optimizer: torch.optim.Optimizer, named: Mapping[str, torch.Tensor], state: Mapping[str, Any], what: str
) -> None:
    """Replaces ``optimizer``'s state with ``state`` (from ``export_state``); ``what`` names the tensors in errors."""
    unknown = [n for n in state if n not in named]
    if unknown:
        raise ValueError(f"inner optimizer state names {what}s this model lacks: {unknown[:3]} (it has {len(named)})")
    optimizer.state.clear()
    for name, entry in state.items():
        t = named[name]
        optimizer.state[t] = {k: (v.to(t.device).clone() if torch.is_tensor(v) else v) for k, v in entry.items()}


class TransformerStep:
    """Reptile's inner Adafactor step for the transformer, taken on running sums instead of on the weights.

    Adafactor without parameter scaling or weight decay moves a tensor by an
    update that depends only on the gradient and the state, never on the
    tensor's value. So stepping a sum ``s`` that starts at zero with each task's
    transformer gradient leaves ``s = -sum over tasks of update_task``, the
    transformer's share of sum(θ - θ''), and each sum carries its tensor's
    Adafactor state from task to task (with ``state["RMS"]`` set to the weights'
    RMS, as stepping the weights would record). The real optimizer runs: nothing
    of it is re-implemented.
    """

    def __init__(self, named: list[tuple[str, nn.Parameter]], lr: float) -> None:
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        # Empty between steps: ``start`` gives them their storage, ``write_mean_update`` hands it to ``.grad``.
        self.sums = [torch.empty(0, dtype=torch.float32, device=p.device) for p in self.params]
        self.optimizer = build_optimizer(self.sums, lr)
        for group in self.optimizer.param_groups:  # what lets the sums stand in for the weights
            assert not group["scale_parameter"] and group["weight_decay"] == 0.0, group

    def start(self) -> None:
        for p, t in zip(self.params, self.sums, strict=True):
            t.data = torch.zeros_like(p, dtype=torch.float32)  # .data: the optimizer's state stays keyed by ``t``

    @torch.no_grad()
    def step(self) -> None:
        """Steps every tensor with a gradient by its task gradient in ``.grad``, then zeroes ``.grad``."""
        for p, t in zip(self.params, self.sums, strict=True):
            if p.grad is not None:
                t.grad = p.grad if p.grad.dtype == t.dtype else p.grad.float()
        self.optimizer.step()
        for p, t in zip(self.params, self.sums, strict=True):
            if t.grad is not None:
                self.optimizer.state[t]["RMS"] = Adafactor._rms(p if p.dtype == torch.float32 else p.float())
                t.grad = None
                cast(torch.Tensor, p.grad).zero_()

    @torch.no_grad()
    def write_mean_update(self, tasks: int) -> None:
        """Leaves the mean of the tasks' updates, the transformer's Reptile meta-gradient, in ``.grad``.

        Each sum's storage becomes the gradient (the per-task gradient buffer is dropped), so between outer
        steps the transformer has its weights and gradients and nothing else.
        """
        for p, t in zip(self.params, self.sums, strict=True):
            mean = t.mul_(-1.0 / tasks).detach()  # another tensor on the same storage: t is emptied below
            p.grad = mean if mean.dtype == p.dtype else mean.to(p.dtype)
            t.data = torch.empty(0, dtype=torch.float32, device=p.device)

    def state(self) -> dict[str, Any]:
        """The carried Adafactor state by transformer tensor name."""
        return export_state(self.optimizer, dict(zip(self.names, self.sums, strict=True)))

    def load(self, state: Mapping[str, Any]) -> None:
        import_state(self.optimizer, dict(zip(self.names, self.sums, strict=True)), state, "trained transformer tensor")
