"""The commands a user types: help, evaluate on the suite and on real P3 samples, arg on the result."""

import json
import subprocess
import sys

import pytest

from promptability.cli import main


@pytest.mark.slow
def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "promptability", "--help"], capture_output=True, text=True, check=True)
    for command in (
        "demo",
        "data",
        "model",
        "study",
        "pretrain",
        "fewshot",
        "evaluate",
        "arg",
        "compare",
        "report",
        "generate",
        "export",
        "plan",
    ):
        assert command in out.stdout


@pytest.mark.slow
def test_evaluate_then_arg_on_the_suite(make_model, tmp_path, capsys):
    from promptability.suite.generate import write_suite

    write_suite(tmp_path / "suite", seed=0, size="quick", progress=False)
    make_model("deep").save(tmp_path / "model")
    task = "suite_word_sense_word_usages_true_or_false"
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "suite"),
                 "--out", str(tmp_path / "run"), "--tasks", task]) == 0  # fmt: skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["prompt"] == "deep" and run["groups"] == {task: {"group": "WordSense", "num_choices": 2}}
    assert (run["precision"], run["source_eos"]) == ("fp32", True)  # the paper's
    predictions = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 32
    accuracy = json.loads((tmp_path / "run" / "accuracy.json").read_text())[task]
    capsys.readouterr()
    assert main(["arg", str(tmp_path / "run")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(last.split()[-1]) == round((accuracy - 0.5) / 0.5 * 100, 4)

    # bf16 without source EOS: both recorded, and compare warns that the runs differ in them.
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "suite"),
                 "--out", str(tmp_path / "other"), "--tasks", task, "--bf16", "--no-source-eos"]) == 0  # fmt: skip
    other = json.loads((tmp_path / "other" / "run.json").read_text())
    assert (other["precision"], other["source_eos"]) == ("bf16", False)
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "run"), str(tmp_path / "other"), "--samples", "20"]) == 0
    assert capsys.readouterr().err.count("warning: the runs differ in") == 2


@pytest.mark.slow
def test_evaluate_reads_a_real_p3_score_eval_folder(make_model, tmp_path, p3_samples):
    folder = p3_samples / "hellaswag_complete_first_then_score_eval"
    make_model("shallow").save(tmp_path / "model")
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(folder),
                 "--out", str(tmp_path / "run"), "--max-source-len", "64"]) == 0  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and all(len(r["scores"]) == 4 for r in rows)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["groups"]["hellaswag_complete_first_then_score_eval"] == {"group": "HellaSwag", "num_choices": 4}


def test_model_list_and_study_errors_are_plain(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROMPTABILITY_HOME", str(tmp_path))
    assert main(["model", "list"]) == 0
    listed = capsys.readouterr().out
    assert "smollm2-135m" in listed and "not installed" in listed
    assert main(["model", "install", "nothing-such"]) == 2
    assert "unknown named model" in capsys.readouterr().out
    assert main(["study", "real", "--data", str(tmp_path / "absent"), "--quiet"]) == 2
    assert "give --data" in capsys.readouterr().out
