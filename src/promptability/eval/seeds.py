"""The report's view of pretraining seeds: a cell's ARGs per seed, how many seeds the table holds, the JSON
fields of a cell's seeds, and the words for the significance test the report used."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from promptability.eval.metrics import GroupSpec, MetricsError
from promptability.eval.runs import Run, pooled_correctness, seed_correctness, split_by_pretrain_seed
from promptability.eval.significance import BootstrapResult, hierarchical_bootstrap, paired_bootstrap

__all__ = ["TESTS", "compare_runs", "seed_args", "seed_counts", "seed_record", "split_by_pretrain_seed", "test_text"]

# "hierarchical": eval.significance (pretraining seeds, few-shot runs, instances), each row's seeds drawn on their
# own; "paired-seeds": the same, drawing the same seeds for both rows, for studies where seed p of every row
# starts from one model (the demo: base p; pairing removes that model's share of the noise from a difference);
# "instances": instances only, of the runs' pooled correctness (eval.significance.paired_bootstrap), which leaves
# training noise out.
TESTS = ("hierarchical", "paired-seeds", "instances")


def compare_runs(
    runs_a: list[Run], runs_b: list[Run], groups: GroupSpec | None, *, test: str = "hierarchical", **options: Any
) -> BootstrapResult:
    """Significance of ARG(B) - ARG(A) between two configurations' runs by ``test`` (one of TESTS); the caller has
    checked that every run has the same instances and groups. ``options``: the bootstrap's (samples, seed, ...)."""
    chance = runs_a[0].chance  # the same instances on both sides
    if test in ("hierarchical", "paired-seeds"):
        paired = test == "paired-seeds"
        seeds_a, seeds_b = ({run.pretrain_seed for run in runs} for runs in (runs_a, runs_b))
        if paired and seeds_a != seeds_b:  # seeds are paired by position in seed order: the sets must match
            raise MetricsError(f"paired-seeds needs the same pretraining seeds on both sides: {seeds_a} vs {seeds_b}")
        return hierarchical_bootstrap(seed_correctness(runs_a), seed_correctness(runs_b), groups, chance=chance,
                                      paired_seeds=paired, **options)  # fmt: skip
    if test == "instances":
        return paired_bootstrap(
            pooled_correctness(runs_a), pooled_correctness(runs_b), groups, chance=chance, **options
        )
    raise MetricsError(f"test must be one of {TESTS}, got {test!r}")


def seed_args(runs: list[Run], args: list[float]) -> dict[int | None, list[float]]:
    """``args`` (one ARG per run, in ``runs``' order) per pretraining seed; None: a model without seeds."""
    arg_of = {id(run): value for run, value in zip(runs, args)}
    return {group[0].pretrain_seed: [arg_of[id(run)] for run in group] for group in split_by_pretrain_seed(runs)}


def seed_counts(cells: Iterable[tuple[list[Run], list[float], int]]) -> str:
    """How many pretraining seeds, and few-shot runs per seed, the cells (runs, args, shots) hold."""
    pseeds, per_seed = set(), set()
    for runs, args, shots in cells:
        if all(run.pretrain_seed is None for run in runs):
            continue
        by_seed = seed_args(runs, args)
        pseeds.add(len(by_seed))
        if shots > 0:
            per_seed |= {len(v) for v in by_seed.values()}
    if not pseeds:
        return "one model per row (no pretraining seeds)"
    text = f"{'/'.join(map(str, sorted(pseeds)))} pretraining seed(s) per continued-pretraining row"
    return text + (f", {'/'.join(map(str, sorted(per_seed)))} few-shot run(s) per seed" if per_seed else "")


def seed_record(runs: list[Run], args: list[float], test: str | None) -> dict[str, Any]:
    """A cell's table.json fields about its pretraining seeds, and the test that marked it (None: untested)."""
    per_seed = {seed: float(np.mean(values)) for seed, values in seed_args(runs, args).items()}
    means = list(per_seed.values())
    return {
        "pretrain_seeds": [run.pretrain_seed for run in runs],
        "arg_by_pretrain_seed": {"none" if k is None else str(k): v for k, v in per_seed.items()},
        "arg_std_over_pretrain_seeds": float(np.std(means, ddof=1)) if len(means) > 1 else None,
        "test": test,
    }


def test_text(test: str) -> str:
    """The legend's words for a report's significance test (eval.report.TESTS)."""
    seeds = {
        "hierarchical": "every row's pretraining seeds",
        "paired-seeds": "the pretraining seeds (the same for both rows, whose seed p starts from the same model)",
    }
    if test in seeds:
        return (
            f"hierarchical paired bootstrap: each resample draws {seeds[test]}, then each seed's few-shot runs, then "
            "the instances (the same for both rows)"
        )
    return "paired bootstrap over instances of the runs' pooled correctness (training noise not counted)"
