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
