"""The hierarchical bootstrap: reduction to the instance bootstrap, seed noise that is not significance, a real
difference that is, determinism, and its inputs' checks."""

from __future__ import annotations

import numpy as np
import pytest

from promptability.eval.metrics import MetricsError
from promptability.eval.significance import _seed_weights, hierarchical_bootstrap, paired_bootstrap

GROUPS = {f"t{i}": {"group": f"g{i // 2}", "num_choices": 2} for i in range(4)}  # 2 groups of 2 templates
N = 400  # instances per template


def correct(accuracy: float, seed: int) -> np.ndarray:
    """Exactly round(accuracy * N) right answers, at places that vary with ``seed``."""
    out = np.zeros(N, dtype=bool)
    out[: round(accuracy * N)] = True
    return np.random.default_rng(seed).permutation(out)


def run(accuracy: float, seed: int) -> dict[str, np.ndarray]:
    return {t: correct(accuracy, seed * 10 + i) for i, t in enumerate(GROUPS)}


def side(accuracies: list[float], offset: int, draws: int = 1) -> list[list[dict[str, np.ndarray]]]:
    """One pretraining seed per accuracy, each with ``draws`` few-shot runs at that accuracy."""
    return [[run(acc, offset + 100 * p + f) for f in range(draws)] for p, acc in enumerate(accuracies)]


def arg(accuracy: float) -> float:
    return (accuracy * 2 - 1) * 100  # relative gain over chance 1/2, in percent


def test_one_run_per_side_is_the_instance_bootstrap_to_the_last_bit():
    a, b = run(0.55, 1), run(0.6, 2)
    old = paired_bootstrap(a, b, GROUPS, samples=300, seed=4)
    new = hierarchical_bootstrap([[a]], [[b]], GROUPS, samples=300, seed=4)
    assert {k: v for k, v in new.to_dict().items() if k in old.to_dict()} == old.to_dict()
    assert (new.test, new.pretrain_seeds_a, new.runs_b) == ("hierarchical", 1, 1)
    # chunks smaller than the samples draw the same indices as the instance bootstrap's chunks
    small = hierarchical_bootstrap([[a]], [[b]], GROUPS, samples=300, seed=4, max_cells=1000)
    chunked = paired_bootstrap(a, b, GROUPS, samples=300, seed=4, max_cells=1000)
    assert {k: v for k, v in small.to_dict().items() if k in old.to_dict()} == chunked.to_dict()


def test_identical_seed_runs_change_nothing():
    """Resampling seeds that agree exactly is no resampling: the pooled instance bootstrap, to float noise."""
    a, b = run(0.5, 1), run(0.58, 2)
    old = paired_bootstrap(a, b, GROUPS, samples=200, seed=0)
    new = hierarchical_bootstrap([[a, a], [a, a], [a, a]], [[b], [b]], GROUPS, samples=200, seed=0)
    for key in ("arg_a", "arg_b", "difference", "ci_low", "ci_high", "p_value", "p_worse"):
        assert getattr(new, key) == pytest.approx(getattr(old, key), abs=1e-9), key
    assert (new.pretrain_seeds_a, new.runs_a, new.pretrain_seeds_b, new.runs_b) == (3, 6, 2, 2)


def test_seed_noise_with_equal_true_means_is_not_significant_but_instances_alone_say_it_is():
    # Seed effects of +-12 points around 0.45 and 0.50: the observed means differ by 5 points (2 ARG points
    # per accuracy point: 10), smaller than the seeds' spread.
    seeds_a, seeds_b = [0.33, 0.45, 0.57], [0.38, 0.50, 0.62]
    a, b = side(seeds_a, 0), side(seeds_b, 1000)
    pooled_a = {t: np.mean([r[0][t] for r in a], axis=0) for t in GROUPS}
    pooled_b = {t: np.mean([r[0][t] for r in b], axis=0) for t in GROUPS}
    instances_only = paired_bootstrap(pooled_a, pooled_b, GROUPS, samples=1000, seed=0)
    assert instances_only.p_value < 0.01  # 1,600 instances make 5 points look certain
    result = hierarchical_bootstrap(a, b, GROUPS, samples=1000, seed=0)
    assert result.difference == pytest.approx(arg(0.50) - arg(0.45))
    assert result.arg_a == pytest.approx(arg(0.45)) and result.arg_b == pytest.approx(arg(0.50))
    assert result.p_value > 0.05 and result.p_worse > 0.05
    assert result.ci_low < 0 < result.ci_high
    # The seed level dominates the interval: at least as wide as the spread of B's seeds' mean minus A's.
    assert result.ci_high - result.ci_low > 2 * arg(0.57) - 2 * arg(0.45) - 10


def test_a_difference_larger_than_seed_noise_is_significant():
    a = side([0.40, 0.42, 0.44], 0, draws=3)
    b = side([0.58, 0.60, 0.62], 1000, draws=3)
    result = hierarchical_bootstrap(a, b, GROUPS, samples=1000, seed=0)
    assert result.difference == pytest.approx(arg(0.60) - arg(0.42))
    assert result.p_value < 0.01 and result.p_worse > 0.99
    reverse = hierarchical_bootstrap(b, a, GROUPS, samples=1000, seed=0)
    assert reverse.p_worse < 0.01 and reverse.difference == pytest.approx(-result.difference)


def test_same_seed_same_result_other_seed_other_draws():
    a, b = side([0.4, 0.5], 0, draws=2), side([0.45, 0.55, 0.5], 1000)
    first = hierarchical_bootstrap(a, b, GROUPS, samples=200, seed=7)
    assert hierarchical_bootstrap(a, b, GROUPS, samples=200, seed=7) == first
    other = hierarchical_bootstrap(a, b, GROUPS, samples=200, seed=8)
    assert other.difference == first.difference and (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_point_estimate_is_the_mean_of_each_seeds_mean():
    """An unbalanced side: seed 0 has 3 few-shot runs, seed 1 one; each seed weighs one half."""
    zero = [run(0.4, 1), run(0.5, 2), run(0.6, 3)]  # mean 0.5
    result = hierarchical_bootstrap([zero, [run(0.7, 4)]], [[run(0.5, 5)]], GROUPS, samples=50)
    assert result.arg_a == pytest.approx(arg((0.5 + 0.7) / 2))  # not the mean of the 4 runs (0.55)


def test_seed_weights_draw_seeds_then_draws_and_sum_to_one():
    rng = np.random.default_rng(0)
    seeds = rng.integers(0, 2, size=(5000, 2))
    weights = _seed_weights([3, 1], seeds, rng)
    assert weights.shape == (5000, 4) and np.allclose(weights.sum(axis=1), 1)
    # Seed 1 (one run, column 3) is drawn with probability 1/2 per slot: its expected weight is 1/2, and
    # each of seed 0's three runs gets 1/6.
    assert weights.mean(axis=0) == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2], abs=0.02)
    assert set(np.unique(weights[:, 3])) <= {0.0, 0.5, 1.0}


def test_paired_seeds_draw_the_same_seeds_on_both_sides():
    """Where seed p is one model on both sides, its noise cancels: paired is significant, unpaired is not."""
    a = side([0.30, 0.45, 0.60], 0)
    b = side([0.34, 0.49, 0.64], 0)  # each seed's own model, 4 points better
    paired = hierarchical_bootstrap(a, b, GROUPS, samples=500, paired_seeds=True)
    unpaired = hierarchical_bootstrap(a, b, GROUPS, samples=500)
    assert paired.p_value < 0.01 and unpaired.p_value > 0.05 and paired.paired_seeds
    with pytest.raises(MetricsError, match="as many pretraining seeds"):
        hierarchical_bootstrap(a, b[:2], GROUPS, paired_seeds=True)


def test_bad_inputs_name_the_problem():
    a = run(0.5, 1)
    with pytest.raises(MetricsError, match="side A needs at least one"):
        hierarchical_bootstrap([], [[a]], GROUPS)
    with pytest.raises(MetricsError, match="side B needs at least one"):
        hierarchical_bootstrap([[a]], [[a], []], GROUPS)
    with pytest.raises(MetricsError, match="side A: run 1 covers other templates"):
        hierarchical_bootstrap([[a, {"t0": a["t0"]}]], [[a]], GROUPS)
    with pytest.raises(MetricsError, match="different templates"):
        hierarchical_bootstrap([[{"t0": a["t0"]}]], [[a]], GROUPS, partial=True)
    with pytest.raises(MetricsError, match="has 400 instances in run A but 3"):
        hierarchical_bootstrap([[a]], [[{**a, "t1": np.ones(3)}]], GROUPS)
    with pytest.raises(MetricsError, match="samples must be >= 1"):
        hierarchical_bootstrap([[a]], [[a]], GROUPS, samples=0)
