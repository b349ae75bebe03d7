"""Run directories, `compare`, the Table 1 report and atomic writes, on saved synthetic runs."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from promptability.cli import main
from promptability.data.registry import heldout_templates
from promptability.eval.metrics import average_relative_gain
from promptability.eval.report import Column, build_report, write_report
from promptability.eval.runs import RunError, check_same_instances, find_runs, load_run
from promptability.io import write_json_atomic, write_jsonl_atomic, write_text_atomic

TASKS = {
    "nli_a": {"group": "NLI", "num_choices": 3},
    "nli_b": {"group": "NLI", "num_choices": 3},
    "coref": {"group": "Coref", "num_choices": 2},
    "story": {"group": "Story", "num_choices": 4},
}
N = 80


def make_run(path, *, method, prompt, shots, correct, seed=None, size="large", groups=TASKS):
    """Write a run directory whose predictions are right exactly where ``correct`` says."""
    rows = []
    for task, right in correct.items():
        k = (groups or heldout_templates())[task]["num_choices"]
        for i, ok in enumerate(right):
            label = i % k
            pred = label if ok else (label + 1) % k
            scores = [-2.0] * k
            scores[pred] = -0.5
            rows.append({"task": task, "index": i, "scores": scores, "prediction": pred, "label": label})
    write_jsonl_atomic(path / "predictions.jsonl", rows)
    write_json_atomic(path / "accuracy.json", {t: float(np.mean(c)) for t, c in correct.items()})
    meta = {
        "method": method,
        "prompt": prompt,
        "shots": shots,
        "model": f"t5-{size}-lm",
        "model_size": size,
        "seed": seed,
        "score": "mean",
    }
    if groups is not None:
        meta["groups"] = groups
    write_json_atomic(path / "run.json", meta)
    return path


def _base(seed, p=0.5):
    rng = np.random.default_rng(seed)
    return {t: rng.random(N) < p for t in TASKS}


def _better(correct, seed, rate=0.35):
    """Right wherever ``correct`` is, and on ``rate`` of the rest."""
    rng = np.random.default_rng(seed)
    return {t: v | (rng.random(v.size) < rate) for t, v in correct.items()}


def _worse(correct, seed, rate=0.35):
    rng = np.random.default_rng(seed)
    return {t: v & (rng.random(v.size) >= rate) for t, v in correct.items()}


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    base0 = _base(0)
    make_run(root / "none-0", method="none", prompt="none", shots=0, correct=_worse(base0, 1))
    make_run(root / "mtl-t-0", method="mtl-t", prompt="none", shots=0, correct=base0)
    make_run(root / "fomaml-0-deep", method="fomaml", prompt="deep", shots=0, correct=base0)
    make_run(root / "mtl-tp-0-shallow", method="mtl-tp", prompt="shallow", shots=0, correct=_better(base0, 2))
    make_run(root / "mtl-tp-0-deep", method="mtl-tp", prompt="deep", shots=0, correct=_better(base0, 3))
    for seed in range(3):
        few = _base(10 + seed, p=0.55)
        make_run(root / "mtl-t-16" / f"seed{seed}", method="mtl-t", prompt="shallow", shots=16, seed=seed, correct=few)
        make_run(
            root / "mtl-tp-16" / f"seed{seed}",
            method="mtl-tp",
            prompt="shallow",
            shots=16,
            seed=seed,
            correct=_better(few, 20 + seed),
        )
    return root


def test_load_run_and_validation_errors(runs_root, tmp_path):
    run = load_run(runs_root / "mtl-t-0", require_predictions=True)
    assert run.config == ("mtl-t", "none", 0, "t5-large-lm") and run.model_size == "large"
    assert run.accuracy["coref"] == pytest.approx(_base(0)["coref"].mean())
    assert run.predictions["coref"].correct.tolist() == _base(0)["coref"].tolist()
    assert len(run.instances()) == 4 * N

    bad = tmp_path / "bad"
    shutil.copytree(runs_root / "mtl-t-0", bad)
    meta = json.loads((bad / "run.json").read_text())
    write_json_atomic(bad / "run.json", {**meta, "prompt": "medium"})
    with pytest.raises(RunError, match="'prompt' must be one of"):
        load_run(bad)
    write_json_atomic(bad / "run.json", {k: v for k, v in meta.items() if k != "shots"})
    with pytest.raises(RunError, match="missing field 'shots'"):
        load_run(bad)
    write_json_atomic(bad / "run.json", meta)
    acc = json.loads((bad / "accuracy.json").read_text())
    write_json_atomic(bad / "accuracy.json", {**acc, "coref": acc["coref"] + 0.05})
    with pytest.raises(RunError, match="accuracy of 'coref'"):
        load_run(bad)
    write_json_atomic(bad / "accuracy.json", acc)
    lines = (bad / "predictions.jsonl").read_text().splitlines()
    write_text_atomic(bad / "predictions.jsonl", "\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(RunError, match=f"predictions.jsonl:{len(lines) + 1}: duplicate instance"):
        load_run(bad)
    row = json.loads(lines[0])
    write_text_atomic(bad / "predictions.jsonl", "\n".join([json.dumps({**row, "scores": [0.0] * 5})] + lines[1:]))
    with pytest.raises(RunError, match="predictions.jsonl:1: 5 scores but task 'nli_a' has 3 choices"):
        load_run(bad)
    with pytest.raises(RunError, match="no such run directory"):
        find_runs([tmp_path / "nowhere"])


def test_p3_run_dir_arg(tmp_path, capsys):
    rng = np.random.default_rng(5)
    correct = {t: rng.random(12) < 0.6 for t in heldout_templates()}
    # As `evaluate` writes it: the groups of the templates evaluated, from the registry.
    groups = {t: {"group": i["group"], "num_choices": i["num_choices"]} for t, i in heldout_templates().items()}
    path = make_run(tmp_path / "p3", method="mtl-tp", prompt="deep", shots=0, correct=correct, groups=groups)
    run = load_run(path)
    expected = average_relative_gain({t: v.mean() for t, v in correct.items()})
    assert run.arg().value == pytest.approx(expected)
    assert main(["arg", str(path)]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1]) == pytest.approx(expected, abs=1e-4)

    # A P3 run over a subset lists only those templates in its groups, yet is incomplete for ARG.
    subset = dict(list(correct.items())[:50])
    path = make_run(
        tmp_path / "p3-subset",
        method="mtl-tp",
        prompt="deep",
        shots=0,
        correct=subset,
        groups={t: groups[t] for t in subset},
    )
    assert main(["arg", str(path)]) == 2
    assert "66 missing template(s)" in capsys.readouterr().err
    assert main(["arg", str(path), "--partial"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("partial ARG") and "66 templates missing" in last
    partial = average_relative_gain({t: v.mean() for t, v in subset.items()}, partial=True)
    assert float(last.split()[-1]) == pytest.approx(partial, abs=1e-4)


def test_compare_cli_and_refusal(runs_root, tmp_path, capsys):
    a, b = runs_root / "mtl-t-0", runs_root / "mtl-tp-0-shallow"
    out_json = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--samples", "400", "--out", str(out_json)]) == 0
    lines = capsys.readouterr().out.splitlines()
    result = json.loads(out_json.read_text())
    assert result["arg_a"] == pytest.approx(load_run(a).arg().value)
    assert result["arg_b"] == pytest.approx(load_run(b).arg().value)
    assert result["p_value"] < 0.01 and result["samples"] == 400 and result["ci_low"] > 0
    assert lines[-1] == f"p (fraction of resamples where B is not above A): {result['p_value']:.4f}"

    # Identical runs: p = 1.
    assert main(["compare", str(a), str(runs_root / "fomaml-0-deep"), "--samples", "200"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("1.0000")

    # Seeds: a folder of seed runs on each side, correctness averaged per instance.
    assert main(["compare", str(runs_root / "mtl-t-16"), str(runs_root / "mtl-tp-16"), "--samples", "300"]) == 0
    out = capsys.readouterr().out
    assert "3 run(s), seeds 0, 1, 2" in out
    seed_args = [load_run(runs_root / "mtl-tp-16" / f"seed{s}").arg().value for s in range(3)]
    assert f"ARG B (%): {np.mean(seed_args):.4f}" in out

    # Different instances (one label changed) are refused.
    other = tmp_path / "other"
    shutil.copytree(b, other)
    lines_b = (other / "predictions.jsonl").read_text().splitlines()
    row = json.loads(lines_b[0])
    was_right = row["prediction"] == row["label"]
    row["label"] = (row["label"] + 1) % 3
    row["prediction"] = row["label"] if was_right else (row["label"] + 1) % 3  # accuracy unchanged
    write_text_atomic(other / "predictions.jsonl", "\n".join([json.dumps(row)] + lines_b[1:]) + "\n")
    load_run(other)  # a valid run on its own
    assert main(["compare", str(a), str(other), "--samples", "50"]) == 2
    assert "different instances" in capsys.readouterr().err
    with pytest.raises(RunError, match="different instances"):
        check_same_instances([load_run(a), load_run(other)])


def test_report_values_and_marks(runs_root):
    runs = [load_run(p) for p in find_runs([runs_root])]
    assert len(runs) == 11
    report = build_report(runs, samples=300, seed=0)
    shallow0, shallow16, deep0 = (
        Column("large", "shallow", 0),
        Column("large", "shallow", 16),
        Column("large", "deep", 0),
    )
    assert report.columns == [shallow0, shallow16, deep0]
    assert report.methods == ["none", "mtl-t", "mtl-tp", "fomaml"]
    arg = {p.relative_to(runs_root).as_posix(): load_run(p).arg().value for p in find_runs([runs_root])}
    cells = report.cells
    # The prompt-less 0-shot runs fill both prompt columns.
    for column in (shallow0, deep0):
        assert cells[("mtl-t", column)].mean == pytest.approx(arg["mtl-t-0"]) and cells[("mtl-t", column)].shared
        assert cells[("none", column)].mean == pytest.approx(arg["none-0"])
        assert cells[("none", column)].mark(0.05) == "‡"
    assert ("mtl-t", Column("large", "deep", 16)) not in cells
    assert cells[("mtl-tp", shallow0)].mean == pytest.approx(arg["mtl-tp-0-shallow"])
    assert cells[("mtl-tp", deep0)].mean == pytest.approx(arg["mtl-tp-0-deep"])
    assert cells[("fomaml", deep0)].comparison.p_value == 1.0 and cells[("fomaml", deep0)].mark(0.05) == ""
    seeds = [arg[f"mtl-tp-16/seed{s}"] for s in range(3)]
    few = cells[("mtl-tp", shallow16)]
    assert few.args == pytest.approx(seeds)
    assert few.mean == pytest.approx(np.mean(seeds)) and few.std == pytest.approx(np.std(seeds, ddof=1))
    assert few.comparison.arg_b == pytest.approx(np.mean(seeds))  # pooled ARG = mean of the seeds' ARGs
    for column in (shallow0, shallow16, deep0):
        assert cells[("mtl-tp", column)].mark(0.05) == "†"
        assert cells[("mtl-t", column)].comparison is None  # the baseline itself


def test_report_files_and_cli(runs_root, tmp_path, capsys):
    out = tmp_path / "report"
    note = "T5-large, 4 tasks x 80 examples, 100 steps"
    assert main(["report", str(runs_root), "--out", str(out), "--samples", "200", "--scale-note", note]) == 0
    printed = capsys.readouterr().out
    assert "| MTL-TP |" in printed and note in printed
    for name in ("table.md", "table.csv", "cells.csv", "table.json", "per_group_accuracy.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "per_group_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left

    data = json.loads((out / "table.json").read_text())
    assert data["scale_note"] == note and data["baseline"] == "mtl-t"
    by_key = {(c["method"], c["prompt"], c["shots"]): c for c in data["cells"]}
    mtl_t = load_run(runs_root / "mtl-t-0").arg()
    assert by_key[("mtl-t", "deep", 0)]["arg_mean"] == pytest.approx(mtl_t.value)
    assert by_key[("mtl-t", "deep", 0)]["group_accuracy"] == pytest.approx(mtl_t.group_accuracy)
    tp16 = by_key[("mtl-tp", "shallow", 16)]
    assert tp16["seeds"] == [0, 1, 2] and tp16["mark"] == "†" and tp16["p_value"] < 0.05
    assert tp16["text"] == f"{tp16['arg_mean']:.2f} ± {tp16['arg_std']:.2f}†"

    table = list(csv.reader((out / "table.csv").open()))
    assert table[0] == ["method", "large shallow 0-shot", "large shallow 16-shot", "large deep 0-shot"]
    rows = {r[0]: r[1:] for r in table[1:]}
    assert list(rows) == ["No continued pretraining", "MTL-T", "MTL-TP", "FOMAML"]
    assert rows["MTL-T"][0] == rows["MTL-T"][2] == f"{mtl_t.value:.2f}"
    assert rows["FOMAML"] == ["", "", f"{mtl_t.value:.2f}"]
    md = (out / "table.md").read_text()
    assert f"| MTL-T | {mtl_t.value:.2f} |" in md and "†" in md and note in md
    long = list(csv.DictReader((out / "cells.csv").open()))
    assert float(long[0]["arg_mean"]) == pytest.approx(data["cells"][0]["arg_mean"])

    # Another baseline: everything is tested against "none".
    assert main(["report", str(runs_root), "--out", str(out), "--samples", "100", "--baseline", "none"]) == 0
    assert json.loads((out / "table.json").read_text())["baseline"] == "none"
    assert main(["report", str(runs_root), "--out", str(out), "--baseline", "maml"]) == 2
    assert "matches no run" in capsys.readouterr().err


def test_prompt_less_runs_fill_only_free_columns(tmp_path):
    base = _base(4)
    a = make_run(tmp_path / "a", method="mtl-t", prompt="none", shots=0, correct=base)
    b = make_run(tmp_path / "b", method="mtl-t", prompt="shallow", shots=0, correct=_better(base, 5))
    c = make_run(tmp_path / "c", method="mtl-tp", prompt="deep", shots=0, correct=base)
    report = build_report([load_run(p) for p in (a, b, c)], samples=50)
    shallow, deep = Column("large", "shallow", 0), Column("large", "deep", 0)
    assert report.columns == [shallow, deep]
    assert report.cells[("mtl-t", shallow)].runs[0].path == b  # the explicit prompt wins
    assert report.cells[("mtl-t", deep)].runs[0].path == a
    assert report.cells[("mtl-tp", deep)].comparison.p_value == 1.0  # same predictions as run a
    # Only prompt-less runs at a size and shot count: a single "no prompt" column.
    alone = build_report([load_run(a)], samples=10)
    assert alone.columns == [Column("large", "none", 0)]
    # Two models of the same size for one method and cell are ambiguous.
    d = make_run(tmp_path / "d", method="mtl-t", prompt="none", shots=0, correct=base)
    meta = json.loads((d / "run.json").read_text())
    write_json_atomic(d / "run.json", {**meta, "model": "another-large"})
    with pytest.raises(RunError, match="two configurations fill the cell"):
        build_report([load_run(p) for p in (a, c, d)])


def test_report_partial_runs_need_flag(tmp_path):
    groups = {**TASKS, "extra": {"group": "Extra", "num_choices": 2}}
    path = make_run(tmp_path / "r", method="mtl-tp", prompt="deep", shots=0, correct=_base(0), groups=groups)
    with pytest.raises(ValueError, match="missing template"):
        build_report([load_run(path)])
    report = build_report([load_run(path)], partial=True)
    cell = next(iter(report.cells.values()))
    assert cell.partial and cell.text(0.05).endswith("*")
    assert cell.mean == pytest.approx(load_run(path).arg(partial=True).value)
    files = write_report(report, tmp_path / "out", partial=True)
    assert files["png"].is_file()


def test_atomic_writes(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json_atomic(path, {"a": [1, 2], "é": 1.5})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2], "é": 1.5}
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"a": [1, 2], "é": 1.5}

    rows_path = tmp_path / "rows.jsonl"
    write_jsonl_atomic(rows_path, ({"i": i} for i in range(3)))
    assert [json.loads(line) for line in rows_path.read_text().splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]

    def failing():
        yield {"i": 9}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(rows_path, failing())
    assert rows_path.read_text().splitlines() == ['{"i": 0}', '{"i": 1}', '{"i": 2}']
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "sub"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.json"]


def test_real_evaluate_output_loads_and_reports(make_model, tmp_path):
    """Run directories written by eval/rank.py's write_run load, score and report."""
    from promptability.eval.groups import groups_for
    from promptability.eval.rank import evaluate, write_run

    records = []
    for i in range(6):
        records.append(
            {
                "task": "t_nli",
                "source": f"premise : anna is tall {i} . hypothesis : anna is short",
                "target": "false",
                "choices": ["true", "false", "neither"],
                "label": i % 3,
            }
        )
        records.append(
            {
                "task": "t_yn",
                "source": f"is this review positive ? {'the dog ran ' * (i + 1)}",
                "target": "yes",
                "choices": ["yes", "no"],
                "label": i % 2,
            }
        )
    groups = groups_for(records)
    for name, (method, kind) in {"a": ("mtl-t", "none"), "b": ("mtl-tp", "deep")}.items():
        rows = evaluate(make_model(kind), records, progress=False)
        write_run(
            tmp_path / name,
            rows,
            {
                "method": method,
                "prompt": kind,
                "shots": 0,
                "model": "tiny",
                "model_size": "tiny",
                "seed": None,
                "score": "mean",
                "groups": groups,
            },
        )
    run = load_run(tmp_path / "a", require_predictions=True)
    assert (
        run.arg_groups
        == groups
        == {"t_nli": {"group": "t_nli", "num_choices": 3}, "t_yn": {"group": "t_yn", "num_choices": 2}}
    )
    acc = run.accuracy
    assert run.arg().value == pytest.approx(((acc["t_nli"] * 3 - 1) + (acc["t_yn"] * 2 - 1)) / 2 * 100)
    report = build_report([run, load_run(tmp_path / "b")], samples=100)
    assert report.cells[("mtl-tp", Column("tiny", "deep", 0))].comparison is not None
    assert report.cells[("mtl-t", Column("tiny", "deep", 0))].mean == pytest.approx(run.arg().value)
