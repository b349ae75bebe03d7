"""scripts/fewshot_sweep.py: the few-shot recipe sweep of docs/study-real.md, its choice rule and a toy run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from promptability.io import write_jsonl_atomic

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fewshot_sweep.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("fewshot_sweep", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def point(epochs: int, lr: float, mean: float) -> dict[str, float]:
    return {"epochs": epochs, "lr": lr, "mean": mean}


@pytest.mark.parametrize(
    ("grid", "chosen"),
    [
        # the best mean wins
        ([point(6, 1e-3, 0.50), point(6, 1e-2, 0.60), point(12, 1e-3, 0.55)], (6, 1e-2)),
        # twice the epochs must beat the best short point by 2 points ...
        ([point(6, 1e-2, 0.60), point(12, 1e-3, 0.615)], (6, 1e-2)),
        # ... and then the best of the longer points wins
        ([point(6, 1e-2, 0.60), point(12, 1e-3, 0.63), point(12, 1e-2, 0.65)], (12, 1e-2)),
        # within a point of the best, the smaller learning rate
        ([point(6, 1e-3, 0.595), point(6, 3e-3, 0.60), point(6, 1e-2, 0.58)], (6, 1e-3)),
        # the boundaries count, whatever the floating-point sums give: exactly 2 points more, exactly 1 point less
        ([point(6, 1e-2, 0.28), point(12, 1e-2, 0.30)], (12, 1e-2)),
        ([point(6, 3e-3, 0.10), point(6, 1e-3, 0.09)], (6, 1e-3)),
        # a longer point short of the margin is never chosen, even within a point of an eligible longer one
        ([point(6, 1e-2, 0.60), point(12, 1e-3, 0.615), point(12, 1e-2, 0.625)], (12, 1e-2)),
    ],
)
def test_the_choice_rule(sweep, grid, chosen):
    picked = sweep.choose(grid)
    assert (picked["epochs"], picked["lr"]) == chosen


def test_a_toy_sweep_writes_its_table_and_choice(sweep, tmp_path, capsys):
    study = tmp_path / "study"
    for name, (yes, no) in {"toy_a": ("yes", "no"), "toy_b": ("true", "false")}.items():
        rows = [{"task": name, "source": f"Is {i} even?", "target": (yes, no)[i % 2], "choices": [yes, no],
                 "label": i % 2} for i in range(26)]  # fmt: skip
        write_jsonl_atomic(study / "train" / f"{name}.jsonl", rows)
    out = tmp_path / "sweep"
    argv = ["--data", str(study), "--out", str(out), "--model", "tiny", "--templates", "toy_a", "toy_b",
            "--epochs", "1", "2", "--lr", "1e-3", "--pool", "16", "--precision", "fp32", "--quiet"]  # fmt: skip
    assert sweep.main(argv) == 0
    result = json.loads((out / "sweep.json").read_text())
    assert [(g["epochs"], g["lr"]) for g in result["grid"]] == [(1, 1e-3), (2, 1e-3)]
    assert sorted(result["zero_shot"]) == ["toy_a", "toy_b"]
    for g in result["grid"]:  # the mean is over templates, each an accuracy on its 10 held-back rows
        assert g["mean"] == pytest.approx(sum(g["per_template"].values()) / 2)
        assert all(v * 10 == pytest.approx(round(v * 10)) for v in g["per_template"].values())
    assert result["chosen"] == sweep.choose(result["grid"])
    table = (out / "sweep.md").read_text()
    assert "| 0-shot |" in table and f"Chosen: {result['chosen']['epochs']} epochs" in table
    # the pools are the first 16 rows, the evaluation rows the other 10
    assert len((out / "data" / "train" / "toy_a.jsonl").read_text().splitlines()) == 16
    assert len((out / "data" / "validation" / "toy_a.jsonl").read_text().splitlines()) == 10
    assert result["evaluated"] == {"toy_a": 10, "toy_b": 10}
    finished = {p: p.stat().st_mtime_ns for p in out.glob("e*/seed-*/accuracy.json")}
    assert len(finished) == 2 and (out / "zero_shot.json").is_file()
    assert sweep.main(argv) == 0  # a rerun reuses the finished grid points
    assert {p: p.stat().st_mtime_ns for p in out.glob("e*/seed-*/accuracy.json")} == finished
    assert json.loads((out / "sweep.json").read_text())["grid"] == result["grid"]
    with pytest.raises(SystemExit, match=r"other settings \(pool\)"):  # another split in the same folder
        sweep.main([*argv[:-4], "8", "--precision", "fp32", "--quiet"])


def test_too_few_rows_are_refused(sweep, tmp_path):
    write_jsonl_atomic(tmp_path / "train" / "toy.jsonl", [{"task": "toy", "source": "s", "target": "a",
                                                           "choices": ["a", "b"], "label": 0}] * 20)  # fmt: skip
    with pytest.raises(SystemExit, match="too few"):
        sweep.build_data(tmp_path, tmp_path / "out", ["toy"], pool=16)
