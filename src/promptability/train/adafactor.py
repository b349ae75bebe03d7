"""Adafactor as the project runs it (constant lr, no parameter scaling, no first moment), in fewer passes.

``transformers.optimization.Adafactor`` walks each parameter about a dozen
times per step: it squares the gradient and adds eps in two passes, forms
the factored second-moment estimate and multiplies by the gradient in two
more, clips and scales the update in two, and negates it into a new tensor
before adding it. At the T5-small shape that made the optimizer about a
fifth of an MTL-TP training step on CPU (benchmarks/mtl.py's docstring has
the profile). ``FusedAdafactor.step`` does the same arithmetic in about seven
passes: the parameter's RMS (kept in the state, as transformers keeps it),
``addcmul`` for grad^2 + eps, the two means, the factored scale multiplied
in place into that buffer, one norm, and one ``addcmul_`` into the parameter
with -lr / max(1, RMS / clip_threshold) as a 0-dim tensor (no host sync).
The result equals transformers' up to float rounding (the order of a few
multiplications; tests/train/test_adafactor.py compares them step by step),
and the state has the same keys, so checkpoints move between the two. Any
other setting (relative step, scale_parameter, beta1, weight decay,
half-precision parameters or gradients, sparse or distributed tensors) runs
transformers' step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from transformers.optimization import Adafactor


class FusedAdafactor(Adafactor):
    """``transformers``' Adafactor, with a faster step for the project's settings (see the module docstring)."""

    def _fast(self) -> bool:
        for group in self.param_groups:
            if group["relative_step"] or group["scale_parameter"] or group["warmup_init"]:
                return False
            if group["beta1"] is not None or group["weight_decay"] != 0:
                return False
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if type(p.data) is not torch.Tensor or type(grad) is not torch.Tensor or grad.is_sparse:
                    return False
                if p.dtype != torch.float32 or grad.dtype != torch.float32:
                    return False
        return True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not self._fast():
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, group)
        return loss

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        factored = grad.dim() >= 2
        if len(state) == 0:
            state["step"] = 0
            if factored:
                state["exp_avg_sq_row"] = grad.new_zeros(grad.shape[:-1])
                state["exp_avg_sq_col"] = grad.new_zeros(grad.shape[:-2] + grad.shape[-1:])
            else:
                state["exp_avg_sq"] = torch.zeros_like(grad)
        state["step"] += 1
        state["RMS"] = self._rms(p)  # unused without scale_parameter; kept so the state is transformers' exactly
        beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
        update = torch.addcmul(grad.new_tensor(group["eps"][0]), grad, grad)  # grad^2 + eps
        if factored:
            row, col = state["exp_avg_sq_row"].to(grad), state["exp_avg_sq_col"].to(grad)
            state["exp_avg_sq_row"], state["exp_avg_sq_col"] = row, col
            row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
            col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
            r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
            c_factor = col.unsqueeze(-2).rsqrt()
            update = torch.mul(grad, r_factor, out=update).mul_(c_factor)  # the buffer is free after the means
        else:
            second = state["exp_avg_sq"].to(grad)
            state["exp_avg_sq"] = second
            second.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
            update = torch.rsqrt(second, out=update).mul_(grad)
        rms = torch.linalg.vector_norm(update) / math.sqrt(update.numel())
        scale = (rms / group["clip_threshold"]).clamp_(min=1.0).reciprocal_().mul_(-group["lr"])
        p.addcmul_(update, scale)
