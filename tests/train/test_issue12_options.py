"""The options that choose between the reference's recipe and ours: validation, defaults, and that they reach
the train step and few-shot tuning."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from promptability import load_model
from promptability.train.config import ConfigError, FewShotConfig, MetaConfig, TrainConfig, apply_overrides
from promptability.train.fewshot import _settings, load_for_fewshot
from promptability.train.steps.meta import build_meta_step


def test_defaults_are_the_reference_and_bad_values_name_the_field():
    config = TrainConfig(method="reptile", prompt="deep").validate()
    assert (config.deep_init, config.meta.episodes, config.meta.reptile_transformer_step) == (
        "normal", "pass", "adafactor")  # fmt: skip
    assert FewShotConfig().validate().deep_init == "normal"
    for key, value, message in [
        ("deep_init", "zeros", "deep_init must be one of normal, tokens"),
        ("meta.episodes", "shuffle", "meta.episodes must be one of pass, sample"),
        ("meta.reptile_transformer_step", "adam", "meta.reptile_transformer_step must be one of adafactor, sgd"),
        ("meta.task_sampling", "uniform", "needs meta.episodes='sample'"),
        ("meta.task_sampling", "zipf", "meta.task_sampling must be one of proportional, uniform"),
    ]:
        with pytest.raises(ConfigError, match=message):
            apply_overrides(TrainConfig(method="reptile"), {key: value}).validate()
    apply_overrides(TrainConfig(method="reptile"), {"meta.task_sampling": "uniform", "meta.episodes": "sample"})
    with pytest.raises(ConfigError, match="deep_init must be one of"):
        FewShotConfig(deep_init="zeros").validate()


def test_build_meta_step_passes_the_options_and_counts_a_pass(make_model):
    rows = {"task": ["a"] * 50 + ["b"] * 30, "input_ids": [[5, 1]] * 80, "labels": [[6, 1]] * 80}
    data = Dataset.from_dict(rows)
    model = make_model("shallow")
    meta = MetaConfig(meta_batch_size=2, inner_steps=1, task_batch_size=4)  # 8 examples an episode
    step = build_meta_step("reptile", model, data, TrainConfig(method="reptile", meta=meta).validate(), None)
    assert step.task_batcher.order == "pass" and step.task_batcher.episodes_per_pass == 6 + 3
    assert step.transformer_step == "adafactor" and step.steps_per_epoch == 5  # ceil(9 episodes / 2)
    meta = MetaConfig(meta_batch_size=2, inner_steps=1, task_batch_size=4, episodes="sample",
                      reptile_transformer_step="sgd")  # fmt: skip
    step = build_meta_step("reptile", model, data, TrainConfig(method="reptile", meta=meta).validate(), None)
    assert step.task_batcher.order == "sample" and step.transformer_step == "sgd"
    assert step.steps_per_epoch == 5  # ceil(80 examples / 8 per episode / 2 episodes per step)


@pytest.mark.parametrize("init", ["normal", "tokens"])
def test_fewshot_fresh_deep_prompt_takes_the_configs_init_and_records_it(make_model, tmp_path, init):
    make_model("none").save(tmp_path / "mtl-t")
    config = FewShotConfig(prompt="deep", prompt_length=3, seeds=[4], deep_init=init).validate()
    model, fresh = load_for_fewshot(tmp_path / "mtl-t", config)
    assert fresh and model.deep_init == init
    reference = load_model(tmp_path / "mtl-t", prompt="deep", prompt_length=3, seed=4, deep_init=init)
    assert all(torch.equal(a, b) for a, b in zip(model.prompt_parameters(), reference.prompt_parameters()))
    assert _settings(tmp_path / "mtl-t", tmp_path, config, model, fresh, None, "random")["deep_init"] == init
    model.save(tmp_path / "tuned", prompt_only=True)
    assert json.loads((tmp_path / "tuned" / "promptability.json").read_text())["deep_init"] == init
