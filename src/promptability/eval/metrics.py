"""Accuracy -> ARG (the bootstraps that test ARG differences are in ``eval.significance``).

ARG (average relative gain) exactly as Wu et al. (2022) compute it: for each
held-out template, the relative gain over random guessing is ``(acc - r) / r``
with ``r`` the template's chance accuracy; gains are averaged over the templates of
a dataset group, then over the groups (ANLI R1-R3 pooled into one group, so 9 groups
for the P3 held-out set), and reported in percent.

Chance is the mean of ``1 / n`` over the template's instances, ``n`` being each
instance's number of choices (``chance_level``): a template whose instances have 2, 3
and 5 choices is not held to 1/5. Callers that know the instances (a run's
``predictions.jsonl``) pass it as ``chance``; where only accuracies are known, ``r`` is
``1 / num_choices`` from the groups, exact when every instance has that many choices.

The group of every template comes from the T0 registry by default, or from a
``groups`` mapping ``{template: {"group": str, "num_choices": int}}`` (what a run's
``run.json`` carries for non-P3 data).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

__all__ = [
    "ARGResult",
    "MetricsError",
    "arg_breakdown",
    "average_relative_gain",
    "chance_level",
    "few",
    "relative_gain",
    "resolve_groups",
]

GroupSpec = Mapping[str, Mapping[str, Any]]


class MetricsError(ValueError):
    """Inputs to ARG or the bootstrap do not fit the templates they claim to cover."""


def chance_level(num_choices: Iterable[int]) -> float:
    """Accuracy of random guessing over instances with these numbers of choices: the mean of ``1 / n``.

    When every instance has the same ``n`` this is exactly ``1.0 / n``, so templates with a fixed
    number of choices keep the gains that ``1 / num_choices`` gives, to the last bit.
    """
    counts = [int(n) for n in num_choices]
    if not counts:
        raise MetricsError("chance_level needs the number of choices of at least one instance")
    if min(counts) < 2:
        raise MetricsError(f"every instance needs >= 2 choices for a chance level, got {min(counts)}")
    if len(set(counts)) == 1:
        return 1.0 / counts[0]
    return math.fsum(1.0 / n for n in counts) / len(counts)


def relative_gain(accuracy: Any, num_choices: int | None = None, *, chance: float | None = None) -> Any:
    """``(accuracy - r) / r`` (a fraction, not percent) with ``r = chance``, else ``1 / num_choices``.

    ``chance`` is the template's ``chance_level`` when its instances are known; ``num_choices``
    alone is exact only when every instance has that many choices.
    """
    if chance is None:
        if num_choices is None:
            raise MetricsError("relative_gain needs num_choices or chance")
        chance = 1.0 / num_choices
    return (accuracy - chance) / chance


def resolve_groups(groups: GroupSpec | None = None) -> dict[str, tuple[str, int]]:
    """Validate a groups mapping (default: the 116 P3 held-out templates) -> ``{template: (group, k)}``."""
    if groups is None:
        from promptability.eval.groups import p3_groups

        groups = p3_groups()
    out: dict[str, tuple[str, int]] = {}
    for name, info in groups.items():
        if not isinstance(info, Mapping) or "group" not in info or "num_choices" not in info:
            raise MetricsError(f"groups[{name!r}] must be {{'group': str, 'num_choices': int}}, got {info!r}")
        group, k = info["group"], info["num_choices"]
        if not isinstance(group, str) or not group:
            raise MetricsError(f"groups[{name!r}]['group'] must be a non-empty string, got {group!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise MetricsError(f"groups[{name!r}]['num_choices'] must be an integer >= 2, got {k!r}")
        out[str(name)] = (group, k)
    if not out:
        raise MetricsError("groups is empty: no template to compute ARG over")
    return out


def few(names: Sequence[str], shown: int = 5) -> str:
    """``names`` for a message: the first ``shown``, then how many more (a run can miss all 106 templates)."""
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} ... and {len(names) - shown} more"


def _select(
    templates: list[str], spec: dict[str, tuple[str, int]], partial: bool, what: str
) -> tuple[list[str], list[str], list[str]]:
    """Split ``templates`` into (used, missing-from-spec, unknown); raise unless ``partial``."""
    present = set(templates)
    unknown = sorted(present - spec.keys())
    missing = sorted(spec.keys() - present)
    if (unknown or missing) and not partial:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing template(s): {few(missing)}")
        if unknown:
            parts.append(f"{len(unknown)} unknown template(s) (not in the groups): {few(unknown)}")
        raise MetricsError(
            f"{what} does not cover the expected {len(spec)} templates: "
            + "; ".join(parts)
            + ". Pass partial=True (CLI: --partial) for an ARG over the groups present."
        )
    used = sorted(present & spec.keys())
    if not used:
        raise MetricsError(f"{what} has none of the expected templates (unknown: {few(unknown)})")
    return used, missing, unknown


def _arg(
    values: Mapping[str, Any], spec: dict[str, tuple[str, int]], chance: Mapping[str, float] | None = None
) -> tuple[Any, dict[str, Any]]:
    """ARG in percent from per-template accuracies (floats or equal-shape arrays); ``chance`` overrides 1/k."""
    by_group: dict[str, list[Any]] = {}
    for name, acc in values.items():
        group, k = spec[name]
        by_group.setdefault(group, []).append(relative_gain(acc, k, chance=(chance or {}).get(name)))
    per_group = {g: sum(gains) / len(gains) * 100.0 for g, gains in by_group.items()}
    return sum(per_group.values()) / len(per_group), per_group


@dataclass(frozen=True)
class ARGResult:
    """ARG and its parts; all gains in percent."""

    value: float
    per_group: dict[str, float]
    per_template: dict[str, float]
    group_accuracy: dict[str, float]
    templates_per_group: dict[str, int] = field(default_factory=dict)
    partial: bool = False
    groups_expected: int = 0
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def label(self) -> str:
        """``"ARG"`` or ``"partial ARG (5/9 groups, 10 templates missing)"``."""
        if not self.partial:
            return "ARG"
        bits = [f"{len(self.per_group)}/{self.groups_expected} groups"]
        if self.missing:
            bits.append(f"{len(self.missing)} template{'s' * (len(self.missing) != 1)} missing")
        if self.ignored:
            bits.append(f"{len(self.ignored)} unknown ignored")
        return f"partial ARG ({', '.join(bits)})"


def is_fraction(value: Any) -> bool:
    """A real number in [0, 1] (an accuracy), not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and 0 <= cast(float, value) <= 1


def _check_accuracy(name: str, acc: Any) -> float:
    if not is_fraction(acc):
        raise MetricsError(f"accuracy of {name!r} must be a fraction in [0, 1], got {acc!r}")
    return float(acc)


def _check_chance(chance: Mapping[str, float] | None, used: list[str]) -> dict[str, float] | None:
    if chance is None:
        return None
    for name in used:
        r = chance.get(name)
        if r is not None and (isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 < float(r) <= 0.5):
            raise MetricsError(f"chance of {name!r} must be in (0, 0.5] (instances have >= 2 choices), got {r!r}")
    return {name: float(chance[name]) for name in used if chance.get(name) is not None}


def arg_breakdown(
    accuracies: Mapping[str, float],
    groups: GroupSpec | None = None,
    *,
    partial: bool = False,
    chance: Mapping[str, float] | None = None,
) -> ARGResult:
    """ARG of ``{template: accuracy}`` with per-group and per-template gains.

    Without ``groups`` the 116 P3 held-out templates are expected. Missing or unknown
    templates raise ``MetricsError`` listing them; with ``partial=True`` the ARG is
    taken over the groups present (unknown templates ignored) and marked partial.
    ``chance`` (``{template: chance_level(...)}``, from the instances' numbers of
    choices) replaces ``1 / num_choices`` for the templates it lists; without it,
    chance is ``1 / num_choices`` from the groups, exact only when every instance of a
    template has that many choices.
    """
    spec = resolve_groups(groups)
    used, missing, unknown = _select(list(accuracies), spec, partial, "the accuracies")
    acc = {name: _check_accuracy(name, accuracies[name]) for name in used}
    checked = _check_chance(chance, used)
    value, per_group = _arg(acc, spec, checked)
    group_acc: dict[str, list[float]] = {}
    for name in used:
        group_acc.setdefault(spec[name][0], []).append(acc[name])
    return ARGResult(
        value=float(value),
        per_group={g: float(v) for g, v in per_group.items()},
        per_template={n: relative_gain(acc[n], spec[n][1], chance=(checked or {}).get(n)) * 100.0 for n in used},
        group_accuracy={g: sum(v) / len(v) for g, v in group_acc.items()},
        templates_per_group={g: len(v) for g, v in group_acc.items()},
        partial=bool(missing or unknown),
        groups_expected=len({g for g, _ in spec.values()}),
        missing=missing,
        ignored=unknown,
    )


def average_relative_gain(
    accuracies: Mapping[str, float],
    groups: GroupSpec | None = None,
    *,
    partial: bool = False,
    chance: Mapping[str, float] | None = None,
) -> float:
    """ARG in percent of ``{template: accuracy}``; see ``arg_breakdown`` for the details (and ``chance``)."""
    return arg_breakdown(accuracies, groups, partial=partial, chance=chance).value
