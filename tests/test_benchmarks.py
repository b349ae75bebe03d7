"""Smoke test of the benchmarks: every pair at a minuscule size, one repetition; no timing assertions."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = [
    "eval_2choices", "eval_4choices", "mtl_tokens_per_s", "meta_fomaml_time", "meta_fomaml_memory_vs_copy",
    "meta_fomaml_memory_vs_mtl", "meta_reptile_time", "meta_reptile_memory_vs_copy", "meta_reptile_memory_vs_mtl",
    "fewshot_step_time", "matmul_flops", "mtl_flops_fraction", "eval_causal_4choices",
]  # fmt: skip


@pytest.fixture(scope="module")
def results():
    pytest.importorskip("peft")
    from benchmarks import MINUSCULE, run_benchmarks

    # No offline suite (it takes ~10 s to generate); one thread: tiny ops gain nothing from more, and on a
    # shared 2-core machine OpenMP threads spinning against other jobs make them a hundred times slower.
    return run_benchmarks(replace(MINUSCULE, suite_size=None), reps=1, device="cpu", progress=False, threads=1)


@pytest.mark.slow
def test_every_pair_has_its_rows_and_checks_pass(results):
    assert results.failed == [], results.notes
    keys = [r.key for r in results.rows]
    for key in EXPECTED:
        assert key in keys
    assert results.checks["eval_2choices"] is True and results.checks["eval_4choices"] is True  # same predictions
    assert results.checks == dict.fromkeys(results.checks, True)
    assert {"mtl_tokens_per_s", "meta_fomaml_time", "meta_reptile_time", "fewshot_step_time"} <= set(results.checks)
    for key in ("eval_4choices", "mtl_tokens_per_s", "fewshot_step_time", "meta_fomaml_memory_vs_mtl"):
        row = results.row(key)
        assert row.ratio is not None and row.ratio.n == 1 and math.isfinite(row.ratio.median) and row.ratio.median > 0
        assert row.met in (True, False) and row.target
    assert any("offline suite: skipped" in n for n in results.notes)
    assert results.info["device"] == "cpu" and results.info["torch"] == torch.__version__


@pytest.mark.slow
def test_markdown_sections_are_replaced_not_duplicated(results, tmp_path):
    from benchmarks import METHODS
    from benchmarks.report import write_markdown

    out = tmp_path / "BENCHMARKS.md"
    out.write_text("old text that is not a section\n")
    write_markdown(out, results, METHODS)
    other = replace(results, info={**results.info, "device": "cuda: Some GPU"})
    write_markdown(out, other, METHODS)
    write_markdown(out, results, METHODS)
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "old text" not in text
    assert (
        text.count("<!-- bench:cpu-minuscule-fp32 -->") == 1 and text.count("<!-- bench:cuda-minuscule-fp32 -->") == 1
    )
    assert text.index("bench:cpu-") < text.index("bench:cuda-")
    assert "| 1 evaluation | rank classification, 4 choices" in text and "predictions identical" in text


def test_padding_fraction_from_lengths_matches_collated_batches():
    from benchmarks.padding import fractions, padding_from_lengths

    from promptability.data.batching import collate, padding_fraction

    rng = np.random.default_rng(0)
    lengths = np.stack([rng.integers(1, 40, 50), rng.integers(1, 9, 50)], axis=1)
    batches = [np.arange(i, min(i + 8, 50)) for i in range(0, 50, 8)]
    rows = [{"input_ids": [5] * int(s), "labels": [5] * int(t)} for s, t in lengths]
    collated = [collate([rows[i] for i in b], pad_id=0) for b in batches]
    assert padding_from_lengths(lengths, batches) == pytest.approx(padding_fraction(collated))
    grouped, random, _ = fractions(lengths)
    assert 0 <= grouped < random < 1


def test_p3_sample_lengths():
    from benchmarks.padding import p3_lengths, p3_samples_dir

    root = p3_samples_dir()
    if root is None:
        pytest.skip("../shared/p3/samples is not beside the repository")
    lengths, templates = p3_lengths(root)
    assert templates >= 1 and lengths.shape[1] == 2 and len(lengths) > 0 and lengths.min() >= 1


def test_bad_arguments_are_named():
    from benchmarks import run_benchmarks

    with pytest.raises(ValueError, match="--size"):
        run_benchmarks("huge")
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_benchmarks("tiny", only=["nope"])
    with pytest.raises(ValueError, match="--reps"):
        run_benchmarks("tiny", reps=0)


def test_a_failing_pair_is_reported_and_the_rest_still_run(monkeypatch):
    from benchmarks import MINUSCULE, fewshot, run_benchmarks

    def broken(settings, context):
        raise ImportError("cannot import name 'x'")

    monkeypatch.setattr(fewshot, "run", broken)
    out = run_benchmarks(replace(MINUSCULE, suite_size=None), reps=1, device="cpu", progress=False, threads=1,
                         only=["fewshot", "flops"])  # fmt: skip
    assert out.failed == ["fewshot"] and any("'fewshot' FAILED: ImportError" in n for n in out.notes)
    assert {"mtl_tokens_per_s", "matmul_flops", "mtl_flops_fraction"} <= {r.key for r in out.rows}
    assert out.partial == "mtl,fewshot,flops"


@pytest.mark.slow
def test_cli_entry_points_parse():
    from benchmarks.runner import add_arguments

    args = add_arguments(argparse.ArgumentParser()).parse_args(["--size", "base", "--reps", "3", "--device", "cpu",
                                                                "--bf16"])  # fmt: skip
    assert (args.size, args.reps, args.device, args.bf16, args.out) == ("base", 3, "cpu", True, "BENCHMARKS.md")
    for module in ("benchmarks", "benchmarks.mtl"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0 and "--size" in done.stdout and "large" in done.stdout


def test_benchmarks_are_not_a_package_command():
    from promptability.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench"])
