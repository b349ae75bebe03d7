"""`promptability plan`: the paper configs resolve offline, and planned counts are what pretrain consumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptability.cli import main
from promptability.train.config import TrainConfig, load_config
from promptability.train.plan import make_plan
from promptability.train.pretrain import pretrain

from conftest import make_records

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))


def _t5_v1_1_parameters(d_model: int, d_ff: int, layers: int, heads: int, d_kv: int = 64, vocab: int = 32128) -> dict:
    """T5 v1.1's parameter count from its equations: gated-GELU FFN, untied LM head, relative bias in layer 0."""
    attention, ffn, norm = 4 * d_model * heads * d_kv, 3 * d_model * d_ff, d_model
    bias = 32 * heads  # relative position buckets, first layer of each stack
    encoder = layers * (attention + ffn)
    decoder = layers * (2 * attention + ffn) + vocab * d_model  # the LM head is a matmul of the decoder side
    total = encoder + decoder + vocab * d_model + (2 * layers + 1) * norm + (3 * layers + 1) * norm + 2 * bias
    return {"total": total, "encoder_matmul": encoder, "decoder_matmul": decoder}


@pytest.mark.parametrize("path", [c for c in CONFIGS if c.name.startswith("t5-")], ids=lambda p: p.stem)
def test_every_paper_config_plans_offline_with_the_models_true_size(path):
    plan = make_plan(load_config(path), memory=False)  # memory: test_plan_memory.py
    size = dict(d_model=1024, d_ff=2816, heads=16) if "large" in path.name else dict(d_model=2048, d_ff=5120, heads=32)
    want = _t5_v1_1_parameters(layers=24, **size)
    params = plan["parameters"]
    assert params["encoder_matmul"] == want["encoder_matmul"] and params["decoder_matmul"] == want["decoder_matmul"]
    assert params["total"] == want["total"] + params["prompt"]
    frozen = plan["settings"]["method"] == "mtl-p"
    assert params["trained"] == (params["prompt"] if frozen else params["total"])
    assert "data" not in plan


def test_counts_equal_what_pretrain_consumes(make_model, tmp_path):
    records = make_records(n=40, tasks=4)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    model_dir = tmp_path / "model"
    make_model().save(model_dir)
    config = TrainConfig(method="mtl-tp", prompt="shallow", prompt_length=4, model=str(model_dir), batch_size=6,
                         micro_batch_size=3, save_every=0)  # fmt: skip
    config.data.path, config.data.cap = str(data), 7  # 4 templates of 10 examples, capped at 7
    plan = make_plan(config)
    d = plan["data"]
    assert (
        d["examples_before_cap"] == 40
        and d["examples"] == 28
        and d["per_template"] == {f"task_{i}": 7 for i in range(4)}
    )
    assert d["steps_per_epoch"] == 5 and d["steps"] == 5  # 28 examples in steps of 6

    pretrain(config, tmp_path / "run", progress=False)
    done = json.loads((tmp_path / "run" / "train.json").read_text())
    assert done["data"]["per_task"] == d["per_template"] and done["data"]["examples"] == d["examples"]
    assert done["steps_per_epoch"] == d["steps_per_epoch"] and done["steps"] == d["steps"]
    # one epoch holds every example once, plus the last step's top-up: every token of the mixture was read
    assert done["tokens_seen"] >= d["source_tokens"] + d["target_tokens"]
    c = plan["compute"]
    assert c["epochs_trained"] == pytest.approx(30 / 28)
    p = plan["parameters"]
    source = d["source_tokens"] + 4 * 28  # the shallow prompt's positions run through the encoder
    per_epoch = p["encoder_matmul"] * source + p["decoder_matmul"] * d["target_tokens"]
    assert c["train_flops"] == pytest.approx(6 * per_epoch * 30 / 28)
    assert c["gpu_hours"] == pytest.approx(c["train_flops"] / (19.5e12 * 0.35) / 3600)


def test_real_p3_sample_counts_equal_what_pretrain_consumes(make_model, tmp_path, p3_samples):
    model_dir = tmp_path / "model"
    make_model().save(model_dir)
    tasks = ["adversarial_qa_dbert_based_on", "openbookqa_main_choices"]
    config = TrainConfig(method="mtl-t", model=str(model_dir), batch_size=16, micro_batch_size=16, save_every=0)
    config.data.path, config.data.tasks, config.data.cap = str(p3_samples), tasks, 30
    config.data.max_source_len = 64  # so that some sources are truncated
    plan = make_plan(config)
    d = plan["data"]
    assert set(d["per_template"]) == set(tasks) and d["examples"] == sum(d["per_template"].values())
    assert 0 < d["sources_truncated"] < 1
    pretrain(config, tmp_path / "run", progress=False)
    done = json.loads((tmp_path / "run" / "train.json").read_text())
    assert (
        done["data"]["per_task"] == d["per_template"]
        and done["data"]["examples_before_cap"] == d["examples_before_cap"]
    )
    assert done["steps"] == d["steps"] == d["steps_per_epoch"]


def test_cli_plan_prints_text_and_json(capsys):
    path = next(c for c in CONFIGS if c.name == "t5-large-fomaml-deep.yaml")
    assert main(["plan", str(path), "--set", "meta.inner_steps=3"]) == 0
    text = capsys.readouterr().out
    assert "google/t5-large-lm-adapt" in text and "3 inner steps" in text and "give --data" in text
    assert main(["plan", str(path), "--json", "--gpus", "4"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["settings"]["meta"]["inner_steps"] == 7 and plan["settings"]["method"] == "fomaml"
    assert plan["memory"]["gpus"] == 4 and plan["memory"]["fsdp"] is None  # meta-learning: DDP only
    assert "fsdp     not available for fomaml" in text and "ddp      " in text
    assert main(["plan", str(path), "--data", "/nonexistent/p3"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_demo_config_plans_with_the_tiny_models_own_counts():
    from promptability.model import load_model

    plan = make_plan(load_config(next(c for c in CONFIGS if c.name == "demo-tiny.yaml")))
    model = load_model("tiny", prompt="shallow", prompt_length=20)
    assert plan["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert plan["parameters"]["prompt"] == 20 * model.transformer.config.d_model
