"""Every shipped YAML config loads; the paper's hyperparameters are in them; the CLI checks its flags."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from promptability.cli import main
from promptability.train.config import ConfigError, FewShotConfig, TrainConfig, apply_overrides, load_config

from conftest import make_records

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER = sorted(p for p in CONFIGS.glob("t5-*.yaml"))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    assert path.stem.endswith(config.prompt) or config.prompt == "none" or path.name == "demo-tiny.yaml"
    assert config.lr == 1e-3 and isinstance(config.lr, float) and config.clip_norm == 1.0 and config.epochs == 1


def test_every_config_resolves_to_its_frozen_settings():
    """The rows name a base per model size; resolved, each equals the full file it replaced, field for field."""
    golden = json.loads((Path(__file__).parent / "configs_resolved.json").read_text())
    resolved = {p.name: asdict(load_config(p)) for p in sorted(CONFIGS.glob("*.yaml"))}
    assert json.dumps(resolved, indent=1, sort_keys=True) == json.dumps(golden, indent=1, sort_keys=True)


def test_base_chains_merge_sections_and_report_cycles_and_missing_files(tmp_path):
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "root.yaml").write_text("lr: 2e-3\nseed: 5\ndata:\n  cap: 10\n  split: dev\n")
    (tmp_path / "bases" / "mid.yaml").write_text("base: root.yaml\nseed: 6\ndata:\n  max_source_len: 64\n")
    row = tmp_path / "row.yaml"
    row.write_text("base: bases/mid.yaml\nmethod: mtl-p\ndata:\n  cap: 20\n")
    c = load_config(row)
    assert (c.method, c.prompt, c.lr, c.seed) == ("mtl-p", "shallow", 2e-3, 6)
    assert (c.data.cap, c.data.split, c.data.max_source_len, c.data.max_target_len) == (20, "dev", 64, 192)
    (tmp_path / "bases" / "root.yaml").write_text("base: ../row.yaml\n")
    cycle = r"root.yaml: base files form a cycle: .*row.yaml -> .*mid.yaml -> .*root.yaml -> .*row.yaml"
    with pytest.raises(ConfigError, match=cycle):
        load_config(row)
    row.write_text("base: bases/absent.yaml\n")
    with pytest.raises(ConfigError, match=r"row.yaml: base file .*absent.yaml does not exist"):
        load_config(row)
    (tmp_path / "bases" / "root.yaml").write_text("seed: many\n")
    row.write_text("base: bases/root.yaml\n")
    with pytest.raises(ConfigError, match=r"root.yaml.seed: expected an integer, got 'many'"):
        load_config(row)


def test_paper_configs_cover_table_1_with_the_paper_hyperparameters():
    rows = {(load_config(p).model, load_config(p).method, load_config(p).prompt) for p in PAPER}
    methods = {("mtl-t", "none")} | {
        (m, p) for m in ("mtl-p", "mtl-tp", "fomaml", "reptile") for p in ("shallow", "deep")
    }
    assert rows == {
        (model, m, p) for model in ("google/t5-large-lm-adapt", "google/t5-xl-lm-adapt") for m, p in methods
    }
    for path in PAPER:
        c = load_config(path)
        assert (c.prompt_length, c.data.max_source_len, c.data.max_target_len, c.data.cap) == (20, 768, 192, 500_000)
        assert c.data.tasks == "t0-train" and c.precision == "fp32" and c.data.cap_per == "template"  # as the reference
        # As the reference code ran: i.i.d. steps, length-sorted inside; each example weighs the same.
        assert (c.data.step_composition, c.loss_weighting) == ("iid", "example")
        if c.method.startswith("mtl"):
            assert c.batch_size == 4096 and 4096 % c.micro_batch_size == 0
        else:
            m = c.meta
            assert (m.meta_batch_size, m.inner_steps, m.task_batch_size, m.inner_lr) == (128, 7, 16, 1e-3)


def test_yaml_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: mtl-tp\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key\(s\) 'learning_rate'"):
        load_config(bad)
    bad.write_text("method: mtl-tp\ndata:\n  cap: lots\n")
    with pytest.raises(ConfigError, match=r"data.cap: expected an integer, got 'lots'"):
        load_config(bad)
    bad.write_text("method: mtl-t\nprompt: deep\n")
    with pytest.raises(ConfigError, match="bad.yaml: method mtl-t trains the transformer without a prompt"):
        load_config(bad)
    config = apply_overrides(TrainConfig(), {"data.path": "x", "lr": "2e-3", "max_steps": None})
    assert (config.data.path, config.lr, config.max_steps) == ("x", 2e-3, None)
    bad.write_text("method: mtl-tp\nloss_weighting: tokens\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: loss_weighting must be one of example, token, got 'tokens'"):
        load_config(bad)
    bad.write_text("method: mtl-tp\ndata:\n  step_composition: bands\n")
    with pytest.raises(ConfigError, match=r"data.step_composition must be one of iid, length_bands, got 'bands'"):
        load_config(bad)
    old = apply_overrides(TrainConfig(), {"loss_weighting": "token", "data.step_composition": "length_bands"})
    assert (old.validate().loss_weighting, old.data.step_composition) == ("token", "length_bands")
    with pytest.raises(ConfigError, match="loss_weighting must be one of example, token, got 'row'"):
        FewShotConfig(loss_weighting="row").validate()
    assert FewShotConfig().loss_weighting == "token"  # the reference tuned on one batch with a token mean


def test_cli_help_and_invalid_combinations(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the repository
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert all(m in text for m in ("mtl-t", "mtl-p", "mtl-tp", "fomaml", "reptile", "--resume", "--micro-batch-size"))
    assert main(["pretrain", "--method", "mtl-t", "--prompt", "shallow", "--out", "x"]) == 2
    assert "mtl-t trains the transformer without a prompt: use --prompt none" in capsys.readouterr().err
    assert main(["pretrain", "--method", "mtl-p", "--prompt", "none", "--out", "x"]) == 2
    assert "mtl-p trains a soft prompt" in capsys.readouterr().err
    assert main(["pretrain", "--out", "x"]) == 2
    assert "give --method" in capsys.readouterr().err
    assert main(["pretrain", "--method", "mtl-tp", "--data", "/no/such/dir", "--out", "x"]) == 2
    assert "/no/such/dir does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # the data is checked before a model is built or a file written
    with pytest.raises(SystemExit):
        main(["fewshot", "--help"])
    assert "--shots" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_pretrain_and_resume_on_a_saved_model(make_model, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    base = make_model("none").save(tmp_path / "base")
    (data / "bad.train.jsonl").write_text(json.dumps(make_records(1, prefix="other")[0]) + "\n")
    assert (
        main(["pretrain", "--method", "mtl-t", "--model", str(base), "--data", str(data), "--out", str(tmp_path / "x")])
        == 2
    )
    assert "bad.train.jsonl, row 0: field 'task' is 'other_0' but the file name says 'bad'" in capsys.readouterr().err
    (data / "bad.train.jsonl").unlink()
    (data / "t_0.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_records(12, tasks=1, prefix="t")))
    args = ["pretrain", "--method", "mtl-p", "--prompt", "deep", "--prompt-length", "2", "--model", str(base),
            "--data", str(data), "--out", str(tmp_path / "run"), "--batch-size", "4", "--max-steps", "2",
            "--save-every", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "mtl-p (deep prompt): 2 steps, 8 examples" in capsys.readouterr().out
    args[args.index("--max-steps") + 1] = "3"
    assert main(args + ["--resume"]) == 0
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert (info["steps"], info["examples_seen"], info["resumed_from_step"]) == (3, 12, 2)
    # A run saved before later options existed resumes with the behaviour it had, or says which setting to give.
    saved = tmp_path / "run" / "train_config.json"
    old = json.loads(saved.read_text())
    for section, name in [(None, "loss_weighting"), (None, "deep_init"), ("data", "step_composition"),
                          ("data", "cap_per"), ("meta", "episodes"), ("meta", "reptile_transformer_step")]:  # fmt: skip
        (old[section] if section else old).pop(name)
    saved.write_text(json.dumps(old))
    args[args.index("--max-steps") + 1] = "4"
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "loss_weighting: the run has 'token', now 'example'" in err and "deep_init: the run has 'tokens'" in err
    legacy = ["--set", "loss_weighting=token", "--set", "deep_init=tokens", "--set", "data.step_composition=length_bands",
              "--set", "meta.episodes=sample", "--set", "meta.reptile_transformer_step=sgd"]  # fmt: skip
    assert main(args + legacy + ["--resume"]) == 0
    assert json.loads((tmp_path / "run" / "train.json").read_text())["steps"] == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"meta.inner_steps": "-1"}, r"meta.inner_steps must be >= 0, got -1"),
        ({"batch_size": "0"}, r"batch_size must be >= 1, got 0"),
        ({"lr": "0"}, r"lr must be > 0, got 0.0"),
        ({"meta.task_sampling": "even"}, r"meta.task_sampling must be one of proportional, uniform, got 'even'"),
    ],
)
def test_a_value_out_of_range_is_named_with_what_it_must_be(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainConfig(method="fomaml"), overrides).validate()


def test_fewshot_settings_out_of_range_are_named():
    with pytest.raises(ConfigError, match=r"shots must be >= 1, got 0"):
        FewShotConfig(shots=0).validate()
    with pytest.raises(ConfigError, match=r"score must be one of mean, sum, got 'max'"):
        FewShotConfig(score="max").validate()
