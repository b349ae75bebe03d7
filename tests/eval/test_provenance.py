"""The report and `compare`/`arg` say when runs differ in precision or source EOS, and how shots were drawn."""

from __future__ import annotations

import numpy as np
import pytest

from promptability.cli import main
from promptability.eval.provenance import draw, mismatches, provenance_notes, setting
from promptability.eval.report import build_report, render_markdown
from promptability.eval.runs import load_run
from promptability.io import write_json_atomic, write_jsonl_atomic

GROUPS = {"nli": {"group": "NLI", "num_choices": 2}, "coref": {"group": "Coref", "num_choices": 2}}


def make_run(path, method, shots, seed=None, hits=30, **recorded):
    """A run right on the first ``hits`` of 40 instances per template; ``recorded`` goes into run.json."""
    rows = [
        {"task": t, "index": i, "scores": [-0.5, -2.0] if i < hits else [-2.0, -0.5], "prediction": 0 if i < hits else 1,
         "label": 0}
        for t in GROUPS for i in range(40)
    ]  # fmt: skip
    write_jsonl_atomic(path / "predictions.jsonl", rows)
    write_json_atomic(path / "accuracy.json", dict.fromkeys(GROUPS, hits / 40))
    meta = {"method": method, "prompt": "shallow", "shots": shots, "model": "m", "model_size": "large", "seed": seed,
            "groups": GROUPS, **recorded}  # fmt: skip
    write_json_atomic(path / "run.json", meta)
    return path


def test_settings_and_draws_in_words(tmp_path):
    fp32 = load_run(make_run(tmp_path / "a", "mtl-t", 0, precision="fp32", source_eos=True))
    bf16 = load_run(make_run(tmp_path / "b", "mtl-t", 0, precision="bf16", source_eos=False))
    old = load_run(make_run(tmp_path / "c", "mtl-t", 0))
    assert [setting([fp32], "precision"), setting([fp32, bf16], "precision"), setting([old], "precision")] == [
        "fp32", "bf16+fp32", "unrecorded"]  # fmt: skip
    assert [setting([fp32], "source_eos"), setting([bf16], "source_eos")] == ["with", "without"]
    assert mismatches([fp32], [fp32]) == []
    assert mismatches([fp32], [bf16]) == [
        "the runs differ in precision: A fp32, B bf16; the difference is not theirs alone",
        "the runs differ in source EOS: A with, B without; the difference is not theirs alone",
    ]
    assert mismatches([fp32, bf16], [fp32, bf16])[0].startswith("the runs differ in precision: A bf16+fp32")
    seeds = [load_run(make_run(tmp_path / f"r{s}", "mtl-t", 16, s, draw="random", draw_seed=s)) for s in (0, 1, 2)]
    reference = [load_run(make_run(tmp_path / f"f{s}", "mtl-t", 16, s, draw="reference")) for s in (0, 1)]
    assert draw(seeds) == "mean over 3 random draws" and draw(seeds[:1]) == "one random draw"
    assert draw(reference).startswith("the reference draw (the paper's fixed 16-shot subsample")
    assert draw([old]) == "draw not recorded" and draw(seeds + reference) == "mixed draws (random, reference)"


def test_the_report_notes_mixed_precision_and_each_few_shot_columns_draw(tmp_path):
    same = {"precision": "fp32", "source_eos": True}
    make_run(tmp_path / "mtl-t-0", "mtl-t", 0, **same)
    make_run(tmp_path / "mtl-tp-0", "mtl-tp", 0, hits=34, precision="bf16", source_eos=True)
    for s in (0, 1):
        make_run(tmp_path / f"mtl-t-16-{s}", "mtl-t", 16, s, draw="reference", **same)
        make_run(tmp_path / f"mtl-tp-16-{s}", "mtl-tp", 16, s, hits=33 + s, draw="reference", **same)
    runs = [load_run(p) for p in sorted(tmp_path.iterdir())]
    report = build_report(runs, samples=50)
    notes = provenance_notes(report)
    assert notes == [
        "The cells differ in precision (run.json): fp32 in the other cells; bf16: MTL-TP / large shallow 0-shot",
        "large shallow 16-shot: the reference draw (the paper's fixed 16-shot subsample, the same for every seed).",
    ]
    table = render_markdown(report)
    assert all(f"- {note}" in table for note in notes)

    # Random draws in one row only: the column says which row has which; all precisions equal: no precision note.
    make_run(tmp_path / "mtl-tp-0", "mtl-tp", 0, hits=34, **same)
    for s in (0, 1):
        make_run(tmp_path / f"mtl-tp-16-{s}", "mtl-tp", 16, s, hits=33 + s, draw="random", draw_seed=s, **same)
    report = build_report([load_run(p) for p in sorted(tmp_path.iterdir())], samples=50)
    assert provenance_notes(report) == [
        (
            "large shallow 16-shot: MTL-T: the reference draw (the paper's fixed 16-shot subsample, the same for every "
            "seed); MTL-TP: mean over 2 random draws."
        )
    ]


def test_compare_warns_and_arg_says_what_the_run_records(tmp_path, capsys):
    a = make_run(tmp_path / "a", "mtl-t", 0, precision="fp32", source_eos=True)
    b = make_run(tmp_path / "b", "mtl-tp", 0, hits=34, precision="bf16", source_eos=True)
    assert main(["compare", str(a), str(b), "--samples", "50"]) == 0
    out = capsys.readouterr()
    assert "warning: the runs differ in precision: A fp32, B bf16" in out.err and "source EOS" not in out.err
    assert "precision bf16, source EOS with" in out.out.splitlines()[1]
    assert main(["compare", str(a), str(a), "--samples", "50"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["arg", str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "run: precision bf16, source EOS with"
    assert float(lines[-1].split()[-1]) == pytest.approx((34 / 40 - 0.5) / 0.5 * 100)
    assert main(["arg", str(b / "accuracy.json"), "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"ARG (%): {np.round((34 / 40 - 0.5) / 0.5 * 100, 4):.4f}"]
