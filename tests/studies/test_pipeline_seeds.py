"""Pretraining seeds through the shared pipeline: one model per row and seed, 0/16-shot runs on each, the
report over them, resumption per seed. A two-row plan on the quick suite keeps it to seconds of training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from promptability.eval.runs import find_runs, load_run
from promptability.studies.demo import QUICK, _fewshot_config, _train_config
from promptability.studies.pipeline import Plan, Stages, run_plan, write_tables


@pytest.fixture(scope="module")
def seeded_study(tmp_path_factory):
    from promptability.data.suite_layout import read_meta
    from promptability.model import load_model
    from promptability.suite.generate import write_suite

    out = tmp_path_factory.mktemp("seeds")
    suite, base = out / "suite", out / "models" / "base"
    write_suite(suite, seed=0, size="quick", progress=False)
    load_model("tiny", seed=0).save(base)
    meta = read_meta(suite)
    first = {}  # one held-out template per dataset keeps the evaluations short
    for name, info in sorted(meta["templates"].items()):
        if info["role"] == "heldout":
            first.setdefault(info["dataset"], name)
    heldout = sorted(first.values())
    plan = seed_plan(suite, base, heldout, [0, 1])
    stages = Stages("test")
    run_plan(plan, out, stages, progress=False)
    table = write_tables(out, stages, "two rows", baseline="mtl-t", partial=False)
    return out, plan, [name for name, _, _ in stages.timings], table


def seed_plan(suite: Path, base: Path, heldout: list[str], seeds: list[int]) -> Plan:
    return Plan(
        data=suite, heldout=heldout,
        pretrain=[("mtl-t", _train_config(QUICK, "mtl-t", "none", suite, 3, str(base)))],
        zero_shot=[("base", "none", str(base)), ("mtl-t", "mtl-t", "ignored for a pretrained row")],
        fewshot=[("mtl-t", "ignored", replace(_fewshot_config(QUICK, "shallow", "mtl-t", heldout[:1]), seeds=[0, 1]))],
        model_size="tiny", eval_batch_size=64, max_source_len=QUICK.max_source_len,
        max_target_len=QUICK.max_target_len, pretrain_seeds=seeds,
    )  # fmt: skip


@pytest.mark.slow
def test_every_row_runs_once_per_pretraining_seed(seeded_study):
    out, _, names, _ = seeded_study
    assert names[:2] == ["pretrain mtl-t (seed 0)", "pretrain mtl-t (seed 1)"]
    assert names[2:5] == ["0-shot base", "0-shot mtl-t (seed 0)", "0-shot mtl-t (seed 1)"]
    assert names[5:7] == ["16-shot mtl-t (shallow, pretraining seed 0)", "16-shot mtl-t (shallow, pretraining seed 1)"]
    family = out / "models" / "mtl-t"
    weights = []
    for seed in (0, 1):
        assert json.loads((family / f"seed-{seed}" / "train.json").read_text())["seed"] == seed
        weights.append(load_file(family / f"seed-{seed}" / "model.safetensors"))
    assert any(not (weights[0][k] == weights[1][k]).all() for k in weights[0])  # other data order, other model
    zero = {p.relative_to(out / "runs").as_posix(): load_run(p) for p in find_runs([out / "runs" / "0shot"])}
    assert sorted(zero) == ["0shot/base", "0shot/mtl-t/seed-0", "0shot/mtl-t/seed-1"]
    assert zero["0shot/base"].pretrain_seed is None and zero["0shot/base"].model_family is None
    run = zero["0shot/mtl-t/seed-1"]
    assert (run.pretrain_seed, run.model_family, run.model) == (1, str(family), str(family / "seed-1"))
    few = sorted(p.relative_to(out / "runs" / "16shot").as_posix() for p in find_runs([out / "runs" / "16shot"]))
    assert few == [f"mtl-t-shallow/pseed-{p}/seed-{f}" for p in (0, 1) for f in (0, 1)]
    tuned = load_run(out / "runs" / "16shot" / "mtl-t-shallow" / "pseed-1" / "seed-0")
    assert (tuned.pretrain_seed, tuned.seed, tuned.model) == (1, 0, str(family / "seed-1"))


@pytest.mark.slow
def test_report_cells_hold_every_seed(seeded_study):
    out, _, _, table = seeded_study
    cells = json.loads((out / "report" / "table.json").read_text())["cells"]
    zero = next(c for c in cells if c["method"] == "mtl-t" and c["shots"] == 0)
    args = [load_run(out / "runs" / "0shot" / "mtl-t" / f"seed-{s}").arg().value for s in (0, 1)]
    assert zero["pretrain_seeds"] == [0, 1] and zero["args"] == pytest.approx(args)
    assert zero["arg_mean"] == pytest.approx(sum(args) / 2)
    few = next(c for c in cells if c["method"] == "mtl-t" and c["shots"] == 16)
    assert few["pretrain_seeds"] == [0, 0, 1, 1] and few["seeds"] == [0, 1] * 2
    base = next(c for c in cells if c["method"] == "none")
    assert base["pretrain_seeds"] == [None] and base["test"] == "hierarchical"
    assert "2 pretraining seed(s) per continued-pretraining row, 2 few-shot run(s) per seed" in table


@pytest.mark.slow
def test_resumes_per_seed_and_reports_only_the_plans_seeds(seeded_study):
    out, plan, _, _ = seeded_study
    (out / "models" / "mtl-t" / "seed-1" / "promptability.json").unlink()
    stages = Stages("test")
    run_plan(plan, out, stages, progress=False)
    assert [name for name, _, reused in stages.timings if not reused] == ["pretrain mtl-t (seed 1)"]
    one = write_tables(out, stages, "one seed", baseline="mtl-t", partial=False, pretrain_seeds=[0])
    assert "1 pretraining seed(s) per continued-pretraining row" in one
    cells = json.loads((out / "report" / "table.json").read_text())["cells"]
    assert {s for c in cells for s in c["pretrain_seeds"]} == {None, 0}


@pytest.mark.slow
def test_a_seeded_row_is_one_model_per_seed_and_rows_start_from_their_seeds_model(tmp_path):
    """The demo's base is LM-adapted per seed: each row's seed p continues from base/seed-p, and the base row is
    evaluated (and reported) per seed like a trained row."""
    from promptability.data.suite_layout import read_meta
    from promptability.model import load_model
    from promptability.suite.generate import write_suite

    suite, base = tmp_path / "suite", tmp_path / "models" / "base"
    write_suite(suite, seed=0, size="quick", progress=False)
    for seed in (0, 1):
        load_model("tiny", seed=seed).save(base / f"seed-{seed}")
    heldout = sorted(t for t, info in read_meta(suite)["templates"].items() if info["role"] == "heldout")[:1]
    tune = replace(_fewshot_config(QUICK, "shallow", "none", heldout), epochs=1, seeds=[0])
    plan = replace(seed_plan(suite, base, heldout, [0, 1]), fewshot=[("base", str(base), tune)], seeded_rows=["base"])
    plan = replace(plan, pretrain=[(r, replace(c, max_steps=1)) for r, c in plan.pretrain])
    stages = Stages("test")
    run_plan(plan, tmp_path, stages, progress=False)
    for seed in (0, 1):
        trained = json.loads((tmp_path / "models" / "mtl-t" / f"seed-{seed}" / "train.json").read_text())
        assert trained["base_model"] == str(base / f"seed-{seed}")
        run = load_run(tmp_path / "runs" / "0shot" / "base" / f"seed-{seed}")
        assert (run.pretrain_seed, run.model_family, run.model) == (seed, str(base), str(base / f"seed-{seed}"))
        tuned = load_run(tmp_path / "runs" / "16shot" / "base-shallow" / f"pseed-{seed}" / "seed-0")
        assert (tuned.pretrain_seed, tuned.model) == (seed, str(base / f"seed-{seed}"))  # tuned from its seed's base
    assert not (tmp_path / "runs" / "0shot" / "base" / "run.json").exists()
    scores = [(tmp_path / "runs" / "0shot" / "base" / f"seed-{s}" / "predictions.jsonl").read_text() for s in (0, 1)]
    assert scores[0] != scores[1]  # two bases, two models: other log-likelihoods


def test_a_row_cannot_be_trained_and_seeded(tmp_path):
    plan = seed_plan(tmp_path, tmp_path, [], [0])
    with pytest.raises(ValueError, match=r"rows \['mtl-t'\] are trained by the plan"):
        replace(plan, seeded_rows=["mtl-t"])


def test_pretrain_seeds_are_checked(tmp_path):
    for bad in ([], [0, 0], [-1], [True]):
        with pytest.raises(ValueError, match="pretrain_seeds must be distinct integers >= 0"):
            seed_plan(tmp_path, tmp_path, [], bad)
