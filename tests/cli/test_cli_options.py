"""The CLI's shared option types and --set: bad numbers stop argparse; --set reaches every config field."""

from __future__ import annotations

import argparse

import pytest

from promptability.cli import build_parser, main
from promptability.cli.common import learning_rate, non_negative_int, positive_int, probability
from promptability.cli.train import build_config
from promptability.train.config import ConfigError, FewShotConfig, TrainConfig, apply_overrides, setting_names


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["pretrain", "--out", "x", "--batch-size", "-1"],
            "argument --batch-size: must be a positive integer, got '-1",
        ),
        (["pretrain", "--out", "x", "--batch-size", "0"], "argument --batch-size: must be a positive integer, got '0'"),
        (["pretrain", "--out", "x", "--max-steps", "2.5"], "argument --max-steps: must be a positive integer"),
        (["pretrain", "--out", "x", "--lr", "1e3"], "argument --lr: '1e3' is not a plausible learning rate (above 10"),
        (["pretrain", "--out", "x", "--lr", "nan"], "argument --lr: must be a finite learning rate > 0, got 'nan'"),
        (["pretrain", "--out", "x", "--epochs", "0"], "argument --epochs: must be a finite number > 0, got '0'"),
        (["pretrain", "--out", "x", "--seed", "-3"], "argument --seed: must be an integer >= 0, got '-3'"),
        (["pretrain", "--out", "x", "--set", "lr"], "argument --set: expected KEY=VALUE"),
        (["fewshot", "--model", "m", "--data", "d", "--out", "o", "--seeds", "0", "-1"], "argument --seeds: must be"),
        (["fewshot", "--model", "m", "--data", "d", "--out", "o", "--inner-lr", "1"], "unrecognized arguments"),
        (["evaluate", "--model", "m", "--data", "d", "--out", "o", "--batch-size", "0"], "argument --batch-size: must"),
        (["compare", "a", "b", "--confidence", "1"], "argument --confidence: must be a probability strictly between"),
        (["report", "r", "--out", "o", "--alpha", "0"], "argument --alpha: must be a probability strictly between"),
        (["report", "r", "--out", "o", "--samples", "-5"], "argument --samples: must be a positive integer"),
        (["study", "real", "--data", "d", "--fewshot-lr", "0"], "argument --fewshot-lr: must be a finite learning"),
    ],
)
def test_bad_numbers_stop_argparse_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_the_shared_types_accept_good_values():
    assert (positive_int("3"), non_negative_int("0"), learning_rate("1e-3"), probability("0.95")) == (3, 0, 1e-3, 0.95)
    for bad in ("0.5", "x", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)


def _config(*argv: str) -> TrainConfig:
    return build_config(build_parser().parse_args(["pretrain", "--out", "x", *argv]))


def test_set_reaches_nested_fields_and_named_flags_are_sugar_for_it():
    c = _config("--method", "fomaml", "--set", "data.cap=1000", "--set", "meta.carry_inner_state=false",
                "--set", "max_steps=null", "--set", "lr=2e-3", "--set", "data.split=dev")  # fmt: skip
    assert (c.data.cap, c.meta.carry_inner_state, c.max_steps, c.lr, c.data.split) == (1000, False, None, 2e-3, "dev")
    assert _config("--method", "mtl-p", "--set", "data.tasks=[a, b]").data.tasks == ["a", "b"]
    assert _config("--method", "mtl-p", "--set", "data.tasks=[a]", "--tasks", "t0-train").data.tasks == "t0-train"
    assert _config("--set", "method=mtl-t").prompt == "none"
    # the last of --set and its named flag wins, in command-line order
    assert _config("--method", "mtl-p", "--cap", "5", "--set", "data.cap=7").data.cap == 7
    assert _config("--method", "mtl-p", "--set", "data.cap=7", "--cap", "5").data.cap == 5
    # a named flag equals its --set, field for field
    flags = _config("--method", "mtl-p", "--prompt", "deep", "--max-source-len", "64", "--inner-lr", "0.01",
                    "--seed", "3")  # fmt: skip
    sets = _config("--set", "method=mtl-p", "--set", "prompt=deep", "--set", "data.max_source_len=64",
                   "--set", "meta.inner_lr=0.01", "--set", "seed=3")  # fmt: skip
    assert flags == sets
    with pytest.raises(ConfigError, match=r"unknown setting 'data.kap'; the settings are: method, .*data.cap, .*"):
        _config("--method", "mtl-p", "--set", "data.kap=3")
    with pytest.raises(ConfigError, match=r"data.cap: expected an integer, got 'many'"):
        _config("--method", "mtl-p", "--set", "data.cap=many")
    with pytest.raises(ConfigError, match=r"'meta' is a section: set its fields, e.g. meta.meta_batch_size"):
        _config("--method", "mtl-p", "--set", "meta=3")


def test_fewshot_flags_and_set_build_the_few_shot_config():
    from promptability.cli.common import settings_of

    args = build_parser().parse_args(["fewshot", "--model", "m", "--data", "d", "--out", "o", "--seeds", "4", "5",
                                      "--reference-subsample", "--set", "max_target_len=32"])  # fmt: skip
    config = apply_overrides(FewShotConfig(), settings_of(args))
    assert (config.seeds, config.draw, config.max_target_len, config.shots) == ([4, 5], "reference", 32, 16)
    assert config.source_eos is True
    args = build_parser().parse_args(["fewshot", "--model", "m", "--data", "d", "--out", "o", "--no-source-eos",
                                      "--draw", "random"])  # fmt: skip
    config = apply_overrides(FewShotConfig(), settings_of(args))
    assert (config.draw, config.source_eos) == ("random", False)
    with pytest.raises(ConfigError, match="draw must be one of auto, reference, random, got 'paper'"):
        FewShotConfig(draw="paper").validate()
    assert "max_source_len" in setting_names(FewShotConfig) and "data.max_source_len" in setting_names(TrainConfig)


def test_help_reads_defaults_from_the_dataclasses(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "source tokens (default 768)" in text and "--set KEY=VALUE" in text
    assert "configs/t5-large-mtl-tp-shallow.yaml" in text


def test_arg_names_a_groups_file_that_is_not_json(tmp_path, capsys):
    from promptability.cli import main

    (tmp_path / "accuracy.json").write_text('{"super_glue_rte_GPT_3_style": 0.6}')
    bad = tmp_path / "groups.json"
    bad.write_text("{not json")
    assert main(["arg", str(tmp_path / "accuracy.json"), "--groups", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "groups.json" in err and "not a valid groups file" in err
