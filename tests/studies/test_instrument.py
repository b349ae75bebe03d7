"""The instrument check's statistics and verdict, on predictions whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptability.studies import instrument as ins
from promptability.studies.instrument import GroupResult, above_chance_p, arg, group_results, render, verdict


def _binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def test_above_chance_p_matches_the_binomial_tail_for_independent_instances():
    # 200 independent 2-way instances, 116 right: the exact one-sided binomial p is 0.0141.
    excess = np.array([0.5] * 116 + [-0.5] * 84)
    exact = _binomial_tail(116, 200)
    assert exact == pytest.approx(0.0141, abs=1e-4)
    assert above_chance_p(excess) == pytest.approx(exact, rel=0.35)
    # Far above chance: no resample falls to chance, so p is the smallest the resamples can show.
    assert above_chance_p(np.full(50, 0.5), samples=999) == 1 / 1000
    assert above_chance_p(np.full(50, -0.5), samples=999) == 1.0
    assert above_chance_p(excess) == above_chance_p(excess)  # seeded
    with pytest.raises(ValueError, match="non-empty 1-D"):
        above_chance_p(np.array([]))


def _meta(**groups: tuple[str, int]) -> dict:
    return {"templates": {t: {"group": g, "dataset": g.lower(), "num_choices": k} for t, (g, k) in groups.items()}}


def _rows(task: str, k: int, correct: list[bool]) -> list[dict]:
    return [{"task": task, "index": i, "scores": [0.0] * k, "prediction": 0 if c else 1, "label": 0}
            for i, c in enumerate(correct)]  # fmt: skip


def test_group_results_means_gains_and_instances():
    meta = _meta(a1=("A", 2), a2=("A", 2), b=("B", 4))
    rows = _rows("a1", 2, [True] * 30 + [False] * 10) + _rows("a2", 2, [True] * 20 + [False] * 20)
    rows += _rows("b", 4, [True] * 10 + [False] * 30)
    out = group_results(rows, meta)
    assert list(out) == ["A", "B"]
    a, b = out["A"], out["B"]
    # A: templates at 75% and 50% of chance 50% -> gains +50% and 0% -> +25%; both render the same 40 instances.
    assert (a.templates, a.instances, a.chance) == (2, 40, 0.5)
    assert a.accuracy == pytest.approx(62.5) and a.gain == pytest.approx(25.0)
    assert (b.templates, b.instances, b.chance, b.accuracy, b.gain) == (1, 40, 0.25, 25.0, 0.0)
    assert arg(out) == pytest.approx(12.5)
    # The instance, not the template, is the unit: A's first 20 instances are right in both templates.
    per_instance = np.array([0.5] * 20 + [0.0] * 10 + [-0.5] * 10)
    assert a.p_above_chance == above_chance_p(per_instance)
    assert b.p_above_chance > 0.4
    with pytest.raises(ValueError, match="'c'"):
        group_results(_rows("c", 2, [True]), meta)


def _result(group: str, gain: float, p: float, chance: float = 0.5) -> GroupResult:
    return GroupResult(group, 4, 150, chance, 100 * chance * (1 + gain / 100), gain, p)


def test_verdict_names_every_failed_criterion():
    floor = {"A": _result("A", 2.0, 0.3), "B": _result("B", -4.0, 0.9)}
    ceiling = {"A": _result("A", 60.0, 1e-4), "B": _result("B", 30.0, 0.001)}
    assert verdict(floor, ceiling) == []
    assert "valid (every criterion holds)" in render(floor, ceiling)
    floor["B"] = _result("B", ins.FLOOR_MAX_GROUP_GAIN + 10, 0.01)  # ARG +13.5: both floor criteria fail
    ceiling["B"] = _result("B", 4.0, 0.2)  # ARG 32 < 40, and B is not significant
    failed = verdict(floor, ceiling)
    assert failed == [
        "floor: base 0-shot ARG +13.5, outside +-5",
        "floor: B +25.0 above chance (> 15)",
        "ceiling: oracle ARG +32.0 < 40",
        "ceiling: B not above chance (p = 0.2 >= 0.05)",
    ]
    table = render(floor, ceiling)
    assert "| B | 4 | 150 | 50.0 | 62.5 | +25.0 | 0.01 | 52.0 | +4.0 | 0.2 |" in table
    assert "| **ARG** | | | | | **+13.5** | | | **+32.0** | |" in table and "NOT valid" in table
