"""Another tool's runs: a folder with only predictions.jsonl (and maybe accuracy.json) in `arg` and `compare`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.eval.test_report import TASKS, make_run

from promptability.cli import main
from promptability.data.registry import heldout_templates
from promptability.eval.metrics import average_relative_gain, few
from promptability.eval.outside import load_any_run
from promptability.eval.report import build_report
from promptability.eval.runs import RunError, find_runs, load_run
from promptability.io import write_json_atomic, write_jsonl_atomic

N = 12


@pytest.fixture
def correct():
    rng = np.random.default_rng(3)
    return {t: rng.random(N) < 0.6 for t in heldout_templates()}


def ours(tmp_path, correct):
    groups = {t: {"group": i["group"], "num_choices": i["num_choices"]} for t, i in heldout_templates().items()}
    return make_run(tmp_path / "ours", method="mtl-tp", prompt="deep", shots=0, correct=correct, groups=groups)


def outside(path, correct, style="prediction", accuracy=None):
    """Another tool's predictions of the same instances as ``ours``: its own field names, no scores."""
    rows = []
    for task, right in correct.items():
        k = heldout_templates()[task]["num_choices"]
        for i, ok in enumerate(right):
            label = i % k
            pred = label if ok else (label + 1) % k
            row = {"template": task, "id": i}
            row |= {"prediction": pred, "label": label} if style == "prediction" else {"correct": bool(ok)}
            rows.append(row)
    path.mkdir(parents=True)
    write_jsonl_atomic(path / "predictions.jsonl", rows)
    if accuracy is not None:
        write_json_atomic(path / "accuracy.json", accuracy)
    return path


def last_number(text):
    return float(text.strip().splitlines()[-1].split()[-1])


def test_arg_of_an_outside_folder_equals_the_arg_of_its_accuracies(tmp_path, correct, capsys):
    path = outside(tmp_path / "theirs", correct)
    expected = average_relative_gain({t: v.mean() for t, v in correct.items()})
    assert main(["arg", str(path)]) == 0
    out = capsys.readouterr().out
    assert last_number(out) == pytest.approx(expected, abs=1e-4)
    assert "run: another tool's predictions: unknown, prompt unknown, shots unknown, unknown" in out
    assert main(["arg", str(path), "--method", "T0", "--prompt", "none", "--shots", "16", "--model", "x/t0-3b"]) == 0
    assert "run: another tool's predictions: t0, prompt none, 16-shot, x/t0-3b" in capsys.readouterr().out
    run = load_any_run(path, identity={"method": "T0", "shots": 16, "model": None})
    assert run.config == ("t0", "unknown", 16, "unknown") and run.arg().value == pytest.approx(expected)


def test_accuracy_json_must_agree_with_the_predictions(tmp_path, correct, capsys):
    acc = {t: float(v.mean()) for t, v in correct.items()}
    assert load_any_run(outside(tmp_path / "agree", correct, accuracy=acc)).accuracy == pytest.approx(acc)
    task = sorted(acc)[0]
    wrong = 0.0 if acc[task] > 0.5 else 1.0
    path = outside(tmp_path / "disagree", correct, accuracy={**acc, task: wrong})
    assert main(["arg", str(path)]) == 2
    assert f"accuracy of {task!r} is {wrong} in accuracy.json but {acc[task]} from" in capsys.readouterr().err


@pytest.mark.parametrize("style", ["prediction", "correct"])
def test_compare_our_run_with_an_outside_one(tmp_path, correct, capsys, style):
    """The same predictions on both sides: no difference, p = 1; without labels, instances match by index."""
    a, b = ours(tmp_path, correct), outside(tmp_path / "theirs", correct, style)
    assert main(["compare", str(a), str(b), "--samples", "50", "--method-b", "t0", "--shots-b", "0"]) == 0
    out = capsys.readouterr().out
    arg = average_relative_gain({t: v.mean() for t, v in correct.items()})
    assert f"ARG A (%): {arg:.4f}" in out and f"ARG B (%): {arg:.4f}" in out
    assert "difference B - A: 0.0000" in out and out.splitlines()[-1].endswith("1.0000")
    assert "B: " + str(b) + " (another tool's predictions: t0, prompt unknown, 0-shot, unknown; 1 run(s))" in out


def test_compare_refuses_other_instances_and_identity_of_our_runs(tmp_path, correct, capsys):
    a = ours(tmp_path, correct)
    fewer = {t: v[:-1] for t, v in correct.items()}
    b = outside(tmp_path / "theirs", fewer, "correct")
    assert main(["compare", str(a), str(b), "--samples", "10"]) == 2
    assert "different instances" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--samples", "10", "--method-a", "x"]) == 2
    assert "another tool's predictions only" in capsys.readouterr().err
    assert main(["arg", str(a), "--shots", "4"]) == 2
    assert "--shots describe a folder with only another tool's predictions" in capsys.readouterr().err
    assert find_runs([b]) == [b]
    with pytest.raises(RunError, match=r"has a run.json, which says what the run is; \['shots'\]"):
        load_any_run(a, identity={"shots": 4})


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": 0, "prediction": 0, "label": 0}, r"predictions.jsonl:1: missing field 'task' or 'template'"),
        ({"task": "t", "prediction": 0, "label": 0}, r":1: missing field 'index' or 'id'"),
        ({"task": "t", "index": 0, "prediction": 0}, r":1: needs 'prediction' and 'label', or 'correct'"),
        ({"task": "t", "index": 0, "correct": "yes"}, r"'correct' must be true or false"),
        ({"task": "t", "index": 0, "correct": True, "prediction": 1, "label": 0}, r"'correct' is True but"),
        ({"task": "t", "index": 0, "scores": [0, 1], "prediction": 2, "label": 0}, r"'prediction' must be .* \[0, 2\)"),
    ],
)
def test_outside_rows_are_checked_with_file_line_and_field(tmp_path, row, message):
    (tmp_path / "predictions.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(RunError, match=message):
        load_any_run(tmp_path)


def test_per_instance_choices_give_chance_and_unknown_shots_have_no_report_column(tmp_path):
    rows = [{"task": "t", "index": i, "num_choices": k, "correct": i % 2 == 0} for i, k in enumerate([2, 4, 2, 4])]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_any_run(tmp_path)
    assert run.chance == {"t": pytest.approx((1 / 2 + 1 / 4) / 2)} and run.accuracy == {"t": 0.5}
    with pytest.raises(RunError, match="without its number of shots"):
        build_report([run], baseline="none")


def test_missing_templates_are_shown_by_a_few_and_the_count(tmp_path, correct, capsys):
    path = outside(tmp_path / "theirs", dict(list(correct.items())[:10]))
    assert main(["arg", str(path)]) == 2
    err = capsys.readouterr().err
    missing = sorted(set(heldout_templates()) - set(list(correct)[:10]))
    assert f"{len(missing)} missing template(s): {', '.join(missing[:5])} ... and {len(missing) - 5} more" in err
    assert missing[5] not in err
    assert few(["a", "b"]) == "a, b" and few(list("abcdefg"), 2) == "a, b ... and 5 more"


def test_an_outside_run_takes_the_groups_of_the_run_it_is_compared_with(tmp_path, capsys):
    rng = np.random.default_rng(4)
    correct = {t: rng.random(N) < 0.5 for t in TASKS}
    a = make_run(tmp_path / "ours", method="mtl-t", prompt="none", shots=0, correct=correct)  # the suite's groups
    rows = [{"task": t, "index": i, "correct": bool(ok)} for t, right in correct.items() for i, ok in enumerate(right)]
    (tmp_path / "theirs").mkdir()
    write_jsonl_atomic(tmp_path / "theirs" / "predictions.jsonl", rows)
    assert main(["compare", str(tmp_path / "theirs"), str(a), "--samples", "20"]) == 0
    out = capsys.readouterr().out
    assert f"ARG A (%): {load_run(a).arg().value:.4f}" in out and "difference B - A: 0.0000" in out
