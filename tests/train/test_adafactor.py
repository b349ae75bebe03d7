"""FusedAdafactor takes transformers' Adafactor steps (to float rounding) and shares its state format."""

from __future__ import annotations

import pytest
import torch
from transformers.optimization import Adafactor

from promptability.train.adafactor import FusedAdafactor
from promptability.train.loop import build_optimizer

SETTINGS = dict(lr=1e-2, scale_parameter=False, relative_step=False, warmup_init=False)


def _tensors(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (3, 4, 6), (9,), (1, 8)]  # factored 2-D and 3-D, unfactored 1-D, a one-row matrix
    return [torch.randn(s, generator=g) for s in shapes]


def _run(optimizer_cls, steps: int, **settings) -> tuple[list[torch.Tensor], dict]:
    params = [torch.nn.Parameter(t) for t in _tensors(0)]
    opt = optimizer_cls(params, **{**SETTINGS, **settings})
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        for p in params:
            # varied gradient scales, so RMS clipping both binds and does not
            p.grad = torch.randn(p.shape, generator=g) * (10.0 if step % 2 else 1e-3)
        params[2].grad[0] = 0.0  # an exactly zero gradient: eps keeps the second moment positive
        opt.step()
    return [p.detach().clone() for p in params], opt.state_dict()


@pytest.mark.parametrize("settings", [{}, {"clip_threshold": 0.5, "decay_rate": -0.5}])
def test_fused_steps_equal_transformers_steps(settings):
    fused, fused_state = _run(FusedAdafactor, 6, **settings)
    plain, plain_state = _run(Adafactor, 6, **settings)
    start = _tensors(0)
    for f, p, s in zip(fused, plain, start, strict=True):
        assert float((p - s).abs().max()) > 1e-3  # the weights moved
        torch.testing.assert_close(f, p, rtol=1e-6, atol=1e-7)
    for i, entry in plain_state["state"].items():
        ours = fused_state["state"][i]
        assert set(ours) == set(entry) and ours["step"] == entry["step"] == 6
        for key in set(ours) - {"step"}:
            torch.testing.assert_close(ours[key], entry[key], rtol=1e-6, atol=0)


def test_state_moves_between_the_two():
    params = [torch.nn.Parameter(t) for t in _tensors(0)]
    plain = Adafactor(params, **SETTINGS)
    for p in params:
        p.grad = torch.ones_like(p)
    plain.step()
    fused = FusedAdafactor(params, **SETTINGS)
    fused.load_state_dict(plain.state_dict())  # a checkpoint of transformers' step resumes under the fused one
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    again = Adafactor(twin, **SETTINGS)
    again.load_state_dict(plain.state_dict())
    for p, q in zip(params, twin, strict=True):
        q.grad = p.grad.clone() * 2
        p.grad = p.grad * 2
    fused.step()
    again.step()
    for p, q in zip(params, twin, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_other_settings_and_half_precision_take_transformers_step(monkeypatch):
    calls = []
    monkeypatch.setattr(Adafactor, "step", lambda self, closure=None: calls.append(self))
    p = torch.nn.Parameter(torch.ones(3, 3))
    p.grad = torch.ones(3, 3)
    FusedAdafactor([p], **{**SETTINGS, "scale_parameter": True}).step()
    FusedAdafactor([p], **{**SETTINGS, "weight_decay": 0.1}).step()
    h = torch.nn.Parameter(torch.ones(3, 3, dtype=torch.bfloat16))
    h.grad = torch.ones(3, 3, dtype=torch.bfloat16)
    FusedAdafactor([h], **SETTINGS).step()
    assert len(calls) == 3
    fast = build_optimizer([p], 1e-3)
    assert isinstance(fast, FusedAdafactor) and isinstance(fast, Adafactor) and fast._fast()
    fast.step()
    assert len(calls) == 3  # the project's settings take the fused step
