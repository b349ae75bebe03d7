"""The README's first command, at --quick scale, through the real CLI: every stage, the report, resumption."""

import json

import pytest

from promptability.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end_then_reuses_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for label in ("No continued pretraining", "MTL-T", "MTL-P", "MTL-TP", "FOMAML", "Reptile"):
        assert f"| {label} |" in printed
    assert "shallow 16-shot" in printed and "deep 16-shot" in printed
    assert "Instrument check: floor and ceiling" in printed  # beside Table 1, not in it
    instrument = json.loads((out / "report" / "instrument.json").read_text())
    assert set(instrument["floor"]) == set(instrument["ceiling"]) == {"Coreference", "Completion", "WordSense"}
    for name in ("table.md", "table.csv", "table.json", "per_group_accuracy.png"):
        assert (out / "report" / name).stat().st_size > 0
    table = json.loads((out / "report" / "table.json").read_text())
    assert {c["method"] for c in table["cells"]} == {"none", "mtl-t", "mtl-p", "mtl-tp", "fomaml", "reptile"}
    seeds = sorted(p.name for p in (out / "runs" / "16shot" / "mtl-tp-deep-deep" / "pseed-0").glob("seed-*"))
    assert seeds == ["seed-0", "seed-1", "seed-2"]  # --quick: one pretraining seed, 3 few-shot seeds
    assert {c["test"] for c in table["cells"] if c["method"] != "mtl-t"} == {"paired-seeds"}  # seed p: base p
    first = json.loads((out / "timings.json").read_text())["stages"]
    assert not any(s["reused"] for s in first)

    # An interrupted stage: its marker never got written. Only that stage runs again.
    (out / "models" / "reptile-deep" / "seed-0" / "promptability.json").unlink()
    (out / "runs" / "0shot" / "reptile-deep" / "seed-0" / "run.json").unlink()
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    second = {s["stage"]: s["reused"] for s in json.loads((out / "timings.json").read_text())["stages"]}
    redone = {name for name, reused in second.items() if not reused}
    assert redone == {"pretrain reptile-deep (seed 0)", "0-shot reptile-deep (seed 0)", "report"}


@pytest.mark.slow
def test_quick_check_trains_only_the_base_and_the_oracle(tmp_path, capsys):
    out = tmp_path / "check"
    assert main(["demo", "--quick", "--check", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| **ARG** |" in printed and "Verdict:" in printed and "Knowledge probe of the bases" in printed
    assert sorted(p.name for p in (out / "models").iterdir()) == ["base", "oracle"]
    assert not (out / "runs").exists()
    oracle = json.loads((out / "models" / "oracle" / "seed-0" / "train_config.json").read_text())
    assert any("_coreference_" in t for t in oracle["data"]["tasks"]) and any(
        "_sentiment_" in t for t in oracle["data"]["tasks"]
    )
    stages = [s["stage"] for s in json.loads((out / "timings.json").read_text())["stages"]]
    assert stages[:3] == ["suite", "LM adaptation (base, seed 0)", "pretrain oracle (seed 0)"]
    assert sorted(stages[3:]) == [
        "0-shot base, seed 0 (instrument)",
        "0-shot oracle, seed 0 (instrument)",
        "knowledge probe of the base, seed 0 (instrument)",
    ]  # any order at --jobs > 1
    # another scale in the same folder is refused before any stage runs; more seeds are not another scale
    assert main(["demo", "--scale", "large", "--check", "--out", str(out), "--no-progress"]) == 2
    assert "other settings (" in capsys.readouterr().err
    # A second pretraining seed: a second base and oracle, trained and evaluated; the first are reused.
    assert main(["demo", "--quick", "--seeds", "2", "--check", "--out", str(out), "--no-progress"]) == 0
    stages = {s["stage"]: s["reused"] for s in json.loads((out / "timings.json").read_text())["stages"]}
    assert {name for name, reused in stages.items() if not reused} == {
        "LM adaptation (base, seed 1)", "pretrain oracle (seed 1)", "0-shot base, seed 1 (instrument)",
        "0-shot oracle, seed 1 (instrument)", "knowledge probe of the base, seed 1 (instrument)"}  # fmt: skip
    for family in ("base", "oracle"):
        assert sorted(p.name for p in (out / "models" / family).iterdir()) == ["seed-0", "seed-1"]
        assert sorted(p.name for p in (out / "instrument" / family).iterdir()) == ["seed-0", "seed-1"]
    seed1 = json.loads((out / "models" / "oracle" / "seed-1" / "train_config.json").read_text())
    assert seed1["seed"] == 1 and seed1["data"]["tasks"] == oracle["data"]["tasks"]
    assert seed1["model"] == str(out / "models" / "base" / "seed-1")  # each seed's oracle from its seed's base
    assert json.loads((out / "models" / "base" / "seed-1" / "train.json").read_text())["seed"] == 1
    instrument = json.loads((out / "report" / "instrument.json").read_text())
    assert instrument["pretrain_seeds"] == [0, 1] and instrument["criteria"] == {"floor": "v2", "ceiling": "v2"}
    assert all(len(g["seed_accuracies"]) == 2 for g in instrument["floor"].values())
    meta = json.loads((out / "suite" / "suite.json").read_text())
    accuracy = [json.loads((out / "instrument" / "oracle" / f"seed-{s}" / "accuracy.json").read_text()) for s in (0, 1)]
    for name, group in instrument["ceiling"].items():
        tasks = [t for t, info in meta["templates"].items() if info["group"] == name]
        per_seed = [100 * sum(acc[t] for t in tasks) / len(tasks) for acc in accuracy]  # each oracle's own run
        assert group["seed_accuracies"] == pytest.approx(per_seed)
        assert group["accuracy"] == pytest.approx(sum(per_seed) / 2)
    assert not (out / "runs").exists()


def test_seeds_option_reaches_the_demo_and_the_real_study(monkeypatch, tmp_path):
    """--seeds N means pretraining seeds 0..N-1; without it each study keeps its scale's own."""
    import promptability.studies.demo as demo
    import promptability.studies.real as real

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: calls.append(kw["pretrain_seeds"]) or "table")
    monkeypatch.setattr(real, "run_real_study", lambda *a, **kw: calls.append(a[4].pretrain_seeds) or "table")
    assert main(["demo", "--quick", "--out", str(tmp_path), "--seeds", "2"]) == 0
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert main(["study", "real", "--data", str(tmp_path), "--seeds", "3"]) == 0
    assert main(["study", "real", "--data", str(tmp_path)]) == 0
    assert calls == [[0, 1], None, [0, 1, 2], [0]]
    assert demo.Scale().pretrain_seeds == [0, 1] and demo.QUICK.pretrain_seeds == [0]


def test_scale_option_picks_a_preset(monkeypatch, tmp_path):
    import promptability.studies.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: calls.append(a[1]) or "table")
    for argv in (["--quick"], ["--scale", "large"], [], ["--scale", "quick"]):
        assert main(["demo", "--out", str(tmp_path), *argv]) == 0
    assert calls == ["quick", "large", "default", "quick"]
    large, default = demo.SCALES["large"], demo.SCALES["default"]
    assert large.lm_steps == default.lm_steps and large.lm_passages == default.lm_passages  # the same base model
    assert len(large.pretrain_seeds) == 3 and large.mtl_steps == 2 * default.mtl_steps
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown demo scale 'huge'"):
        demo.run_demo(tmp_path / "x", "huge")


def test_study_scale_option_picks_a_preset(monkeypatch, tmp_path):
    import promptability.studies.real as real

    calls = []
    monkeypatch.setattr(real, "run_real_study", lambda *a, **kw: calls.append(a[4]) or "table")
    for argv in (["--scale", "gpu"], ["--quick"], [], ["--scale", "gpu", "--seeds", "1"]):
        assert main(["study", "real", "--data", str(tmp_path), *argv]) == 0
    assert calls[:3] == [real.GPU, real.QUICK, real.StudyScale()]
    assert calls[3].pretrain_seeds == [0] and calls[3].mtl_steps == real.GPU.mtl_steps  # options refine a preset
    assert real.GPU.fewshot_epochs == 100 and len(real.GPU.pretrain_seeds) == 3 and real.GPU.eval_instances >= 64


def test_the_oracle_is_a_pretraining_row_never_a_table_row(tmp_path):
    """The oracle trains per pretraining seed like a Table-1 row, but is never evaluated as one (runs/ feeds
    Table 1); its mixture is the MTL-T row's plus the held-out templates."""
    from dataclasses import replace

    import promptability.studies.demo as demo
    from promptability.suite.generate import generate_suite

    meta = generate_suite(0, "quick").meta
    plan = demo._plan(tmp_path, demo.Scale(), meta)
    configs = dict(plan.pretrain)
    assert list(configs) == [row for row, _, _ in demo.ROWS] + ["oracle"]
    assert "oracle" not in {row for row, _, _ in plan.zero_shot} | {row for row, _, _ in plan.fewshot}
    oracle, mtl_t = configs["oracle"], configs["mtl-t"]
    heldout = [t for t, info in meta["templates"].items() if info["role"] == "heldout"]
    train = [t for t, info in meta["templates"].items() if info["role"] == "train"]
    assert mtl_t.data.tasks is None and sorted(oracle.data.tasks) == sorted(train + heldout)
    assert replace(oracle.data, tasks=None) == mtl_t.data
    assert oracle.model == mtl_t.model == str(tmp_path / "models" / "base")  # the family: seed p starts from seed-p
    assert plan.seeded_rows == ["base"] and ("base", "none", str(tmp_path / "models" / "base")) in plan.zero_shot
    same = {k: v for k, v in vars(oracle).items() if k != "data"}
    assert same == {k: v for k, v in vars(mtl_t).items() if k != "data"}  # steps, lr, batch: the MTL-T row's
    assert plan.pretrain_seeds == [0, 1]
