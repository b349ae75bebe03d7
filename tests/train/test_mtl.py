"""Multi-task pretraining: loss normalisation, presets, one epoch, data selection, the pretrain driver."""

from __future__ import annotations

import json

import pytest
import torch

from promptability.data.batching import collate
from promptability.data.readers import read_split
from promptability.data.registry import heldout_templates
from promptability.model.loading import load_model
from promptability.train.config import ConfigError, DataConfig, MetaConfig, TrainConfig
from promptability.train.methods import build_step
from promptability.train.pretrain import pretrain, pretraining_tasks
from promptability.train.steps.mtl import MTLStep

from conftest import make_records


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_loss_is_the_global_token_mean_however_the_batch_is_split(make_model, train_data, accelerator):
    """One optimizer step over 8 examples: micro-batches of 8, 3 or 1 give the same loss and gradients."""
    data = train_data.select(range(8))
    results = {}
    for micro in (8, 3, 1):
        model = make_model("shallow")
        model.freeze("mtl-tp")
        step = MTLStep(data, pad_id=0, batch_size=8, micro_batch_size=micro)
        metrics = step(model, accelerator)
        results[micro] = (metrics, _grads(model))
    full = collate(data.select_columns(["input_ids", "labels"])[:], pad_id=0)
    with torch.no_grad():
        reference = make_model("shallow")(**full)  # Hugging Face's mean over all target tokens
    assert results[8][0]["loss"] == pytest.approx(float(reference.loss), abs=1e-6)
    assert results[8][0]["target_tokens"] == int(full["decoder_attention_mask"].sum())
    assert results[8][0]["examples"] == 8
    for micro in (3, 1):
        assert results[micro][0]["loss"] == pytest.approx(results[8][0]["loss"], abs=1e-6)
        for name, grad in results[8][1].items():
            assert torch.allclose(results[micro][1][name], grad, atol=1e-6), name


@pytest.mark.parametrize(
    ("method", "prompt", "trained"),
    [
        ("mtl-t", "none", {"transformer"}),
        ("mtl-p", "deep", {"prompt"}),
        ("mtl-tp", "shallow", {"transformer", "prompt"}),
    ],
)
def test_presets_choose_what_trains(make_model, train_data, method, prompt, trained):
    model = make_model(prompt)
    step = build_step(method, model, train_data, TrainConfig(method=method, prompt=prompt, batch_size=4).validate())
    assert isinstance(step, MTLStep) and step.steps_per_epoch == 6  # 24 examples, 4 per step
    groups = {g for g, params in model.parameter_groups().items() if params and all(p.requires_grad for p in params)}
    assert groups == trained
    assert all(not p.requires_grad for g, ps in model.parameter_groups().items() if g not in trained for p in ps)


def test_meta_methods_plug_into_the_registry(make_model, train_data):
    from promptability.train.steps.meta import MetaStep

    model = make_model("shallow")
    config = TrainConfig(method="fomaml", meta=MetaConfig(meta_batch_size=2, inner_steps=1, task_batch_size=2))
    step = build_step("reptile", model, train_data, config.validate())
    assert isinstance(step, MetaStep) and step.method == "reptile" and step.steps_per_epoch == 3  # 24 / (2*2*2)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="unknown method 'maml'"):
        build_step("maml", model, train_data, config)


def test_config_combinations_are_checked():
    assert TrainConfig(method="mtl-t").validate().prompt == "none"
    assert TrainConfig(method="mtl-p").validate().prompt == "shallow"
    with pytest.raises(ConfigError, match="mtl-t trains the transformer without a prompt"):
        TrainConfig(method="mtl-t", prompt="deep").validate()
    with pytest.raises(ConfigError, match="reptile trains a soft prompt"):
        TrainConfig(method="reptile", prompt="none").validate()


def _write_data(root, records):
    root.mkdir(parents=True, exist_ok=True)
    by_task = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, recs in by_task.items():
        (root / f"{task}.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


def test_pretrain_writes_a_model_dir_and_never_trains_on_heldout_templates(make_model, accelerator, tmp_path):
    heldout = sorted(heldout_templates())[0]
    records = make_records(20, tasks=2) + [dict(r, task=heldout) for r in make_records(6)]
    data = _write_data(tmp_path / "data", records)
    config = TrainConfig(method="mtl-tp", prompt="shallow", prompt_length=4, model="tiny-test", batch_size=8,
                         micro_batch_size=4, save_every=2)  # fmt: skip
    config.data.path = str(data)
    out = tmp_path / "run"
    model = make_model("shallow")
    result = pretrain(config, out, progress=False, accelerator=accelerator, model=model)
    info = json.loads((out / "train.json").read_text())
    assert info["data"]["per_task"] == {"task_0": 10, "task_1": 10}  # the held-out template was left out
    assert result.steps == info["steps"] == 3 == info["steps_per_epoch"]  # one epoch of 20 examples, 8 per step
    assert info["examples_seen"] == 20  # each example once: the last, short batch is kept
    assert (info["method"], info["prompt"], info["prompt_length"], info["base_model"]) == (
        "mtl-tp",
        "shallow",
        4,
        "tiny-test",
    )
    assert info["wall_time_s"] > 0 and info["final_loss"] == pytest.approx(result.last["loss"])
    loaded = load_model(out)
    assert loaded.prompt_kind == "shallow"
    saved = dict(loaded.named_parameters())
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    assert json.loads((out / "promptability.json").read_text())["method"] == "mtl-tp"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        pretrain(config, out, progress=False, accelerator=accelerator, model=make_model("shallow"))
    config.batch_size = 4
    with pytest.raises(ConfigError, match="differ from .*train_config.json: batch_size"):
        pretrain(config, out, resume=True, progress=False, accelerator=accelerator, model=make_model("shallow"))


def test_meta_pretraining_runs_through_the_loop(make_model, accelerator, tmp_path):
    data = _write_data(tmp_path / "data", make_records(24, tasks=3))
    config = TrainConfig(method="fomaml", prompt="shallow", prompt_length=4, max_steps=2, save_every=1,
                         meta=MetaConfig(meta_batch_size=2, inner_steps=1, task_batch_size=2))  # fmt: skip
    config.data.path = str(data)
    model = make_model("shallow")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = pretrain(config, tmp_path / "run", progress=False, accelerator=accelerator, model=model)
    assert result.steps == 2 and result.last["tasks"] == 2
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-2" / "train_step.json").read_text())
    assert state["episodes_done"] == 4


def test_suite_layout_and_task_selection(tmp_path):
    suite = tmp_path / "suite"
    templates = {"suite_a_x": "train", "suite_a_y": "train", "suite_h_z": "heldout"}
    meta = {"format": "promptability-suite/1", "templates": {
        t: {"role": role, "group": "G", "num_choices": 2, "cluster": "c"} for t, role in templates.items()}}  # fmt: skip
    (suite / "train").mkdir(parents=True)
    (suite / "suite.json").write_text(json.dumps(meta))
    for t in templates:
        (suite / "train" / f"{t}.jsonl").write_text(
            "".join(json.dumps(dict(r, task=t)) + "\n" for r in make_records(3))
        )
    config = TrainConfig(method="mtl-t")
    config.data.path = str(suite)
    assert pretraining_tasks(config.data) == ["suite_a_x", "suite_a_y"]
    records = read_split(suite, "train", ["suite_a_y", "suite_h_z"])
    assert sorted({r["task"] for r in records}) == ["suite_a_y", "suite_h_z"] and len(records) == 6
    config.data.tasks = "t0-train"
    assert len(pretraining_tasks(config.data)) == 313
    with pytest.raises(FileNotFoundError, match="no 'validation' split folder"):
        read_split(suite, "validation", ["suite_a_x"])


@pytest.mark.parametrize(("cap_per", "expected"), [("template", (8, 8, 8)), ("dataset", (4, 4, 8))])
def test_the_mixing_cap_per_template_or_per_dataset(tiny_tokenizer, tmp_path, cap_per, expected):
    from promptability.train.pretrain import load_pretraining_data

    # Two templates of one P3 dataset (adversarial_qa/dbert) and a template of its own.
    names = ["adversarial_qa_dbert_based_on", "adversarial_qa_dbert_tell_what_it_is", "mine"]
    records = [dict(r, task=names[i % 3]) for i, r in enumerate(make_records(30, tasks=1))]
    data = DataConfig(path=str(_write_data(tmp_path / "data", records)), cap=8, cap_per=cap_per)
    config = TrainConfig(method="mtl-t", data=data)
    _, info = load_pretraining_data(config.validate(), tiny_tokenizer)
    assert info["per_task"] == dict(zip(names, expected)) and info["cap_per"] == cap_per
    assert info["examples_before_cap"] == 30
    config.data.cap_per = "task"
    with pytest.raises(ConfigError, match="data.cap_per must be one of template, dataset, got 'task'"):
        config.validate()
