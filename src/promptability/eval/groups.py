"""Where a template's dataset group and number of choices come from, for ARG.

P3 held-out templates: the shipped T0 registry. The offline suite: its
``suite.json``. Anything else: the data itself (each template its own group,
its number of choices read off its records).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from promptability.data.registry import heldout_templates


def _suite_meta(data: Path) -> dict[str, Any] | None:
    for folder in [data, *data.parents][:3]:
        meta = folder / "suite.json"
        if meta.is_file():
            return json.loads(meta.read_text())
    return None


def groups_for(records: Iterable[dict[str, Any]], data_path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``{template: {"group", "num_choices"}}`` for every template in ``records``."""
    registry = heldout_templates()
    suite = _suite_meta(Path(data_path)) if data_path is not None else None
    suite_templates = (suite or {}).get("templates", {})
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        task = record["task"]
        if task in out:
            out[task]["num_choices"] = max(out[task]["num_choices"], len(record["choices"]))
            continue
        if task in registry:
            out[task] = {"group": registry[task]["group"], "num_choices": registry[task]["num_choices"]}
        elif task in suite_templates:
            info = suite_templates[task]
            out[task] = {"group": info["group"], "num_choices": info["num_choices"]}
        else:
            out[task] = {"group": task, "num_choices": len(record["choices"])}
    return out
