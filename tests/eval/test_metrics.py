"""ARG against hand-computed numbers (ANLI pooled), missing/unknown/partial inputs, the paired bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promptability.cli import main
from promptability.data.registry import heldout_templates
from promptability.eval.metrics import (
    MetricsError,
    arg_breakdown,
    average_relative_gain,
    relative_gain,
)
from promptability.eval.significance import paired_bootstrap

# Per-group accuracy chosen so each relative gain is a round number:
# gain = (acc - 1/k) / (1/k) = acc * k - 1.
GROUP_ACC = {"CB": 0.6, "HellaSwag": 0.3, "RTE": 0.6, "WiC": 0.5, "WSC": 0.55, "StoryCloze": 0.9, "Winogrande": 0.52}
GROUP_GAIN = {
    "CB": 80.0,
    "HellaSwag": 20.0,
    "RTE": 20.0,
    "WiC": 0.0,
    "WSC": 10.0,
    "StoryCloze": 80.0,
    "Winogrande": 4.0,
}
# ANLI rounds differ (gains 50, 20, 80 %); pooled over its 45 templates (15 per round) the gain is 50 %.
ANLI_ACC = {"r1": 0.5, "r2": 0.4, "r3": 0.6}
ANLI_GAIN = {"r1": 50.0, "r2": 20.0, "r3": 80.0}


def _round(name: str) -> str:
    return next(r for r in ("r1", "r2", "r3") if f"_{r}_" in name)


def full_accuracies() -> dict[str, float]:
    acc = {}
    copa = 0
    for name, info in heldout_templates().items():
        group = info["group"]
        if group == "ANLI":
            acc[name] = ANLI_ACC[_round(name)]
        elif group == "COPA":
            # Half the COPA templates at 0.7 (gain 40 %), half at 0.8 (gain 60 %): mean gain 50 %.
            acc[name] = 0.7 if copa % 2 == 0 else 0.8
            copa += 1
        else:
            acc[name] = GROUP_ACC[group]
    return acc


def test_relative_gain():
    assert relative_gain(0.5, 2) == pytest.approx(0.0)
    assert relative_gain(0.75, 2) == pytest.approx(0.5)
    assert relative_gain(0.5, 4) == pytest.approx(1.0)
    assert relative_gain(0.2, 4) == pytest.approx(-0.2)


def test_arg_matches_hand_computation_with_anli_pooled():
    acc = full_accuracies()
    assert len(acc) == 116
    rounds = [_round(n) for n, i in heldout_templates().items() if i["group"] == "ANLI"]
    assert {r: rounds.count(r) for r in ("r1", "r2", "r3")} == {"r1": 15, "r2": 15, "r3": 15}
    # 9 groups: ANLI 50, CB 80, HellaSwag 20, COPA 50, RTE 20, WiC 0, WSC 10, StoryCloze 80, Winogrande 4.
    expected = (50 + 80 + 20 + 50 + 20 + 0 + 10 + 80 + 4) / 9
    assert expected == pytest.approx(34.888888, abs=1e-5)
    result = arg_breakdown(acc)
    assert result.value == pytest.approx(expected, abs=1e-9)
    assert average_relative_gain(acc) == pytest.approx(expected, abs=1e-9)
    assert len(result.per_group) == 9 and not result.partial and result.label() == "ARG"
    assert result.per_group["ANLI"] == pytest.approx(50.0)
    assert result.per_group["COPA"] == pytest.approx(50.0)
    for group, gain in GROUP_GAIN.items():
        assert result.per_group[group] == pytest.approx(gain)
    assert result.templates_per_group["ANLI"] == 45
    assert result.group_accuracy["ANLI"] == pytest.approx(0.5)
    # Not pooling ANLI (R1, R2, R3 as 3 groups of 11) would give a different number.
    unpooled = (sum(ANLI_GAIN.values()) + 50 + sum(GROUP_GAIN.values())) / 11
    assert abs(unpooled - expected) > 1
    # Nor does a flat mean over all 116 templates agree: the group averaging matters.
    flat = np.mean(list(result.per_template.values()))
    assert abs(flat - expected) > 1


def test_missing_and_unknown_templates_are_listed():
    acc = full_accuracies()
    gone = sorted(acc)[:2]
    for name in gone:
        del acc[name]
    acc["my_own_template"] = 0.5
    with pytest.raises(MetricsError) as err:
        average_relative_gain(acc)
    message = str(err.value)
    assert all(name in message for name in gone)
    assert "2 missing" in message and "my_own_template" in message and "partial" in message


def test_partial_arg_over_groups_present():
    acc = full_accuracies()
    for name, info in heldout_templates().items():
        if info["group"] == "CB":
            del acc[name]
    r3 = sorted(n for n in acc if n.startswith("anli") and _round(n) == "r3")[0]
    del acc[r3]
    acc["extra"] = 0.9
    with pytest.raises(MetricsError):
        arg_breakdown(acc)
    result = arg_breakdown(acc, partial=True)
    # ANLI keeps 15 R1 (50), 15 R2 (20) and 14 R3 (80) templates.
    anli = (15 * 50 + 15 * 20 + 14 * 80) / 44
    expected = (anli + 20 + 50 + 20 + 0 + 10 + 80 + 4) / 8
    assert result.value == pytest.approx(expected, abs=1e-9)
    assert result.partial and "CB" not in result.per_group
    assert result.ignored == ["extra"] and len(result.missing) == 16
    assert result.label() == "partial ARG (8/9 groups, 16 templates missing, 1 unknown ignored)"


def test_custom_groups_and_bad_inputs():
    groups = {
        "a": {"group": "X", "num_choices": 2},
        "b": {"group": "X", "num_choices": 4},
        "c": {"group": "Y", "num_choices": 3},
    }
    # X: gains 50 % and 100 % -> 75 %; Y: 0.5 * 3 - 1 = 50 %.
    assert average_relative_gain({"a": 0.75, "b": 0.5, "c": 0.5}, groups) == pytest.approx(62.5)
    with pytest.raises(MetricsError, match="fraction in \\[0, 1\\]"):
        average_relative_gain({"a": 75.0, "b": 0.5, "c": 0.5}, groups)
    with pytest.raises(MetricsError, match="num_choices"):
        average_relative_gain({"a": 0.5}, {"a": {"group": "X", "num_choices": 1}})


def test_arg_cli_prints_arg_last(tmp_path, capsys):
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(full_accuracies()))
    assert main(["arg", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("ARG (%): ")
    assert float(lines[-1].split()[-1]) == pytest.approx(314 / 9, abs=1e-4)
    assert any(line.startswith("ANLI") for line in lines)

    acc = full_accuracies()
    del acc[sorted(acc)[0]]
    path.write_text(json.dumps(acc))
    assert main(["arg", str(path)]) == 2
    assert sorted(full_accuracies())[0] in capsys.readouterr().err
    assert main(["arg", str(path), "--partial", "-q"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("partial ARG (9/9 groups, 1 template missing)")


GROUPS = {
    "t1": {"group": "G1", "num_choices": 2},
    "t2": {"group": "G1", "num_choices": 2},
    "t3": {"group": "G2", "num_choices": 3},
    "t4": {"group": "G3", "num_choices": 4},
}


def _correct(seed: int, p: float = 0.5, n: int = 200) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t: rng.random(n) < p for t in GROUPS}


def test_bootstrap_identical_runs_give_p_one():
    a = _correct(0)
    result = paired_bootstrap(a, {t: v.copy() for t, v in a.items()}, GROUPS, samples=500, seed=0)
    assert result.p_value == 1.0 and result.difference == 0.0
    assert result.ci_low == 0.0 and result.ci_high == 0.0
    assert result.arg_a == pytest.approx(average_relative_gain({t: v.mean() for t, v in a.items()}, GROUPS))
    assert result.instances == 800 and result.templates == 4


def test_bootstrap_b_dominates():
    a = _correct(1)
    rng = np.random.default_rng(2)
    # B is right wherever A is, and on about 30 % of the instances A gets wrong.
    b = {t: v | (rng.random(v.size) < 0.3) for t, v in a.items()}
    result = paired_bootstrap(a, b, GROUPS, samples=1000, seed=0)
    assert result.p_value < 0.01
    assert result.p_worse == 1.0
    assert 0 < result.ci_low < result.difference < result.ci_high
    expected = average_relative_gain({t: v.mean() for t, v in b.items()}, GROUPS) - average_relative_gain(
        {t: v.mean() for t, v in a.items()}, GROUPS
    )
    assert result.difference == pytest.approx(expected)
    # Seeded: the same seed gives the same interval, the reverse comparison is not significant.
    assert paired_bootstrap(a, b, GROUPS, samples=1000, seed=0) == result
    assert paired_bootstrap(b, a, GROUPS, samples=1000, seed=0).p_value == 1.0


def test_bootstrap_fractional_correctness_and_mismatches():
    a = {t: v.astype(float) / 2 for t, v in _correct(3).items()}  # e.g. averaged over 2 seeds
    result = paired_bootstrap(a, a, GROUPS, samples=50, seed=1)
    assert result.p_value == 1.0
    with pytest.raises(MetricsError, match="200 instances in run A but 199"):
        paired_bootstrap(_correct(0), {t: v[:-1] for t, v in _correct(0).items()}, GROUPS, samples=10)
    with pytest.raises(MetricsError, match="different templates"):
        paired_bootstrap(_correct(0), {"t1": np.ones(200, bool)}, GROUPS, samples=10)


def test_bootstrap_full_p3_scale_is_fast():
    import time

    rng = np.random.default_rng(0)
    a = {t: rng.random(300) < 0.5 for t in heldout_templates()}
    b = {t: v.copy() for t, v in a.items()}
    start = time.perf_counter()
    result = paired_bootstrap(a, b, samples=1000, seed=0)
    assert time.perf_counter() - start < 30  # about 0.3 s on 2 idle cores; generous for loaded CI
    assert result.templates == 116 and result.p_value == 1.0


def test_chance_level_from_numbers_of_choices():
    from promptability.eval.metrics import MetricsError, chance_level

    assert chance_level([2, 3, 5]) == pytest.approx((1 / 2 + 1 / 3 + 1 / 5) / 3)
    assert chance_level([2, 2, 2]) == 0.5
    with pytest.raises(MetricsError, match=">= 2 choices"):
        chance_level([2, 1])
    with pytest.raises(MetricsError, match="at least one instance"):
        chance_level([])
