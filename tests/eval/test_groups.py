"""eval/groups.py, the one place that decides a template's ARG group and number of choices."""

import pytest

from promptability.data.registry import heldout_templates
from promptability.eval.groups import arg_groups, groups_for, p3_groups, suite_groups
from promptability.eval.metrics import resolve_groups


def test_p3_groups_is_the_default_of_the_metrics():
    groups = p3_groups()
    assert len(groups) == 116 and len({g["group"] for g in groups.values()}) == 9
    assert all(set(g) == {"group", "num_choices"} for g in groups.values())
    assert resolve_groups(None) == resolve_groups(groups)


def test_arg_groups_takes_p3_templates_as_the_full_p3_set():
    some_p3 = dict(list(p3_groups().items())[:3])
    own = {"t_nli": {"group": "NLI", "num_choices": 3}}
    assert arg_groups(None) is None and arg_groups(some_p3) is None
    assert arg_groups(own) == own and arg_groups({**some_p3, **own}) == {**some_p3, **own}


def test_suite_groups_reads_the_suite_metadata():
    meta = {"templates": {"a": {"group": "NLI", "num_choices": 3, "role": "heldout", "dataset": "x"},
                          "b": {"group": "QA", "num_choices": 4, "role": "train", "dataset": "y"}}}  # fmt: skip
    assert suite_groups(meta) == {"a": {"group": "NLI", "num_choices": 3}}
    assert set(suite_groups(meta, role=None)) == {"a", "b"}
    with pytest.raises(ValueError, match="'templates'"):
        suite_groups({})


def test_groups_for_prefers_registry_then_suite_then_records(tmp_path):
    import json

    p3 = next(iter(heldout_templates()))
    (tmp_path / "suite.json").write_text(
        json.dumps({"format": "promptability-suite/1", "templates": {"s": {"group": "NLI", "num_choices": 3}}})
    )
    records = [{"task": p3, "choices": ["a", "b"]}, {"task": "s", "choices": ["a", "b"]},
               {"task": "own", "choices": ["a", "b"]}, {"task": "own", "choices": ["a", "b", "c"]}]  # fmt: skip
    groups = groups_for(records, tmp_path)
    assert groups[p3] == p3_groups()[p3]
    assert groups["s"] == {"group": "NLI", "num_choices": 3}
    assert groups["own"] == {"group": "own", "num_choices": 3}
