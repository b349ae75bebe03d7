"""The instrument check's statistics and verdict, on predictions whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptability.studies import instrument as ins
from promptability.studies.instrument import (
    CEILING_MAX_P,
    GroupResult,
    above_chance_p,
    arg,
    group_results,
    render,
    verdict,
)


def _binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def _old_instance_bootstrap(excess: np.ndarray, samples: int = 10_000, seed: int = 0) -> float:
    """The instrument's p before the ceiling went over pretraining seeds (ceiling v1), verbatim: the reference
    the hierarchical bootstrap must reproduce with one seed."""
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 1000):
        idx = rng.integers(0, len(excess), size=(min(1000, samples - start), len(excess)))
        means[start : start + len(idx)] = excess[idx].mean(axis=1)
    return float((1 + np.count_nonzero(means <= 0.0)) / (1 + samples))


def test_above_chance_p_matches_the_binomial_tail_for_independent_instances():
    # 200 independent 2-way instances, 116 right: the exact one-sided binomial p is 0.0141.
    correct = np.array([1.0] * 116 + [0.0] * 84)
    exact = _binomial_tail(116, 200)
    assert exact == pytest.approx(0.0141, abs=1e-4)
    assert above_chance_p([correct], 0.5) == pytest.approx(exact, rel=0.35)
    # Far above chance: no resample falls to chance, so p is the smallest the resamples can show.
    assert above_chance_p([np.ones(50)], 0.5, samples=999) == 1 / 1000
    assert above_chance_p([np.zeros(50)], 0.5, samples=999) == 1.0
    assert above_chance_p([correct], 0.5) == above_chance_p([correct], 0.5)  # seeded
    with pytest.raises(ValueError, match="non-empty 1-D"):
        above_chance_p([np.array([])], 0.5)
    with pytest.raises(ValueError, match="one length"):
        above_chance_p([np.ones(5), np.ones(6)], 0.5)


def test_one_seed_is_the_old_instance_bootstrap_to_the_last_bit():
    rng = np.random.default_rng(7)
    for n, chance, right in ((150, 0.5, 0.56), (37, 0.5, 0.5), (150, 0.25, 0.3)):
        correct = (rng.random((4, n)) < right).mean(axis=0)  # 4 templates' mean per instance
        for samples in (999, 10_000):
            assert above_chance_p([correct], chance, samples) == _old_instance_bootstrap(correct - chance, samples)
    # and through group_results on prediction rows: the old p of the same instances, in the same order
    meta = _meta(a1=("A", 2), a2=("A", 2))
    hits = rng.random((2, 150)) < 0.55
    rows = _rows("a1", 2, list(hits[0])) + _rows("a2", 2, list(hits[1]))
    (a,) = group_results([rows], meta).values()
    assert a.p_above_chance == _old_instance_bootstrap(hits.mean(axis=0) - 0.5)
    assert 0.001 < a.p_above_chance < 0.5 and a.seed_accuracies == ()


def test_a_seed_at_chance_weakens_the_ceiling():
    """The seed level is resampled: one seed far above chance and one at chance is weaker evidence than two far
    above, although the instances of the mixed pair are, on average, still well above chance."""
    far, at_chance = np.array([1.0] * 120 + [0.0] * 30), np.array([1.0, 0.0] * 75)
    both = above_chance_p([far, far[::-1]], 0.5)
    mixed = above_chance_p([far, at_chance], 0.5)
    assert both == 1 / 10_001  # no resample of either seed falls to chance
    # a quarter of the resamples draw the chance seed twice, and about half of those fall to chance
    assert 0.09 < mixed < 0.16
    assert mixed > CEILING_MAX_P > both
    assert above_chance_p([far], 0.5) == 1 / 10_001


def _meta(**groups: tuple[str, int]) -> dict:
    return {"templates": {t: {"group": g, "dataset": g.lower(), "num_choices": k} for t, (g, k) in groups.items()}}


def _rows(task: str, k: int, correct: list[bool]) -> list[dict]:
    return [{"task": task, "index": i, "scores": [0.0] * k, "prediction": 0 if c else 1, "label": 0}
            for i, c in enumerate(correct)]  # fmt: skip


def test_group_results_means_gains_and_instances():
    meta = _meta(a1=("A", 2), a2=("A", 2), b=("B", 4))
    rows = _rows("a1", 2, [True] * 30 + [False] * 10) + _rows("a2", 2, [True] * 20 + [False] * 20)
    rows += _rows("b", 4, [True] * 10 + [False] * 30)
    out = group_results([rows], meta)
    assert list(out) == ["A", "B"]
    a, b = out["A"], out["B"]
    # A: templates at 75% and 50% of chance 50% -> gains +50% and 0% -> +25%; both render the same 40 instances.
    assert (a.templates, a.instances, a.chance) == (2, 40, 0.5)
    assert a.accuracy == pytest.approx(62.5) and a.gain == pytest.approx(25.0)
    assert (b.templates, b.instances, b.chance, b.accuracy, b.gain) == (1, 40, 0.25, 25.0, 0.0)
    assert arg(out) == pytest.approx(12.5)
    # The instance, not the template, is the unit: A's first 20 instances are right in both templates.
    per_instance = np.array([1.0] * 20 + [0.5] * 10 + [0.0] * 10)
    assert a.p_above_chance == above_chance_p([per_instance], 0.5)
    assert b.p_above_chance > 0.4
    with pytest.raises(ValueError, match="'c'"):
        group_results([_rows("c", 2, [True])], meta)
    with pytest.raises(ValueError, match="a list of runs"):
        group_results(rows, meta)  # type: ignore[arg-type]


def test_group_results_over_pretraining_seeds():
    meta = _meta(a1=("A", 2), a2=("A", 2))
    seed0 = _rows("a1", 2, [True] * 30 + [False] * 10) + _rows("a2", 2, [True] * 20 + [False] * 20)
    seed1 = _rows("a1", 2, [True] * 40) + _rows("a2", 2, [True] * 36 + [False] * 4)
    (a,) = group_results([seed0, seed1], meta).values()
    # seed 0: 62.5% (gain +25); seed 1: 95% (gain +90): the means, and each seed's accuracy
    assert a.seed_accuracies == pytest.approx((62.5, 95.0))
    assert (a.accuracy, a.gain, a.instances) == (pytest.approx(78.75), pytest.approx(57.5), 40)
    assert a.accuracy_text() == "78.8 (62.5-95.0)"
    per_instance = [np.array([1.0] * 20 + [0.5] * 10 + [0.0] * 10), np.array([1.0] * 36 + [0.5] * 4)]
    assert a.p_above_chance == above_chance_p(per_instance, 0.5)
    with pytest.raises(ValueError, match="differ in group A"):
        group_results([seed0, seed1[:-1]], meta)


def _result(group: str, gain: float, p: float, chance: float = 0.5, seeds: tuple[float, ...] = ()) -> GroupResult:
    return GroupResult(group, 4, 150, chance, 100 * chance * (1 + gain / 100), gain, p, seeds)


def test_verdict_names_every_failed_criterion_with_its_version():
    floor = {"A": _result("A", 2.0, 0.3), "B": _result("B", -4.0, 0.9)}
    ceiling = {"A": _result("A", 60.0, 1e-4, seeds=(79.0, 81.0)), "B": _result("B", 30.0, 0.001, seeds=(64.0, 66.0))}
    assert verdict(floor, ceiling) == []
    assert "valid (every criterion holds)" in render(floor, ceiling)
    floor["B"] = _result("B", ins.FLOOR_MAX_GROUP_GAIN + 10, 0.01)  # ARG +13.5: both floor criteria fail
    ceiling["B"] = _result("B", 4.0, 0.2, seeds=(50.0, 54.0))  # ARG 32 < 40, and B is not significant
    failed = verdict(floor, ceiling)
    assert failed == [
        "floor v2: base 0-shot ARG +13.5, outside +-5 (over 1 base)",
        "floor v2: B +25.0 above chance (> 15, over 1 base)",
        "ceiling v2: oracle ARG +32.0 < 40 (over 2 pretraining seeds)",
        "ceiling v2: B not above chance (p = 0.2 >= 0.05, over 2 pretraining seeds)",
    ]
    table = render(floor, ceiling)
    assert "| B | 4 | 150 | 50.0 | 62.5 | +25.0 | 0.01 | 52.0 (50.0-54.0) | +4.0 | 0.2 |" in table
    assert "| **ARG** | | | | | **+13.5** | | | **+32.0** | |" in table and "NOT valid" in table
    assert "2 pretraining seeds" in table and "ceiling v2: ARG (mean over the oracle's pretraining seeds)" in table
    one = {g: _result(g, r.gain, r.p_above_chance) for g, r in ceiling.items()}
    assert verdict(floor, one)[-1] == "ceiling v2: B not above chance (p = 0.2 >= 0.05, over 1 pretraining seed)"


def test_probe_results_over_bases():
    one = _rows("probe_gender", 2, [True] * 30 + [False] * 10) + _rows("probe_scripts", 2, [True] * 20 + [False] * 20)
    two = _rows("probe_gender", 2, [True] * 40) + _rows("probe_scripts", 2, [False] * 40)
    out = ins.probe_results([one, two])
    assert list(out) == ["gender", "scripts"]
    assert out["gender"]["accuracy"] == pytest.approx(87.5) and out["scripts"]["accuracy"] == pytest.approx(25.0)
    gender = [np.array([1.0] * 30 + [0.0] * 10), np.ones(40)]
    assert out["gender"]["p_above_chance"] == above_chance_p(gender, 0.5) < 0.01
    assert ins.probe_results([one])["gender"]["p_above_chance"] == above_chance_p(gender[:1], 0.5)
    with pytest.raises(ValueError, match="differ in their records"):
        ins.probe_results([one, two[:-1]])


def test_every_probe_kind_names_a_held_out_group_of_the_suite():
    from promptability.suite.tasks import CLUSTERS, DATASETS

    records = ins.knowledge_probes(n=20)
    kinds = {r["task"].removeprefix("probe_") for r in records}
    assert kinds == set(ins.PROBE_GROUPS)
    assert set(ins.PROBE_GROUPS.values()) == {d.group for d in DATASETS if CLUSTERS[d.cluster][0] == "heldout"}
    for kind in kinds:
        labels = [r["label"] for r in records if r["task"] == f"probe_{kind}"]
        assert labels.count(0) == labels.count(1) == 10
        assert all(r["target"] == r["choices"][r["label"]] for r in records)
