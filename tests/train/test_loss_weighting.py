"""Loss weighting ("example" | "token") against naive per-example references, in every step that trains.

Each reference is the textbook formula on whole examples: Hugging Face's mean token loss of one example at a
time (example weighting: their plain mean; token weighting: weighted by target length). The steps must give
the same loss and gradients however the batch is cut into micro-batches.
"""

from __future__ import annotations

import pytest
import torch
from tests.train.test_meta import Episodes

from promptability.data.batching import TRAIN_COLUMNS, collate
from promptability.data.tokenize import tokenize_records
from promptability.train import losses
from promptability.train.config import TrainConfig
from promptability.train.methods import build_step
from promptability.train.steps.fixed_batch import FixedBatchStep
from promptability.train.steps.meta import MetaStep
from promptability.train.steps.mtl import MTLStep
from promptability.train.steps.multi_prompt import tune_prompts_together

# Targets from one token to a dozen: token weighting gives the long ones most of the loss.
PAIRS = [
    ("the cat sat on the mat", "yes"),
    ("a dog ran in the park with a red ball", "the dog ran in the park with a red ball and the cat sat"),
    ("is this review positive ?", "no"),
    ("question : where is the book ?", "the book is on the table"),
    ("premise : anna is tall . hypothesis : anna is short", "no"),
    ("the sun was warm", "the sun was warm and the dog sat in the park"),
    ("the cat", "yes"),
    ("where is the mat ?", "on the table"),
]


@pytest.fixture
def data(tiny_tokenizer):
    records = [{"task": f"t{i % 2}", "source": s, "target": y} for i, (s, y) in enumerate(PAIRS)]
    return tokenize_records(records, tiny_tokenizer, use_cache=False, progress=False).dataset


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def naive_loss(model, rows: list[dict], weighting: str) -> torch.Tensor:
    """One example at a time through the model's own (Hugging Face) mean token loss."""
    per_example = [model(**collate([r], pad_id=0)).loss for r in rows]
    if weighting == "example":
        return torch.stack(per_example).mean()
    lengths = torch.tensor([float(len(r["labels"])) for r in rows])
    return (torch.stack(per_example) * lengths).sum() / lengths.sum()


def test_weights_are_computed_in_one_place():
    summed, lengths = torch.tensor([6.0, 1.0, 0.0]), torch.tensor([3, 1, 0])
    assert losses.weigh_rows(summed, lengths, "example").tolist() == [2.0, 1.0, 0.0]
    assert losses.weigh_rows(summed, lengths, "token").tolist() == [6.0, 1.0, 0.0]
    assert losses.loss_units([3, 1, 0], "example") == 3 and losses.loss_units([3, 1, 0], "token") == 4
    assert losses.loss_units([], "example") == 0
    with pytest.raises(ValueError, match="loss_weighting must be one of example, token, got 'rows'"):
        losses.loss_units([1], "rows")


@pytest.mark.parametrize("weighting", ["example", "token"])
def test_mtl_loss_is_the_naive_weighted_mean_for_any_micro_batch(make_model, data, accelerator, weighting):
    rows = [{k: r[k] for k in TRAIN_COLUMNS} for r in data]
    reference = make_model("shallow")
    reference.freeze("mtl-tp")
    want = naive_loss(reference, rows, weighting)
    want.backward()
    want_grads = grads(reference)
    for micro in (1, 2, 4, 8):
        model = make_model("shallow")
        model.freeze("mtl-tp")
        step = MTLStep(data, pad_id=0, batch_size=8, micro_batch_size=micro, loss_weighting=weighting,
                       composition="iid")  # fmt: skip
        metrics = step(model, accelerator)
        assert metrics["examples"] == 8
        assert metrics["loss"] == pytest.approx(float(want.detach()), abs=1e-6), micro
        got = grads(model)
        assert got.keys() == want_grads.keys()
        for name, g in want_grads.items():
            torch.testing.assert_close(got[name], g, atol=1e-6, rtol=1e-5, msg=f"micro={micro} {name}")
    with torch.no_grad():
        other = naive_loss(reference, rows, "token" if weighting == "example" else "example")
    assert abs(float(other) - float(want.detach())) > 0.05  # the two weightings are different losses here


def test_the_config_chooses_the_weighting_and_composition(make_model, data, accelerator):
    model = make_model("shallow")
    config = TrainConfig(method="mtl-tp", prompt="shallow", batch_size=8, micro_batch_size=2).validate()
    step = build_step("mtl-tp", model, data, config, accelerator)
    assert (step.loss_weighting, step.sampler.composition, step.sampler.micro_batch_size) == ("example", "iid", 2)
    config.loss_weighting, config.data.step_composition = "token", "length_bands"
    step = build_step("mtl-tp", model, data, config, accelerator)
    assert (step.loss_weighting, step.sampler.composition) == ("token", "length_bands")
    config.method, config.meta.episodes = "fomaml", "sample"  # the tiny data holds no full episode of a pass
    assert build_step("fomaml", model, data, config, accelerator).loss_weighting == "token"
    config.loss_weighting = "example"
    assert build_step("fomaml", model, data, config, accelerator).loss_weighting == "example"


@pytest.mark.parametrize("weighting", ["example", "token"])
def test_fixed_batch_step_weighs_like_the_naive_loss(make_model, data, accelerator, weighting):
    rows = [{k: r[k] for k in TRAIN_COLUMNS} for r in data.select(range(4))]
    reference = make_model("shallow")
    reference.freeze("prompt-only")
    want = naive_loss(reference, rows, weighting)
    want.backward()
    model = make_model("shallow")
    model.freeze("prompt-only")
    metrics = FixedBatchStep(collate(rows, pad_id=0), loss_weighting=weighting)(model, accelerator)
    assert metrics["loss"] == pytest.approx(float(want.detach()), abs=1e-6)
    torch.testing.assert_close(model.prompt.weight.grad, reference.prompt.weight.grad, atol=1e-6, rtol=1e-5)


def test_prompts_tuned_together_weigh_like_alone(make_model, data, accelerator):
    from promptability.train.loop import train

    model = make_model("shallow")
    model.freeze("prompt-only")
    start = {k: v.clone() for k, v in model.prompt.state_dict().items()}
    rows = {t: [{k: r[k] for k in TRAIN_COLUMNS} for r in data if r["task"] == t] for t in ("t0", "t1")}
    together = tune_prompts_together(model, rows, start, epochs=3, pad_id=0, lr=1e-2, loss_weighting="example")
    for t, group in rows.items():
        model.prompt.load_state_dict(start)
        step = FixedBatchStep(collate(group, pad_id=0), loss_weighting="example")
        train(model, step, accelerator, max_steps=3, lr=1e-2, seed=0, progress=False)
        assert together[t]["first_loss"] == pytest.approx(step.first_loss, rel=1e-5)
        torch.testing.assert_close(together[t]["state"]["weight"], model.prompt.weight.detach(), atol=1e-6, rtol=1e-5)


def test_meta_query_gradient_weighs_examples(make_model, data):
    """FOMAML with no inner step: the meta-gradient is the mean over tasks of each query loss's gradient."""
    collated = [collate([{k: r[k] for k in TRAIN_COLUMNS} for r in data.select(range(i, i + 4))], 0) for i in (0, 4)]
    reference = make_model("shallow")
    for i in (0, 4):
        rows = [{k: r[k] for k in TRAIN_COLUMNS} for r in data.select(range(i, i + 4))]
        (naive_loss(reference, rows, "example") / 2).backward()
    want = grads(reference)
    model = make_model("shallow")
    step = MetaStep("fomaml", Episodes(([], q) for q in collated), meta_batch_size=2, inner_steps=0,
                    loss_weighting="example")  # fmt: skip
    step(model, None)
    got = grads(model)
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, atol=1e-6, rtol=1e-5, msg=name)


def test_meta_inner_steps_weigh_as_asked(make_model, data):
    batches = [collate([{k: r[k] for k in TRAIN_COLUMNS} for r in data.select(range(i, i + 4))], 0) for i in (0, 4)]
    episodes = Episodes([([batches[0], batches[1]], batches[1]), ([batches[1], batches[0]], batches[0])])
    first = {}
    for weighting in ("example", "token"):
        step = MetaStep("reptile", episodes, meta_batch_size=2, inner_steps=2, inner_lr=0.05,
                        loss_weighting=weighting)  # fmt: skip
        first[weighting] = step(make_model("shallow"), None)["support_loss_first"]
    assert abs(first["example"] - first["token"]) > 0.05


def test_resume_refuses_another_weighting_or_composition(tmp_path):
    import json
    from dataclasses import asdict

    from promptability.train.config import ConfigError
    from promptability.train.pretrain import _check_resumable

    config = TrainConfig(method="mtl-tp").validate()
    (tmp_path / "train_config.json").write_text(json.dumps(asdict(config)))
    _check_resumable(tmp_path, config, resume=True)
    config.loss_weighting = "token"
    with pytest.raises(ConfigError, match="differ from .*train_config.json: loss_weighting"):
        _check_resumable(tmp_path, config, resume=True)
    config.loss_weighting, config.data.step_composition = "example", "length_bands"
    with pytest.raises(ConfigError, match="differ from .*train_config.json: data"):
        _check_resumable(tmp_path, config, resume=True)
