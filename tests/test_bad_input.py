"""The project's promises about bad input and results, one test each (issue 17).

Read as a list: what fails fast (and how the error names the culprit), what is refused,
and what is never overwritten. Faults and security are in ``test_faults.py``.
"""

from __future__ import annotations

import json

import pytest

from promptability.eval.metrics import arg_breakdown, chance_level, relative_gain
from promptability.eval.rank import write_run
from promptability.eval.runs import load_run


def _rows(task: str, num_choices: list[int], correct: list[bool]) -> list[dict]:
    return [
        {"task": task, "index": i, "scores": [0.0] * n, "prediction": 0 if ok else 1, "label": 0}
        for i, (n, ok) in enumerate(zip(num_choices, correct, strict=True))
    ]


def test_arg_chance_is_the_mean_of_one_over_n_when_choices_vary(tmp_path):
    """Instances with 2, 3 and 5 choices: chance is (1/2 + 1/3 + 1/5) / 3, not 1/5."""
    num_choices, correct = [2, 3, 5] * 4, [True, False, False] * 4  # accuracy 1/3
    groups = {"t": {"group": "G", "num_choices": 5}}
    write_run(tmp_path / "run", _rows("t", num_choices, correct),
              {"method": "none", "prompt": "none", "shots": 0, "model": "m", "groups": groups})  # fmt: skip
    run = load_run(tmp_path / "run")
    true_chance = (1 / 2 + 1 / 3 + 1 / 5) / 3
    assert run.chance == {"t": pytest.approx(true_chance)}
    expected = (1 / 3 - true_chance) / true_chance * 100
    assert run.arg().value == pytest.approx(expected)  # about -3%
    assert expected == pytest.approx(-3.23, abs=0.01)  # where 1/max(choices) said +66.7%
    # Only accuracies known: today's rule, 1 / num_choices of the groups.
    assert arg_breakdown(run.accuracy, groups).value == pytest.approx((1 / 3 - 1 / 5) / (1 / 5) * 100)


def test_arg_chance_of_fixed_choices_is_exactly_one_over_n():
    for n in (2, 3, 4, 7):
        assert chance_level([n] * 9) == 1.0 / n
        assert relative_gain(0.61, chance=chance_level([n] * 9)) == relative_gain(0.61, n)


# ----- results: nothing finished is overwritten by nothing ------------------------------------------
RECORDS = [
    {"task": t, "source": f"the cat sat on the mat {i}", "target": c[i % len(c)], "choices": c, "label": i % len(c)}
    for t, c in (("t_yn", ["yes", "no"]), ("t_nli", ["true", "false", "neither"]), ("t_ab", ["a dog", "the sun"]))
    for i in range(4)
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_write_run_refuses_to_replace_a_finished_result_with_an_empty_one(tmp_path):
    from promptability.eval.runs import RunError

    rows = _rows("t", [2, 2], [True, False])
    write_run(tmp_path, rows, {"method": "none", "prompt": "none", "shots": 0, "model": "m"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunError, match=r"no predictions to write.*kept"):
        write_run(tmp_path, [], {"method": "none", "prompt": "none", "shots": 0, "model": "m"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("batch_size", [0, -1])
def test_evaluate_refuses_a_batch_size_below_one(make_model, batch_size):
    from promptability.eval.rank import evaluate

    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        evaluate(make_model(), RECORDS, batch_size=batch_size, progress=False)


@pytest.fixture
def cli_inputs(make_model, tmp_path):
    model = make_model("shallow").save(tmp_path / "model")
    return str(model), str(_jsonl(tmp_path / "data.jsonl", RECORDS))


def test_evaluate_checks_out_is_writable_before_loading_a_model(cli_inputs, tmp_path, monkeypatch, capsys):
    import promptability.model as model_pkg
    from promptability.cli import main

    monkeypatch.setattr(model_pkg, "load_model", lambda *a, **k: pytest.fail("model loaded before --out was checked"))
    (tmp_path / "file").write_text("not a folder")
    model, data = cli_inputs
    assert main(["evaluate", "--model", model, "--data", data, "--out", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "file" in err and "Traceback" not in err


def test_interrupted_evaluate_resumes_with_the_tasks_left(cli_inputs, tmp_path, monkeypatch):
    from promptability.cli import main
    from promptability.eval import rank

    model, data = cli_inputs
    out = tmp_path / "run"
    argv = ["evaluate", "--model", model, "--data", data, "--out", str(out), "--batch-size", "2"]
    assert main(argv) == 0
    expected = (out / "predictions.jsonl").read_text()
    assert not (out / "partial").exists()  # the finished files replace the partial ones

    other = tmp_path / "other"
    save = rank.PartialResults.save
    seen: list[str] = []

    def interrupt_after_first(self, task, rows):
        if seen:
            raise KeyboardInterrupt
        seen.append(task)
        save(self, task, rows)

    monkeypatch.setattr(rank.PartialResults, "save", interrupt_after_first)
    assert main([*argv[:-3], str(other), "--batch-size", "2"]) == 130
    assert [p.name for p in (other / "partial").glob("*.jsonl")] == [f"{seen[0]}.jsonl"]
    monkeypatch.setattr(rank.PartialResults, "save", save)
    scored: list[str] = []
    original = rank.evaluate

    def counting(model, recs, **kwargs):
        scored.extend(r["task"] for r in recs)
        return original(model, recs, **kwargs)

    monkeypatch.setattr(rank, "evaluate", counting)
    assert main([*argv[:-3], str(other), "--batch-size", "2"]) == 0
    assert seen[0] not in scored and len(set(scored)) == 2  # only the tasks left were scored again
    assert (other / "predictions.jsonl").read_text() == expected


def test_evaluate_refuses_to_resume_unfinished_results_made_with_other_settings(cli_inputs, tmp_path, capsys):
    from promptability.cli import main

    model, data = cli_inputs
    partial = tmp_path / "run" / "partial"
    partial.mkdir(parents=True)
    (partial / "settings.json").write_text(json.dumps({"model": "another-model"}))
    assert main(["evaluate", "--model", model, "--data", data, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "other settings" in err and "model" in err


# ----- errors name the file, and every command reports them the same way -----------------------------
def test_non_utf8_jsonl_is_a_data_error_naming_file_and_line(tmp_path):
    from promptability.data.readers import read_examples
    from promptability.data.schema import DataError

    path = tmp_path / "bad.jsonl"
    good = json.dumps(RECORDS[0]).encode()
    path.write_bytes(good + b"\n" + good.replace(b"cat", b"c\xe9t") + b"\n")
    with pytest.raises(DataError, match=r"bad\.jsonl, row 1 \(line 2\): not UTF-8 text \(byte 0xe9\)"):
        read_examples(path)


def test_non_utf8_training_data_is_the_same_data_error_inside_the_tokenized_cache(tmp_path, tiny_tokenizer):
    """pretrain reads its files lazily inside ``datasets``; its wrapper error must not hide the file and line."""
    from promptability.data.readers import iter_examples
    from promptability.data.schema import DataError
    from promptability.data.tokenize import tokenize_records

    path = tmp_path / "train.jsonl"
    good = json.dumps(RECORDS[0]).encode()
    path.write_bytes(good + b"\n" + good.replace(b"cat", b"c\xe9t") + b"\n")
    with pytest.raises(DataError, match=r"train\.jsonl, row 1 \(line 2\): not UTF-8"):
        tokenize_records(
            lambda: iter_examples(path), tiny_tokenizer, files=[path], cache_dir=tmp_path / "c", progress=False
        )
    assert list((tmp_path / "c").iterdir()) == []


@pytest.fixture
def saved_model(make_model, tmp_path):
    return make_model("shallow").save(tmp_path / "model")


@pytest.mark.parametrize(
    ("name", "corrupt", "match"),
    [
        ("promptability.json", lambda p: p.write_text("garbage{"), "not a valid model settings file"),
        ("promptability.json", lambda p: p.write_text("{}"), "lacks field"),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]), "corrupted or truncated"),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
        ("prompt.safetensors", lambda p: p.write_bytes(p.read_bytes()[:50]), "corrupted or truncated"),
    ],
)
def test_broken_model_files_are_named(saved_model, name, corrupt, match):
    from promptability.io import BadFileError
    from promptability.model import load_model

    corrupt(saved_model / name)
    with pytest.raises(BadFileError, match=rf"{name}: .*{match}"):
        load_model(saved_model)


def test_every_command_reports_user_errors_as_error_lines_with_rc_2(saved_model, tmp_path, capsys):
    from promptability.cli import main

    (saved_model / "promptability.json").write_text("garbage{")
    data = _jsonl(tmp_path / "data.jsonl", RECORDS)
    assert main(["evaluate", "--model", str(saved_model), "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "promptability.json" in err and "Traceback" not in err
    assert main(["evaluate", "--model", str(saved_model), "--data", str(tmp_path / "nowhere.jsonl"),
                 "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    assert capsys.readouterr().err.startswith("error: ")


def test_the_user_error_table_names_real_exception_classes():
    import importlib

    from promptability.cli import USER_ERRORS

    for module, name in USER_ERRORS:
        assert issubclass(getattr(importlib.import_module(module), name), Exception), (module, name)


def test_tokenized_cache_is_keyed_on_content_not_size_and_mtime(tmp_path):
    import os

    from promptability.data.fingerprint import files_fingerprint

    data = _jsonl(tmp_path / "data.jsonl", RECORDS)
    before, stat = files_fingerprint([data]), data.stat()
    data.write_text(data.read_text().replace("cat", "hat"))  # same size
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    assert data.stat().st_size == stat.st_size and files_fingerprint([data]) != before


# ----- records: refused at read time, naming the file, the row and the choice ------------------------
@pytest.mark.parametrize(
    ("choices", "label", "message"),
    [
        (["yes"], 0, r"bad.jsonl, row 1: field 'choices' has one choice \('yes'\)"),
        (
            ["yes", "no", "yes"],
            2,
            (
                r"bad.jsonl, row 1: field 'choices' holds 'yes' more than once and 'label' 2 points "
                r"at a later copy"
            ),
        ),  # fmt: skip
    ],
)
def test_one_choice_records_and_unreachable_labels_are_refused(tmp_path, choices, label, message):
    from promptability.data.readers import read_examples
    from promptability.data.schema import DataError

    bad = dict(RECORDS[0], choices=choices, target=choices[label], label=label)
    with pytest.raises(DataError, match=message):
        read_examples(_jsonl(tmp_path / "bad.jsonl", [RECORDS[0], bad]))


def test_repeated_choices_labelled_at_the_first_copy_are_accepted():
    """Real P3 templates (trec fine_grained_*, social_i_qa, commonsense_qa, dream) repeat choices, labelled at
    the first copy: accepted."""
    from promptability.data.schema import validate

    repeated = dict(RECORDS[0], choices=["no", "yes", "no"], target="no", label=0)
    assert validate(repeated)["choices"] == ["no", "yes", "no"]


def test_evaluate_on_a_suite_folder_takes_its_held_out_templates(cli_inputs, tmp_path, capsys):
    """A suite's training templates have no choices; `evaluate --data SUITE` must not trip over them."""
    from promptability.cli import main

    model, _ = cli_inputs
    suite = tmp_path / "suite"
    (suite / "validation").mkdir(parents=True)
    meta = {"format": "promptability-suite/1", "templates": {
        "held": {"role": "heldout", "group": "G", "num_choices": 2},
        "trained": {"role": "train", "group": "T", "num_choices": 0}}}  # fmt: skip
    (suite / "suite.json").write_text(json.dumps(meta))
    _jsonl(suite / "validation" / "held.jsonl", [{**r, "task": "held"} for r in RECORDS])
    _jsonl(suite / "validation" / "trained.jsonl", [{"task": "trained", "source": "a b", "target": "c"}])
    assert main(["evaluate", "--model", model, "--data", str(suite), "--out", str(tmp_path / "run")]) == 0
    accuracy = json.loads((tmp_path / "run" / "accuracy.json").read_text())
    assert list(accuracy) == ["held"]


def test_an_unknown_template_name_lists_what_the_data_has(cli_inputs, tmp_path, capsys):
    from promptability.cli import main

    model, data = cli_inputs
    assert main(["evaluate", "--model", model, "--data", data, "--out", str(tmp_path / "r"), "--tasks", "t_nl"]) == 2
    err = capsys.readouterr().err
    assert "'t_nl'" in err and "t_nli" in err and "none" not in err
