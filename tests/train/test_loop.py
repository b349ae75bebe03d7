"""The shared training loop: optimizer, clipping, exact resume, checkpoints, logs, non-finite stops."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from transformers.optimization import Adafactor

from promptability.model.loading import load_model
from promptability.train import loop
from promptability.train.config import TrainConfig
from promptability.train.loop import NonFiniteLossError, build_optimizer, latest_checkpoint, train
from promptability.train.methods import build_step
from promptability.train.state import load_state, rng_state, save_state, set_rng_state


def _config(method="mtl-tp", prompt="shallow", **kw) -> TrainConfig:
    return TrainConfig(method=method, prompt=prompt, batch_size=4, micro_batch_size=2, **kw).validate()


def _run(make_model, data, accelerator, out, steps, *, resume=False, method="mtl-tp", prompt="deep", save_every=3):
    model = make_model(prompt)
    step = build_step(method, model, data, _config(method, prompt), accelerator)
    result = train(model, step, accelerator, max_steps=steps, out_dir=out, save_every=save_every, resume=resume,
                   progress=False)  # fmt: skip
    return model, result


def test_adafactor_as_in_the_paper(make_model):
    model = make_model("shallow")
    opt = build_optimizer(model.freeze("mtl-p"))
    assert isinstance(opt, Adafactor)
    group = opt.param_groups[0]
    assert (group["lr"], group["scale_parameter"], group["relative_step"], group["warmup_init"]) == (
        1e-3,
        False,
        False,
        False,
    )
    assert [p.shape for p in group["params"]] == [torch.Size([4, 32])]
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([])


def test_resume_gives_the_uninterrupted_parameters(make_model, train_data, accelerator, tmp_path):
    straight, r1 = _run(make_model, train_data, accelerator, tmp_path / "a", 6)
    _, r2 = _run(make_model, train_data, accelerator, tmp_path / "b", 3)
    assert r2.steps == 3 and latest_checkpoint(tmp_path / "b").name == "step-3"
    resumed, r3 = _run(make_model, train_data, accelerator, tmp_path / "b", 6, resume=True)
    assert r3.resumed_from == 3 and r3.steps == 6 and r3.examples == r1.examples == 24
    a, b = dict(straight.named_parameters()), dict(resumed.named_parameters())
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert not torch.equal(a["prompt.keys.0"], make_model("deep").prompt.keys[0])  # it did train
    # The metrics log of the resumed run reads like the uninterrupted one.
    log_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log_b] == [r["loss"] for r in log_a]
    assert {"loss", "grad_norm", "tokens_per_s", "examples_seen", "lr"} <= set(log_a[0])
    assert log_a[0]["loss"] > log_a[-1]["loss"]


def test_checkpoints_are_complete_loadable_and_pruned(make_model, train_data, accelerator, tmp_path):
    model, _ = _run(make_model, train_data, accelerator, tmp_path, 5, prompt="shallow", save_every=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-4", "step-5"]  # every 2 steps and at the end, the 2 newest kept, no temp dirs left
    ckpt = tmp_path / "checkpoints" / "step-5"
    assert json.loads((ckpt / "trainer.json").read_text())["step"] == 5
    assert {f.name for f in ckpt.iterdir()} >= {"model", "optimizer.safetensors", "optimizer.json", "train_step.json",
                                                  "rng-rank0.json", "trainer.json"}  # fmt: skip
    loaded = load_model(ckpt / "model")
    saved = dict(loaded.named_parameters())
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    assert json.loads((ckpt / "train_step.json").read_text())["sampler"]["batch_index"] == 5 % 6
    assert not any(".pkl" in f.name or ".bin" in f.name for f in ckpt.rglob("*"))


def test_frozen_parameters_have_no_optimizer_state(make_model, train_data, accelerator, tmp_path):
    before = {n: p.detach().clone() for n, p in make_model("shallow").named_parameters()}
    model, _ = _run(make_model, train_data, accelerator, tmp_path, 2, method="mtl-p", prompt="shallow")
    after = dict(model.named_parameters())
    changed = [n for n in after if not torch.equal(after[n], before[n])]
    assert changed == ["prompt.weight"]
    state = load_state(tmp_path / "checkpoints" / "step-2", "optimizer")
    assert len(state["state"]) == 1 and len(state["param_groups"][0]["params"]) == 1
    # With the transformer frozen a checkpoint holds only the prompt.
    assert {f.name for f in (tmp_path / "checkpoints" / "step-2" / "model").iterdir()} == {
        "prompt.safetensors", "promptability.json"}  # fmt: skip


def test_gradient_norm_is_clipped_to_one(monkeypatch, accelerator):
    """With plain SGD (lr 1) in place of Adafactor, the update IS the clipped gradient."""
    monkeypatch.setattr(loop, "build_optimizer", lambda params, lr: torch.optim.SGD(params, lr=lr))
    weight = torch.nn.Parameter(torch.zeros(4))

    class Step:
        def __call__(self, model, accelerator):
            model.weight.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5
            return {"loss": 1.0, "tokens": 1}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    model = torch.nn.Module()
    model.weight = weight
    train(model, Step(), accelerator, max_steps=1, lr=1.0, progress=False)
    assert torch.allclose(weight.detach(), torch.tensor([-0.6, -0.8, 0.0, 0.0]))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(make_model, train_data, accelerator, tmp_path):
    model = make_model("shallow")
    inner = build_step("mtl-tp", model, train_data, _config(), accelerator)

    class Exploding:
        calls = 0

        def __call__(self, model, accelerator):
            self.calls += 1
            metrics = inner(model, accelerator)
            if self.calls == 3:
                metrics["loss"] = float("nan")
            return metrics

        state_dict, load_state_dict = inner.state_dict, inner.load_state_dict

    with pytest.raises(NonFiniteLossError, match=r"step 3: loss nan .*checkpoints/step-2"):
        train(model, Exploding(), accelerator, max_steps=6, out_dir=tmp_path, save_every=2, progress=False)
    assert latest_checkpoint(tmp_path).name == "step-2"
    saved = dict(load_model(tmp_path / "checkpoints" / "step-2" / "model").named_parameters())
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())  # the bad step changed nothing
    assert all(p.grad is None for p in model.parameters())


def test_state_files_round_trip_without_pickle(tmp_path):
    state = {"step": 3, "groups": [{"eps": (1e-30, 1e-3), "lr": None}], "by_id": {0: {"v": torch.arange(3.0)}},
             "np": np.int64(7), "flag": True}  # fmt: skip
    save_state(tmp_path, "s", state)
    back = load_state(tmp_path, "s")
    assert back["groups"] == [{"eps": (1e-30, 1e-3), "lr": None}] and back["np"] == 7 and back["flag"] is True
    assert list(back["by_id"]) == [0] and torch.equal(back["by_id"][0]["v"], torch.arange(3.0))
    with pytest.raises(TypeError, match="no pickle"):
        save_state(tmp_path, "bad", {"x": object()})


def test_rng_state_round_trips(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_state(tmp_path, "rng", rng_state())
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    set_rng_state(load_state(tmp_path, "rng"))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_bf16_autocast_keeps_fp32_parameters(make_model, train_data):
    from promptability.train.loop import make_accelerator

    losses = {}
    try:
        for precision in ("fp32", "bf16"):
            accelerator = make_accelerator(precision, cpu=True)
            model = make_model("deep")
            step = build_step("mtl-tp", model, train_data, _config(prompt="deep"), accelerator)
            losses[precision] = train(model, step, accelerator, max_steps=2, progress=False).last["loss"]
            assert all(p.dtype == torch.float32 for p in model.parameters())
            assert accelerator.mixed_precision == ("bf16" if precision == "bf16" else "no")
    finally:
        make_accelerator("fp32", cpu=True)  # the other tests' shared accelerator is fp32
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
