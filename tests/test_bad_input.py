"""The project's promises about bad input and results, one test each (issue 17).

Read as a list: what fails fast (and how the error names the culprit), what is refused,
and what is never overwritten. Faults and security are in ``test_faults.py``.
"""

from __future__ import annotations

import json

import pytest

from promptability.eval.metrics import arg_breakdown, chance_level, relative_gain
from promptability.eval.rank import write_run
from promptability.eval.runs import load_run


def _rows(task: str, num_choices: list[int], correct: list[bool]) -> list[dict]:
    return [
        {"task": task, "index": i, "scores": [0.0] * n, "prediction": 0 if ok else 1, "label": 0}
        for i, (n, ok) in enumerate(zip(num_choices, correct, strict=True))
    ]


def test_arg_chance_is_the_mean_of_one_over_n_when_choices_vary(tmp_path):
    """Instances with 2, 3 and 5 choices: chance is (1/2 + 1/3 + 1/5) / 3, not 1/5."""
    num_choices, correct = [2, 3, 5] * 4, [True, False, False] * 4  # accuracy 1/3
    groups = {"t": {"group": "G", "num_choices": 5}}
    write_run(tmp_path / "run", _rows("t", num_choices, correct),
              {"method": "none", "prompt": "none", "shots": 0, "model": "m", "groups": groups})  # fmt: skip
    run = load_run(tmp_path / "run")
    true_chance = (1 / 2 + 1 / 3 + 1 / 5) / 3
    assert run.chance == {"t": pytest.approx(true_chance)}
    expected = (1 / 3 - true_chance) / true_chance * 100
    assert run.arg().value == pytest.approx(expected)  # about -3%
    assert expected == pytest.approx(-3.23, abs=0.01)  # where 1/max(choices) said +66.7%
    # Only accuracies known: today's rule, 1 / num_choices of the groups.
    assert arg_breakdown(run.accuracy, groups).value == pytest.approx((1 / 3 - 1 / 5) / (1 / 5) * 100)


def test_arg_chance_of_fixed_choices_is_exactly_one_over_n():
    for n in (2, 3, 4, 7):
        assert chance_level([n] * 9) == 1.0 / n
        assert relative_gain(0.61, chance=chance_level([n] * 9)) == relative_gain(0.61, n)
