"""Significance that counts training noise: a hierarchical paired bootstrap over pretraining seeds, few-shot
draws and evaluation instances.

``paired_bootstrap`` resamples evaluation instances only, so it answers "would another test set
rank these two *models* the same way?", not "would another pretraining run rank these two *methods* the same
way?". When one continued-pretraining run per row is all there is, the spread between runs of the same method
is invisible to it, and in the miniature that spread is larger than the differences between methods (issue 13).

``hierarchical_bootstrap`` takes, per side, every run: ``side[p][f]`` is the ``{template: correctness}`` of
pretraining seed ``p``, few-shot draw ``f`` (a 0-shot side has one draw per seed). Each replicate

1. resamples the side's pretraining seeds with replacement (independently per side by default; see
   ``paired_seeds``),
2. within every drawn seed, resamples its few-shot draws with replacement,
3. within every template, resamples the evaluation instances with replacement, the same indices for both
   sides (both were evaluated on the same instances, so this level stays paired),

and takes the ARG difference of the means (a side's accuracy is the mean over its drawn seeds of the mean
over each seed's drawn few-shot runs). Seeds and few-shot draws are drawn once per replicate for all
templates: a seed is one model, good or bad on every template at once. This is the Multi-Bootstrap of Sellam
et al. (2022, "The MultiBERTs") over seeds and examples, with the few-shot level added in between.

``paired_bootstrap`` is the case of one run per side: the seed level then gives every resample the one run at
weight 1 (its draws come from a second random stream, so the instance stream is the same whatever the seed
level draws). With few seeds the seed level is coarse (3 seeds give 10 distinct multisets) and, as any bootstrap
of a mean from k values, it underestimates that level's variance by a factor (k - 1) / k: it is a
necessary correction, not an exact test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from promptability.eval.metrics import GroupSpec, MetricsError, _arg, _check_chance, _select, resolve_groups

__all__ = ["BootstrapResult", "HierarchicalBootstrapResult", "Side", "hierarchical_bootstrap", "paired_bootstrap"]

# [pretraining seed][few-shot draw] -> {template: per-instance correctness}
Side = Sequence[Sequence[Mapping[str, Any]]]
SEED_STREAM = 0x5EED  # mixed into the seed-level generator so it never shares draws with the instance stream


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ARG(B) - ARG(A); ARGs in percent."""

    arg_a: float
    arg_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float  # fraction of resamples with ARG(B) <= ARG(A): small means B is better
    p_worse: float  # fraction of resamples with ARG(B) >= ARG(A): small means B is worse
    samples: int
    seed: int
    confidence: float
    templates: int
    instances: int
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class HierarchicalBootstrapResult(BootstrapResult):
    """``BootstrapResult`` plus what the replicates resampled."""

    test: str = "hierarchical"
    pretrain_seeds_a: int = 1
    pretrain_seeds_b: int = 1
    runs_a: int = 1  # (pretraining seed, few-shot draw) pairs
    runs_b: int = 1
    paired_seeds: bool = False


def _layout(side: Side, name: str) -> tuple[list[int], list[Mapping[str, Any]]]:
    """The number of few-shot draws of each pretraining seed, and the runs flattened seed by seed."""
    if len(side) == 0 or any(len(draws) == 0 for draws in side):
        raise MetricsError(f"side {name} needs at least one pretraining seed with at least one run")
    runs = [run for draws in side for run in draws]
    templates = set(runs[0])
    for i, run in enumerate(runs[1:], 1):
        if set(run) != templates:
            raise MetricsError(
                f"side {name}: run {i} covers other templates than run 0 ({sorted(set(run) ^ templates)})"
            )
    return [len(draws) for draws in side], runs


def _seed_weights(draws: list[int], seeds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per replicate, each run's weight in the side's mean: ``seeds[r]`` are the drawn pretraining seeds, and
    within each, the few-shot draws are resampled; a drawn seed weighs 1/k, each of its drawn runs 1/(k m)."""
    samples, k = seeds.shape
    offsets = np.concatenate([[0], np.cumsum(draws)[:-1]])
    m = np.asarray(draws)
    weights = np.zeros((samples, int(m.sum())))
    rows = np.arange(samples)
    for j in range(k):
        chosen = seeds[:, j]
        width = m[chosen]  # (samples,) draws of the chosen seed
        picks = np.minimum((rng.random((samples, int(m.max()))) * width[:, None]).astype(np.int64), width[:, None] - 1)
        valid = np.arange(int(m.max()))[None, :] < width[:, None]
        cols = offsets[chosen][:, None] + picks
        share = np.broadcast_to((1.0 / (k * width))[:, None], picks.shape)
        np.add.at(weights, (np.broadcast_to(rows[:, None], picks.shape)[valid], cols[valid]), share[valid])
    return weights


def _point_weights(draws: list[int]) -> np.ndarray:
    return np.concatenate([np.full(m, 1.0 / (len(draws) * m)) for m in draws])


def hierarchical_bootstrap(
    side_a: Side,
    side_b: Side,
    groups: GroupSpec | None = None,
    samples: int = 1000,
    seed: int = 0,
    *,
    paired_seeds: bool = False,
    partial: bool = False,
    confidence: float = 0.95,
    max_cells: int = 4_000_000,
    chance: Mapping[str, float] | None = None,
) -> HierarchicalBootstrapResult:
    """Hierarchical paired bootstrap of ARG(B) - ARG(A) over pretraining seeds, few-shot draws and instances.

    ``side_a[p][f][t][i]``: whether run (pretraining seed ``p``, few-shot draw ``f``) of A got instance ``i`` of
    template ``t`` right; every run of both sides lists the same templates with the same instances in the same
    order. Pretraining seeds are resampled independently per side: two rows' runs with the same seed number
    share a data order at best, but their trajectories diverge from the first step (other losses, other
    parameters), so nothing pairs seed 0 of one row with seed 0 of the other. ``paired_seeds=True`` draws the
    same seed indices for both sides (both need the same number of seeds): right when a seed is one model on
    both sides, e.g. a row's 0-shot runs against its 16-shot runs, or when every row's seed p starts from the
    same model (the demo's base p), which the rows' seed-p runs then share. ``p_value``, ``p_worse``, the interval and
    ``chance`` are as in ``paired_bootstrap``, which this equals with one run per side.
    """
    draws_a, runs_a = _layout(side_a, "A")
    draws_b, runs_b = _layout(side_b, "B")
    if samples < 1:
        raise MetricsError(f"samples must be >= 1, got {samples}")
    if not 0 < confidence < 1:
        raise MetricsError(f"confidence must be in (0, 1), got {confidence}")
    if set(runs_a[0]) != set(runs_b[0]):
        only_a, only_b = sorted(set(runs_a[0]) - set(runs_b[0])), sorted(set(runs_b[0]) - set(runs_a[0]))
        raise MetricsError(f"runs cover different templates: only in A: {only_a}; only in B: {only_b}")
    if paired_seeds and len(draws_a) != len(draws_b):
        raise MetricsError(
            f"paired_seeds needs as many pretraining seeds in A ({len(draws_a)}) as in B ({len(draws_b)})"
        )
    spec = resolve_groups(groups)
    used, missing, unknown = _select(list(runs_a[0]), spec, partial, "the compared runs")
    seed_rng = np.random.default_rng([seed, SEED_STREAM])
    picked_a = seed_rng.integers(0, len(draws_a), size=(samples, len(draws_a)))
    picked_b = picked_a if paired_seeds else seed_rng.integers(0, len(draws_b), size=(samples, len(draws_b)))
    weights_a, weights_b = _seed_weights(draws_a, picked_a, seed_rng), _seed_weights(draws_b, picked_b, seed_rng)
    point_w_a, point_w_b = _point_weights(draws_a), _point_weights(draws_b)
    rng = np.random.default_rng(seed)  # the instance stream
    acc_a: dict[str, np.ndarray] = {}
    acc_b: dict[str, np.ndarray] = {}
    point_a: dict[str, float] = {}
    point_b: dict[str, float] = {}
    instances = 0
    for name in used:  # sorted, so the random stream does not depend on dict order
        xa = np.stack([_as_correct(name, _run_name("A", i, runs_a), run[name]) for i, run in enumerate(runs_a)])
        xb = np.stack([_as_correct(name, _run_name("B", i, runs_b), run[name]) for i, run in enumerate(runs_b)])
        if xa.shape[1] != xb.shape[1]:
            raise MetricsError(f"template {name!r} has {xa.shape[1]} instances in run A but {xb.shape[1]} in run B")
        n = xa.shape[1]
        instances += n
        point_a[name], point_b[name] = _weighted_point(xa, point_w_a), _weighted_point(xb, point_w_b)
        per_run_a, per_run_b = np.empty((samples, len(xa))), np.empty((samples, len(xb)))
        step = max(1, max_cells // n)  # chunks of resamples keep the index matrix within max_cells entries
        for lo in range(0, samples, step):
            idx = rng.integers(0, n, size=(min(step, samples - lo), n), dtype=np.int32)
            rows = slice(lo, lo + len(idx))
            for r, x in enumerate(xa):
                per_run_a[rows, r] = x[idx].mean(axis=1)
            for r, x in enumerate(xb):
                per_run_b[rows, r] = x[idx].mean(axis=1)
        acc_a[name], acc_b[name] = (per_run_a * weights_a).sum(axis=1), (per_run_b * weights_b).sum(axis=1)
    checked = _check_chance(chance, used)
    return HierarchicalBootstrapResult(
        **_summary(point_a, point_b, acc_a, acc_b, spec, checked, confidence),
        samples=samples, seed=seed, confidence=confidence, templates=len(used), instances=instances,
        partial=bool(missing or unknown), pretrain_seeds_a=len(draws_a), pretrain_seeds_b=len(draws_b),
        runs_a=len(runs_a), runs_b=len(runs_b), paired_seeds=paired_seeds,
    )  # fmt: skip


def paired_bootstrap(
    correct_a: Mapping[str, Any],
    correct_b: Mapping[str, Any],
    groups: GroupSpec | None = None,
    samples: int = 1000,
    seed: int = 0,
    *,
    partial: bool = False,
    confidence: float = 0.95,
    max_cells: int = 4_000_000,
    chance: Mapping[str, float] | None = None,
) -> BootstrapResult:
    """Paired bootstrap over instances of the ARG difference between runs A and B.

    ``correct_a[t][i]`` says whether run A got instance ``i`` of template ``t`` right
    (bool, or a fraction in [0, 1], e.g. correctness averaged over few-shot seeds);
    both runs must list the same templates with the same instances in the same order.
    Each resample draws, within every template, ``n`` instance indices with
    replacement and applies them to both runs, so the pairing is kept. ``p_value``
    is the fraction of resamples where B's ARG is not above A's. ``chance`` is as in
    ``arg_breakdown``. This is ``hierarchical_bootstrap`` with one run per side, whose
    seed level then weighs that run 1 in every resample.
    """
    result = hierarchical_bootstrap([[correct_a]], [[correct_b]], groups, samples, seed, partial=partial,
                                    confidence=confidence, max_cells=max_cells, chance=chance)  # fmt: skip
    return BootstrapResult(**{f.name: getattr(result, f.name) for f in fields(BootstrapResult)})


def _run_name(side: str, i: int, runs: Sequence[Any]) -> str:
    """How errors name run ``i`` of a side: "A", or "A (run 2)" when the side has several runs."""
    return side if len(runs) == 1 else f"{side} (run {i})"


def _weighted_point(x: np.ndarray, weights: np.ndarray) -> float:
    """The side's accuracy on one template: a single run's own mean (not a weighted sum that rounds)."""
    if len(x) == 1:
        return float(x[0].mean())
    return float(weights @ x.mean(axis=1))


def _as_correct(name: str, side: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise MetricsError(
            f"correctness of {name!r} in run {side} must be a non-empty 1-D array, got shape {arr.shape}"
        )
    if arr.dtype != bool and (not np.issubdtype(arr.dtype, np.number) or not np.all((arr >= 0) & (arr <= 1))):
        raise MetricsError(f"correctness of {name!r} in run {side} must be bools or fractions in [0, 1]")
    return arr.astype(np.float64)


def _summary(
    point_a: Mapping[str, float],
    point_b: Mapping[str, float],
    acc_a: Mapping[str, np.ndarray],
    acc_b: Mapping[str, np.ndarray],
    spec: dict[str, tuple[str, int]],
    chance: Mapping[str, float] | None,
    confidence: float,
) -> dict[str, Any]:
    """Both ARGs, their difference, its interval and the two one-sided p-values, from per-template accuracies
    (points) and per-resample accuracies (``acc``)."""
    arg_a, _ = _arg(point_a, spec, chance)
    arg_b, _ = _arg(point_b, spec, chance)
    diff = _arg(acc_b, spec, chance)[0] - _arg(acc_a, spec, chance)[0]
    # Ties count against B, so identical runs give p = 1; a tiny tolerance absorbs
    # float noise from summing the same numbers in a different order.
    tol = 1e-9
    tail = (1 - confidence) / 2 * 100
    return {
        "arg_a": float(arg_a), "arg_b": float(arg_b), "difference": float(arg_b - arg_a),
        "ci_low": float(np.percentile(diff, tail)), "ci_high": float(np.percentile(diff, 100 - tail)),
        "p_value": float(np.mean(diff <= tol)), "p_worse": float(np.mean(diff >= -tol)),
    }  # fmt: skip
