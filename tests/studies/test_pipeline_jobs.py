"""Stages in worker processes (``--jobs``): the same digits as in order, failures named, resumption, threads."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pytest
import torch

from promptability.io import write_json_atomic
from promptability.studies.pipeline import StageError, Stages, run_plan


def _stage(marker: Path, broken: Path) -> None:
    """A stage that leaves a trace of each attempt, fails while ``broken`` exists, else writes its marker."""
    (marker.parent / f"{marker.stem}.attempt-{os.getpid()}-{len(list(marker.parent.glob('*.attempt-*')))}").touch()
    if broken.exists():
        raise ValueError(f"{broken.name} is there")
    write_json_atomic(marker, {"threads": torch.get_num_threads(), "pid": os.getpid()})


def _items(folder: Path, names: list[str], broken: Path) -> list[tuple[str, Path, partial[None]]]:
    return [(name, folder / f"{name}.json", partial(_stage, folder / f"{name}.json", broken)) for name in names]


def _attempts(folder: Path, name: str) -> int:
    return len(list(folder.glob(f"{name}.attempt-*")))


def test_a_failing_stage_is_named_and_a_rerun_resumes(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.touch()
    items = _items(tmp_path, ["a"], tmp_path / "never") + _items(tmp_path, ["b"], broken)
    stages = Stages("test")
    with pytest.raises(StageError, match=r"stage 'b' failed: ValueError: broken is there") as raised:
        stages.run_phase("phase", items, jobs=2, threads=1, progress=False)
    assert isinstance(raised.value.__cause__, ValueError)
    # "a" was running beside "b" (2 workers): it finished, whole, and is not run again
    assert json.loads((tmp_path / "a.json").read_text())["threads"] == 1
    assert not (tmp_path / "b.json").exists()
    assert (_attempts(tmp_path, "a"), _attempts(tmp_path, "b")) == (1, 1)

    broken.unlink()
    again = Stages("test")
    again.run_phase("phase", items, jobs=2, threads=1, progress=False)
    assert [(n, r) for n, _, r in again.timings] == [("a", True), ("b", False)]
    assert (_attempts(tmp_path, "a"), _attempts(tmp_path, "b")) == (1, 2)
    printed = capsys.readouterr().out
    assert "[test] a: done earlier, reused" in printed and "[test] b: " in printed and "(1/1)" in printed
    assert again.phases[0]["phase"] == "phase" and again.phases[0]["stages"] == 2


def test_workers_are_kept_between_phases_until_close_or_a_failure(tmp_path):
    never, broken = tmp_path / "never", tmp_path / "broken"
    stages = Stages("test")
    pools, pids = [], set()
    for phase in ("one", "two"):
        (tmp_path / phase).mkdir()
        stages.run_phase(phase, _items(tmp_path / phase, ["a", "b", "c"], never), jobs=2, threads=1, progress=False)
        assert stages._workers is not None
        pools.append(stages._workers[1])
        pids |= {json.loads((tmp_path / phase / f"{n}.json").read_text())["pid"] for n in "abc"}
    assert pools[0] is pools[1]  # the second phase ran in the first one's workers
    workers = {p.pid for p in pools[0]._processes.values()}
    assert pids <= workers and os.getpid() not in pids
    broken.touch()
    (tmp_path / "three").mkdir()
    with pytest.raises(StageError):
        stages.run_phase("three", _items(tmp_path / "three", ["a"], broken), jobs=2, threads=1, progress=False)
    assert stages._workers is None  # a failed phase stops its workers
    (tmp_path / "four").mkdir()
    stages.run_phase("four", _items(tmp_path / "four", ["a"], never), jobs=2, threads=1, progress=False)
    assert json.loads((tmp_path / "four" / "a.json").read_text())["pid"] not in workers
    assert stages._workers is not None
    fresh = list(stages._workers[1]._processes.values())
    with stages:  # the runner as a context manager closes its workers
        pass
    assert stages._workers is None and fresh and not any(p.is_alive() for p in fresh)
    stages.close()  # a second close does nothing


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_are_set_in_the_workers_and_around_stages_in_process(tmp_path, threads):
    before = torch.get_num_threads()
    never = tmp_path / "never"
    for jobs in (1, 2):
        folder = tmp_path / f"jobs-{jobs}"
        folder.mkdir()
        Stages("test").run_phase("phase", _items(folder, ["a", "b", "c"], never), jobs=jobs, threads=threads,
                                 progress=False)  # fmt: skip
        records = [json.loads((folder / f"{n}.json").read_text()) for n in "abc"]
        assert [r["threads"] for r in records] == [threads] * 3
        pids = {r["pid"] for r in records}
        assert pids == {os.getpid()} if jobs == 1 else os.getpid() not in pids
        assert torch.get_num_threads() == before  # restored after each in-process stage


def test_no_threads_leaves_torchs_default(tmp_path):
    torch_default = torch.get_num_threads()
    Stages("test").run_phase("phase", _items(tmp_path, ["a"], tmp_path / "never"), jobs=1, progress=False)
    assert json.loads((tmp_path / "a.json").read_text())["threads"] == torch_default


@pytest.mark.parametrize(("jobs", "threads"), [(0, None), (True, None), (1.5, None), (1, 0), (2, "1")])
def test_bad_jobs_and_threads_are_refused(tmp_path, jobs, threads):
    from tests.studies.test_pipeline_seeds import seed_plan

    plan = seed_plan(tmp_path, tmp_path, ["t"], [0])
    with pytest.raises(ValueError, match="must be"):
        run_plan(plan, tmp_path, Stages("test"), progress=False, jobs=jobs, threads=threads)


def _predictions(out: Path) -> dict[str, bytes]:
    files = sorted(out.glob("runs/**/predictions.jsonl")) + sorted(out.glob("instrument/**/predictions.jsonl"))
    assert files  # nothing compared would make the test pass on its own
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


@pytest.mark.slow
def test_a_plan_gives_the_same_digits_in_order_and_in_two_processes(tmp_path):
    """One pretrained row, 0-shot and 16-shot runs: byte-identical predictions and table at jobs 1 and 2."""
    from tests.studies.test_pipeline_seeds import seed_plan

    from promptability.data.suite_layout import read_meta
    from promptability.model import load_model
    from promptability.studies.pipeline import write_tables
    from promptability.suite.generate import write_suite

    suite, base = tmp_path / "suite", tmp_path / "base"
    write_suite(suite, seed=0, size="quick", progress=False)
    load_model("tiny", seed=0).save(base)
    heldout = sorted(t for t, info in read_meta(suite)["templates"].items() if info["role"] == "heldout")[:2]
    outs = []
    for jobs in (1, 2):
        out = tmp_path / "out"  # the same folder for both (the report names its runs' paths), moved away after
        stages = Stages("test")
        run_plan(seed_plan(suite, base, heldout, [0]), out, stages, progress=False, jobs=jobs, threads=1)
        write_tables(out, stages, "parity", baseline="mtl-t", partial=True)
        timings = json.loads((out / "timings.json").read_text())
        assert (timings["jobs"], timings["threads"]) == (jobs, 1)
        assert [p["phase"] for p in timings["phases"]] == ["pretraining", "0-shot", "16-shot"]
        assert all(s["seconds"] > 0 for s in timings["stages"])
        outs.append(out.rename(tmp_path / f"jobs-{jobs}"))
    assert _predictions(outs[0]) == _predictions(outs[1])
    assert (outs[0] / "report" / "table.json").read_bytes() == (outs[1] / "report" / "table.json").read_bytes()


@pytest.mark.slow
def test_the_quick_demo_table_is_the_same_for_any_jobs(tmp_path):
    from promptability.studies.demo import run_demo

    tables = []
    for jobs in (1, 2):  # in the same folder (the report names its runs' paths), moved away after
        tables.append(run_demo(tmp_path / "out", scale="quick", progress=False, jobs=jobs))
        (tmp_path / "out").rename(tmp_path / f"jobs-{jobs}")
    assert tables[0] == tables[1]
    one, two = tmp_path / "jobs-1", tmp_path / "jobs-2"
    assert (one / "report" / "table.json").read_bytes() == (two / "report" / "table.json").read_bytes()
    assert (one / "report" / "instrument.json").read_bytes() == (two / "report" / "instrument.json").read_bytes()
    assert _predictions(one) == _predictions(two)
    assert [json.loads((o / "timings.json").read_text())["jobs"] for o in (one, two)] == [1, 2]


def test_jobs_option_reaches_the_demo(monkeypatch, tmp_path, capsys):
    import promptability.studies.demo as demo
    from promptability.cli import main
    from promptability.studies.pipeline import available_cores

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: calls.append(kw["jobs"]) or "table")
    assert main(["demo", "--quick", "--out", str(tmp_path), "--jobs", "3"]) == 0
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    assert calls == [3, available_cores()]  # the CLI's default; run_demo's own is 1 (no spawn from a bare script)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows: every core counts
    assert available_cores() == (os.cpu_count() or 1)
    with pytest.raises(SystemExit):
        main(["demo", "--jobs", "0"])
    assert "must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "changes the time, not the numbers" in " ".join(capsys.readouterr().out.split())
