"""Where a template's dataset group and number of choices come from, for ARG: the one place that decides.

P3 held-out templates: the shipped T0 registry. The offline suite: its
``suite.json``. Anything else: the data itself (each template its own group,
its number of choices read off its records). A run's ``groups`` made only of
P3 held-out templates stands for the paper's full set (``arg_groups``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from promptability.data.registry import heldout_templates
from promptability.data.suite_layout import find_meta


def _group(info: Mapping[str, Any]) -> dict[str, Any]:
    """The ARG fields of a template's description (a registry entry or a suite.json entry)."""
    return {"group": info["group"], "num_choices": info["num_choices"]}


def p3_groups() -> dict[str, dict[str, Any]]:
    """``{template: {"group", "num_choices"}}`` of the 116 P3 held-out templates (ARG's default)."""
    return {name: _group(info) for name, info in heldout_templates().items()}


def arg_groups(groups: dict[str, Any] | None) -> dict[str, Any] | None:
    """The groups ARG is taken over: None (all 116 P3 held-out templates) when ``groups`` holds P3 templates only.

    ``evaluate`` records the groups of the templates it saw; when those are all P3
    held-out templates, the paper's full set is expected, so that a run over a
    subset is reported as missing templates (or partial) rather than complete.
    """
    if groups is None or set(groups) <= set(heldout_templates()):
        return None
    return groups


def suite_groups(meta: dict[str, Any], role: str | None = "heldout") -> dict[str, dict[str, Any]]:
    """The suite's ``{template: {"group", "num_choices"}}`` from its ``read_meta``: held-out ones, or all (role None)."""
    if "templates" not in meta:
        raise ValueError("suite metadata has no field 'templates'")
    return {t: _group(info) for t, info in meta["templates"].items() if role is None or info["role"] == role}


def groups_for(records: Iterable[Mapping[str, Any]], data_path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``{template: {"group", "num_choices"}}`` for every template in ``records``."""
    registry = heldout_templates()
    suite = find_meta(data_path, parents=2) if data_path is not None else None
    suite_templates = (suite or {}).get("templates", {})
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        task = record["task"]
        if task in out:
            out[task]["num_choices"] = max(out[task]["num_choices"], len(record["choices"]))
            continue
        if task in registry:
            out[task] = _group(registry[task])
        elif task in suite_templates:
            out[task] = _group(suite_templates[task])
        else:
            out[task] = {"group": task, "num_choices": len(record["choices"])}
    return out
