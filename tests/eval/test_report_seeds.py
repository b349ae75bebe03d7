"""Pretraining seeds in run.json, the report's cells over them, and which significance test marks a cell."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.eval.test_report import TASKS, make_run

from promptability.cli import main
from promptability.eval.metrics import MetricsError
from promptability.eval.report import Column, build_report, render_markdown, report_json
from promptability.eval.runs import RunError, find_runs, load_run, pooled_correctness, seed_correctness
from promptability.eval.seeds import compare_runs, seed_args
from promptability.eval.significance import hierarchical_bootstrap, paired_bootstrap
from promptability.io import write_json_atomic

N = 300


def correct(p: float, seed: int) -> dict[str, np.ndarray]:
    """Exactly round(p * N) right per task, at places that vary with ``seed``."""
    rng = np.random.default_rng(seed)
    out = {}
    for task in TASKS:
        right = np.zeros(N, dtype=bool)
        right[: round(p * N)] = True
        out[task] = rng.permutation(right)
    return out


def seeded(path, pseed, family, **kw):
    """A run of the model trained with pretraining seed ``pseed`` (what studies.pipeline writes)."""
    make_run(path, **kw)
    meta = json.loads((path / "run.json").read_text())
    meta.update(pretrain_seed=pseed, model=f"{family}/seed-{pseed}", model_family=family)
    write_json_atomic(path / "run.json", meta)
    return path


@pytest.fixture
def noisy(tmp_path):
    """0-shot: MTL-T and MTL-TP with 3 pretraining seeds each whose spread (+-15 points) dwarfs the 4-point
    difference of their means; 16-shot: 2 pretraining seeds x 2 few-shot seeds, MTL-TP clearly better."""
    root = tmp_path / "runs"
    for p, acc in enumerate([0.45, 0.6, 0.75]):
        seeded(root / "0shot/mtl-t" / f"seed-{p}", p, "models/mtl-t", method="mtl-t", prompt="none", shots=0,
               correct=correct(acc, p))  # fmt: skip
    for p, acc in enumerate([0.49, 0.64, 0.79]):
        seeded(root / "0shot/mtl-tp" / f"seed-{p}", p, "models/mtl-tp", method="mtl-tp", prompt="shallow", shots=0,
               correct=correct(acc, 10 + p))  # fmt: skip
    for method, prompt, accs in (("mtl-t", "shallow", [0.5, 0.52]), ("mtl-tp", "shallow", [0.8, 0.82])):
        for p, acc in enumerate(accs):
            for f in range(2):
                seeded(root / f"16shot/{method}/pseed-{p}/seed-{f}", p, f"models/{method}", method=method,
                       prompt=prompt, shots=16, seed=f, correct=correct(acc + 0.02 * f, 100 * p + f))  # fmt: skip
    return root


def arg(acc: float) -> float:
    """ARG (%) of runs with accuracy ``acc`` on every task of TASKS (groups NLI/3, Coref/2, Story/4)."""
    return float(np.mean([(acc * k - 1) * 100 for k in (3, 2, 4)]))


def test_pretraining_seeds_share_a_cell_with_per_seed_means(noisy):
    runs = [load_run(p) for p in find_runs([noisy])]
    report = build_report(runs, samples=300)
    zero = report.cells[("mtl-tp", Column("large", "shallow", 0))]
    assert [r.pretrain_seed for r in zero.runs] == [0, 1, 2]
    assert zero.mean == pytest.approx(arg(0.64)) and zero.std == pytest.approx(arg(0.79) - arg(0.64))
    few = report.cells[("mtl-tp", Column("large", "shallow", 16))]
    by_seed = seed_args(few.runs, few.args)
    assert list(by_seed) == [0, 1] and [len(v) for v in by_seed.values()] == [2, 2]
    assert few.mean == pytest.approx(np.mean([arg(a) for a in (0.8, 0.82, 0.82, 0.84)]))
    record = next(c for c in report_json(report)["cells"] if c["method"] == "mtl-tp" and c["shots"] == 16)
    assert record["pretrain_seeds"] == [0, 0, 1, 1] and record["test"] == "hierarchical"
    assert record["arg_by_pretrain_seed"] == pytest.approx({"0": arg(0.81), "1": arg(0.83)})
    assert record["arg_std_over_pretrain_seeds"] == pytest.approx(np.std([arg(0.81), arg(0.83)], ddof=1))
    table = render_markdown(report)
    assert "2/3 pretraining seed(s) per continued-pretraining row, 2 few-shot run(s) per seed" in table
    assert "hierarchical paired bootstrap" in table


def test_hierarchical_test_is_what_marks_cells_and_seed_noise_is_no_mark(noisy):
    runs = [load_run(p) for p in find_runs([noisy])]
    shallow0, shallow16 = Column("large", "shallow", 0), Column("large", "shallow", 16)
    hier = build_report(runs, samples=500)
    inst = build_report(runs, samples=500, test="instances")
    t0 = [r for r in runs if r.method == "mtl-t" and r.shots == 0]
    tp0 = [r for r in runs if r.method == "mtl-tp" and r.shots == 0]
    expected = hierarchical_bootstrap(seed_correctness(t0), seed_correctness(tp0), TASKS, 500, 0)
    assert hier.cells[("mtl-tp", shallow0)].comparison == expected
    pooled = paired_bootstrap(pooled_correctness(t0), pooled_correctness(tp0), TASKS, 500, 0)
    assert inst.cells[("mtl-tp", shallow0)].comparison == pooled
    # 4 points apart on 1,200 instances: the instance bootstrap calls it; 15-point seed noise says it is not.
    assert inst.cells[("mtl-tp", shallow0)].mark(0.05) == "†" and hier.cells[("mtl-tp", shallow0)].mark(0.05) == ""
    assert hier.cells[("mtl-tp", shallow16)].mark(0.05) == "†"  # 30 points with 1-2 points of noise
    assert "instances of the runs' pooled correctness" in render_markdown(inst)
    with pytest.raises(ValueError, match="test must be one of"):
        build_report(runs, test="t-test")


def test_paired_seeds_sees_a_difference_every_shared_start_shows(noisy):
    """The fixture's seed p is +4 points for MTL-TP over MTL-T at every seed, as when seed p of both rows starts
    from one base: drawing the same seeds for both rows cancels the shared seed noise that hides it otherwise."""
    runs = [load_run(p) for p in find_runs([noisy])]
    shallow0 = Column("large", "shallow", 0)
    paired = build_report(runs, samples=500, test="paired-seeds")
    t0 = [r for r in runs if r.method == "mtl-t" and r.shots == 0]
    tp0 = [r for r in runs if r.method == "mtl-tp" and r.shots == 0]
    expected = hierarchical_bootstrap(seed_correctness(t0), seed_correctness(tp0), TASKS, 500, 0, paired_seeds=True)
    assert paired.cells[("mtl-tp", shallow0)].comparison == expected and expected.paired_seeds
    assert paired.cells[("mtl-tp", shallow0)].mark(0.05) == "†"  # the independent draws: no mark (test above)
    assert "the same for both rows, whose seed p starts from the same model" in render_markdown(paired)
    assert report_json(paired)["bootstrap"]["test"] == "paired-seeds"
    with pytest.raises(MetricsError, match="the same pretraining seeds on both sides"):
        compare_runs(t0, tp0[:2], TASKS, test="paired-seeds", samples=100)


def test_pretrain_seed_validation_and_duplicates(noisy, tmp_path):
    run_dir = noisy / "0shot/mtl-t/seed-0"
    meta = json.loads((run_dir / "run.json").read_text())
    write_json_atomic(run_dir / "run.json", {**meta, "pretrain_seed": "0"})
    with pytest.raises(RunError, match="'pretrain_seed' must be an integer >= 0 or null"):
        load_run(run_dir)
    write_json_atomic(run_dir / "run.json", {**meta, "model_family": ""})
    with pytest.raises(RunError, match="'model_family' must be a non-empty string"):
        load_run(run_dir)
    write_json_atomic(run_dir / "run.json", meta)
    twin = seeded(tmp_path / "twin", 0, "models/mtl-t", method="mtl-t", prompt="none", shots=0,
                  correct=correct(0.5, 0))  # fmt: skip
    with pytest.raises(RunError, match="same pretraining seed 0, seed None"):
        build_report([load_run(run_dir), load_run(twin)])
    # A run from before pretraining seeds, whose model path is the seeds' family, is not mixed in silently.
    old = make_run(tmp_path / "old", method="mtl-t", prompt="none", shots=0, correct=correct(0.5, 0))
    meta = json.loads((old / "run.json").read_text())
    write_json_atomic(old / "run.json", {**meta, "model": "models/mtl-t"})
    with pytest.raises(RunError, match="only the first records a pretraining seed"):
        build_report([load_run(run_dir), load_run(old)])


def test_compare_cli_uses_the_hierarchical_bootstrap_for_several_seeds(noisy, tmp_path, capsys):
    a, b = noisy / "0shot/mtl-t", noisy / "0shot/mtl-tp"
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--samples", "300", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 pretraining seed(s)" in printed and "hierarchical" in printed
    result = json.loads(out.read_text())
    runs = [[load_run(p) for p in find_runs([side])] for side in (a, b)]
    expected = hierarchical_bootstrap(*(seed_correctness(r) for r in runs), TASKS, 300, 0)
    assert result["test"] == "hierarchical" and result["p_value"] == expected.p_value > 0.05
    assert main(["compare", str(a), str(b), "--samples", "300", "--test", "instances", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["p_value"] < 0.05 and "test: instances" in capsys.readouterr().out
