"""How runs were made beyond their table cell: precision, source EOS and few-shot draws, from run.json.

Cells of one report are compared with each other (significance within a column, gains across rows),
so the report says when their runs were evaluated in different precisions or token layouts, and how
each few-shot column's examples were drawn: the paper's one fixed reference subsample, or random draws.
Runs written before these fields existed read as "unrecorded".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptability.eval.report import Report
    from promptability.eval.runs import Run

UNRECORDED = "unrecorded"
# run.json fields that change the numbers: the report notes a mix of their values.
SETTINGS = {"precision": "precision", "source_eos": "source EOS"}


def recorded(meta: Mapping[str, Any], key: str) -> str:
    """Run.json field ``key`` in words: its value, "with"/"without" for a flag, "unrecorded" when absent."""
    value = meta.get(key, UNRECORDED)
    return ("with" if value else "without") if isinstance(value, bool) else str(value)


def setting(runs: Iterable[Run], key: str) -> str:
    """Run.json field ``key`` over ``runs`` in words ("a+b" when they differ)."""
    return "+".join(sorted({recorded(run.meta, key) for run in runs}))


def draw(runs: list[Run]) -> str:
    """How the few-shot examples of ``runs`` (the seeds of one configuration) were drawn, in words."""
    kinds = {run.meta.get("draw", UNRECORDED) for run in runs}
    if kinds == {"reference"}:
        return "the reference draw (the paper's fixed 16-shot subsample, the same for every seed)"
    if kinds == {"random"}:
        return "one random draw" if len(runs) == 1 else f"mean over {len(runs)} random draws"
    return "draw not recorded" if kinds == {UNRECORDED} else f"mixed draws ({', '.join(sorted(map(str, kinds)))})"


def mismatches(a: list[Run], b: list[Run]) -> list[str]:
    """One line per numbers-changing setting in which the runs of ``a`` and ``b`` differ (for ``compare``)."""
    lines = []
    for key, name in SETTINGS.items():
        left, right = setting(a, key), setting(b, key)
        if left != right or "+" in left + right:
            lines.append(f"the runs differ in {name}: A {left}, B {right}; the difference is not theirs alone")
    return lines


def provenance_notes(report: Report) -> list[str]:
    """Legend lines: settings that differ between the report's cells, and each few-shot column's draw."""
    notes = []
    for key, name in SETTINGS.items():
        by_value: dict[str, list[str]] = {}
        for (method, column), cell in report.cells.items():
            label = f"{report.labels.get(method, method)} / {column.label}"
            by_value.setdefault(setting(cell.runs, key), []).append(label)
        if len(by_value) > 1:
            common = Counter({v: len(cells) for v, cells in by_value.items()}).most_common(1)[0][0]
            parts = [f"{v}: {', '.join(cells)}" for v, cells in sorted(by_value.items()) if v != common]
            notes.append(f"The cells differ in {name} (run.json): {common} in the other cells; " + "; ".join(parts))
    columns: dict[str, list[str]] = {}
    for column in report.columns:
        if column.shots:
            draws = {m: draw(c.runs) for (m, col), c in report.cells.items() if col == column}
            if len(set(draws.values())) == 1:
                text = next(iter(draws.values()))
            else:
                text = "; ".join(f"{report.labels.get(m, m)}: {t}" for m, t in draws.items())
            columns.setdefault(text, []).append(column.label)
    notes += [f"{', '.join(labels)}: {text}." for text, labels in columns.items()]
    return notes
