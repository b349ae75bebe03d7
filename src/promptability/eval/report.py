"""Collect evaluated runs into a table shaped like the paper's Table 1, plus a per-group plot.

Rows are methods in the paper's order; columns are model size x prompt (the
registry's kinds in order: shallow, deep) x shots. A cell is the ARG of one run, or mean ± std over the runs of
one configuration, pretraining seeds x few-shot seeds: the mean over pretraining seeds of each seed's mean, and
the sample std over all runs (both kinds of noise; table.json adds the std of the per-seed means). A run with
prompt "none" (e.g. 0-shot MTL-T) fills every prompt column of its size and shots, unless a run of the same
method names that prompt explicitly. Significance against a baseline method at the same column: by default
(``test="hierarchical"``) eval.significance's bootstrap over pretraining seeds, few-shot runs and instances
(``"paired-seeds"``: the same seeds drawn for both rows, where seed p of every row starts from one model);
``test="instances"`` resamples instances only, of the runs' pooled correctness (ignores training noise). With
one run per side the two are the same test, to the last bit.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from promptability.eval.metrics import MetricsError, resolve_groups
from promptability.eval.provenance import provenance_notes
from promptability.eval.runs import Run, RunError, check_same_instances, group_by_config
from promptability.eval.seeds import TESTS, compare_runs, seed_args, seed_counts, seed_record, test_text
from promptability.eval.significance import BootstrapResult
from promptability.io import atomic_path, write_json_atomic, write_text_atomic
from promptability.model.prompts import NO_PROMPT, PROMPT_KINDS
from promptability.train.methods import TABLE1_LABELS

if TYPE_CHECKING:
    from matplotlib.artist import Artist

__all__ = ["Cell", "Column", "Report", "build_report", "plot_group_accuracy", "render_markdown", "write_report"]

SIZE_ORDER = ("tiny", "mini", "small", "base", "large", "xl", "xxl")
BETTER, WORSE, PARTIAL = "†", "‡", "*"


@dataclass(frozen=True, order=True)
class Column:
    model_size: str
    prompt: str  # a prompt kind; "none" only when no run of this size and shots has a prompt
    shots: int

    @property
    def label(self) -> str:
        prompt = "no prompt" if self.prompt == NO_PROMPT else self.prompt
        return f"{self.model_size} {prompt} {self.shots}-shot"


@dataclass
class Cell:
    method: str
    column: Column
    runs: list[Run]
    args: list[float]
    partial: bool
    shared: bool  # filled from a prompt-less run (which fills every prompt column)
    comparison: BootstrapResult | None = None
    note: str | None = None

    @property
    def mean(self) -> float:
        """The mean over pretraining seeds of each seed's mean ARG (one seed: the mean of the runs)."""
        return float(np.mean([np.mean(args) for args in seed_args(self.runs, self.args).values()]))

    @property
    def std(self) -> float | None:
        return float(np.std(self.args, ddof=1)) if len(self.args) > 1 else None

    def mark(self, alpha: float) -> str:
        if self.comparison is None:
            return ""
        return BETTER if self.comparison.p_value < alpha else WORSE if self.comparison.p_worse < alpha else ""

    def text(self, alpha: float) -> str:
        value = f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"
        return value + (PARTIAL if self.partial else "") + self.mark(alpha)


@dataclass
class Report:
    columns: list[Column]
    methods: list[str]
    cells: dict[tuple[str, Column], Cell]
    baseline: str | None
    alpha: float
    samples: int
    seed: int
    notes: list[str] = field(default_factory=list)
    labels: Mapping[str, str] = field(default_factory=lambda: TABLE1_LABELS)  # method -> row label
    test: str = "hierarchical"  # the significance test, one of TESTS


def _size_key(size: str) -> tuple[int, str]:
    return (SIZE_ORDER.index(size.lower()), "") if size.lower() in SIZE_ORDER else (len(SIZE_ORDER), size)


def _method_key(method: str, order: list[str]) -> tuple[int, str]:
    return (order.index(method), "") if method in order else (len(order), method)


def _prompt_key(prompt: str) -> int:
    """Prompt columns in the registry's order, the prompt-less column last."""
    kinds = list(PROMPT_KINDS)
    return kinds.index(prompt) if prompt in kinds else len(kinds)


def _shots(run: Run) -> int:
    if run.shots is None:
        raise RunError(f"{run.path}: another tool's run without its number of shots has no column in the report")
    return run.shots


def _place(runs: list[Run], partial: bool) -> tuple[list[Column], dict[tuple[str, Column], Cell]]:
    configs = group_by_config(runs)
    used_prompts: dict[tuple[str, int], set[str]] = {}
    for members in configs.values():
        if members[0].prompt != NO_PROMPT:
            used_prompts.setdefault((members[0].model_size, _shots(members[0])), set()).add(members[0].prompt)
    cells: dict[tuple[str, Column], Cell] = {}
    # Explicit prompts first, so a prompt-less run only fills the columns left empty.
    for members in sorted(configs.values(), key=lambda m: m[0].prompt == NO_PROMPT):
        first = members[0]
        shared = first.prompt == NO_PROMPT
        prompts = (
            [first.prompt]
            if not shared
            else [p for p in PROMPT_KINDS if p in used_prompts.get((first.model_size, _shots(first)), ())]
            or [NO_PROMPT]
        )
        results = [run.arg(partial=partial) for run in members]
        for prompt in prompts:
            key = (first.method, Column(first.model_size, prompt, _shots(first)))
            if key in cells:
                if shared and not cells[key].shared:
                    continue  # an explicit prompt of the same method wins over the prompt-less run
                raise RunError(
                    f"two configurations fill the cell {first.method!r} / {key[1].label}: "
                    f"{cells[key].runs[0].path} and {first.path} (different models of the same size?)"
                )
            cells[key] = Cell(
                method=first.method,
                column=key[1],
                runs=members,
                args=[r.value for r in results],
                partial=any(r.partial for r in results),
                shared=shared,
            )
    columns = sorted({col for _, col in cells}, key=lambda c: (_size_key(c.model_size), _prompt_key(c.prompt), c.shots))
    return columns, cells


def _compare(base: Cell, cell: Cell, samples: int, seed: int, partial: bool, test: str) -> BootstrapResult:
    everyone = base.runs + cell.runs
    groups = [run.arg_groups for run in everyone]
    if any(g != groups[0] for g in groups):
        raise RunError(f"runs {base.runs[0].path} and {cell.runs[0].path} use different 'groups' in run.json")
    check_same_instances(everyone)
    return compare_runs(base.runs, cell.runs, groups[0], test=test, samples=samples, seed=seed, partial=partial)


def build_report(
    runs: list[Run],
    *,
    baseline: str | None = "mtl-t",
    samples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    partial: bool = False,
    test: str = "hierarchical",
) -> Report:
    """Place ``runs`` into Table 1 cells and test each cell against ``baseline`` at the same column.

    Rows: the methods of ``TABLE1_LABELS`` in its order (the registry's), other methods after them by name.
    ``test``: "hierarchical" (pretraining seeds, few-shot runs, instances), "paired-seeds" (the same, seeds paired
    across rows) or "instances" (instances only, over the runs' pooled correctness); see the module docstring.
    """
    if not runs:
        raise RunError("no runs to report")
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    columns, cells = _place(runs, partial)
    methods = sorted({method for method, _ in cells}, key=lambda m: _method_key(m, list(TABLE1_LABELS)))
    report = Report(columns, methods, cells, baseline, alpha, samples, seed, test=test)
    if baseline is not None and baseline not in methods:
        report.notes.append(f"baseline {baseline!r} has no runs: no significance marks")
        return report
    cache: dict[tuple[tuple[Path, ...], tuple[Path, ...]], BootstrapResult | str] = {}
    todo = [(key, cell) for key, cell in cells.items() if key[0] != baseline and (baseline, key[1]) in cells]
    for (method, column), cell in tqdm(todo, desc="paired bootstrap", unit="cell", disable=None):
        assert baseline is not None  # todo is empty without a baseline
        base = cells[(baseline, column)]
        key = (tuple(r.path for r in base.runs), tuple(r.path for r in cell.runs))
        if key not in cache:
            try:
                cache[key] = _compare(base, cell, samples, seed, partial, test)
            except (RunError, MetricsError) as err:
                cache[key] = note = f"no significance test for {method} at {column.label}: {err}"
                report.notes.append(note)
        if isinstance(cache[key], str):
            cell.note = cache[key]
        else:
            cell.comparison = cache[key]
    return report


def _legend(report: Report) -> list[str]:
    counts = seed_counts((c.runs, c.args, c.column.shots) for c in report.cells.values())
    cells = "Cells: ARG (%) of one run, or mean ± sample std over the runs of the cell (pretraining seeds x few-shot "
    lines = [cells + f"seeds; the mean weighs each pretraining seed equally); {counts}."]
    if report.baseline in report.methods:
        lines.append(
            f"{BETTER} / {WORSE}: significantly above / below {report.labels.get(report.baseline, report.baseline)} "
            f"in the same column (p < {report.alpha:g}, {test_text(report.test)}; "
            f"{report.samples} resamples, seed {report.seed})."
        )
    if any(c.partial for c in report.cells.values()):
        lines.append(f"{PARTIAL}: partial ARG over the dataset groups present.")
    if any(c.shared and c.column.prompt != NO_PROMPT for c in report.cells.values()):
        lines.append("Prompt-less runs (prompt: none, e.g. 0-shot MTL-T) fill both prompt columns.")
    return lines + provenance_notes(report) + report.notes


def render_markdown(report: Report, scale_note: str | None = None) -> str:
    """The table as Markdown, with the scale note above it and a legend below."""
    out = ["# ARG (%) on held-out templates", ""]
    if scale_note:
        out += [f"Scale: {scale_note}", ""]
    out.append("| Method | " + " | ".join(c.label for c in report.columns) + " |")
    out.append("|---|" + "---:|" * len(report.columns))
    for method in report.methods:
        out.append(f"| {report.labels.get(method, method)} | " + " | ".join(_row_texts(report, method, "–")) + " |")
    return "\n".join(out + [""] + [f"- {line}" for line in _legend(report)]) + "\n"


def _row_texts(report: Report, method: str, empty: str) -> list[str]:
    """The texts of ``method``'s cells in column order, ``empty`` where it has none."""
    return [
        report.cells[(method, c)].text(report.alpha) if (method, c) in report.cells else empty for c in report.columns
    ]


def _csv(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _cell_record(cell: Cell, report: Report, partial: bool) -> dict[str, Any]:
    comp = cell.comparison
    return {
        "method": cell.method,
        "model_size": cell.column.model_size,
        "prompt": cell.column.prompt,
        "shots": cell.column.shots,
        "arg_mean": cell.mean,
        "arg_std": cell.std,
        "args": cell.args,
        "seeds": [r.seed for r in cell.runs],
        "partial": cell.partial,
        "from_prompt_less_run": cell.shared,
        "baseline": report.baseline if comp else None,
        **{k: getattr(comp, k) if comp else None for k in ("difference", "ci_low", "ci_high", "p_value", "p_worse")},
        "mark": cell.mark(report.alpha),
        "text": cell.text(report.alpha),
        "note": cell.note,
        "runs": [str(r.path) for r in cell.runs],
        **seed_record(cell.runs, cell.args, report.test if comp else None),
        "group_accuracy": {g: m for g, (m, _) in _group_stats(cell, partial).items()},
    }


def _group_stats(cell: Cell, partial: bool) -> dict[str, tuple[float, float]]:
    """Per dataset group: (mean, std over seeds) of the mean accuracy of its templates."""
    per_run = [run.arg(partial=partial).group_accuracy for run in cell.runs]
    return {g: (float(np.mean([r[g] for r in per_run])), float(np.std([r[g] for r in per_run]))) for g in per_run[0]}


def report_json(report: Report, scale_note: str | None = None, partial: bool = False) -> dict[str, Any]:
    cells = [
        _cell_record(report.cells[(method, column)], report, partial)
        for method in report.methods
        for column in report.columns
        if (method, column) in report.cells
    ]
    return {
        "metric": "ARG (%)",
        "scale_note": scale_note,
        "baseline": report.baseline,
        "alpha": report.alpha,
        "bootstrap": {"samples": report.samples, "seed": report.seed, "test": report.test},
        "methods": report.methods,
        "columns": [
            {"model_size": c.model_size, "prompt": c.prompt, "shots": c.shots, "label": c.label} for c in report.columns
        ],
        "cells": cells,
        "legend": _legend(report),
    }


def plot_group_accuracy(report: Report, path: str | Path, *, partial: bool = False) -> Path:
    """Grouped bars of per-dataset-group accuracy, one subplot per table column, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(report.columns), 1, figsize=(11, 3.2 * len(report.columns) + 0.6), squeeze=False)
    # One colour per method across all subplots, and one legend for the figure.
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(report.methods)}
    for ax, column in zip(axes[:, 0], report.columns):
        present = [m for m in report.methods if (m, column) in report.cells]
        stats = {m: _group_stats(report.cells[(m, column)], partial) for m in present}
        spec = resolve_groups(report.cells[(present[0], column)].runs[0].arg_groups)
        order = sorted({g for g, _ in spec.values()})  # the same order in every subplot
        groups = [g for g in order if any(g in s for s in stats.values())]
        width = 0.8 / len(present)
        for i, method in enumerate(present):
            xs = np.arange(len(groups)) + (i - (len(present) - 1) / 2) * width
            means = [stats[method].get(g, (math.nan, 0))[0] * 100 for g in groups]
            seeds = len(report.cells[(method, column)].runs) > 1
            errs = [stats[method].get(g, (0, 0))[1] * 100 for g in groups] if seeds else None
            ax.bar(xs, means, width, yerr=errs, capsize=2, color=colours[method])
        for j, group in enumerate(groups):
            # Chance accuracy of the group's mean accuracy: the mean of 1/k over its templates.
            chance = np.mean([1 / k for g, k in spec.values() if g == group]) * 100
            ax.hlines(chance, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(column.label)
    handles: list[Artist] = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in report.methods]
    handles.append(plt.Line2D([], [], color="black", linestyle="dashed", linewidth=1))
    labels = [report.labels.get(m, m) for m in report.methods] + ["chance"]
    top = 1 - 0.5 / fig.get_figheight()
    fig.legend(handles, labels, loc="upper center", ncols=min(len(labels), 7), frameon=False, fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, top))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(
    report: Report, out_dir: str | Path, *, scale_note: str | None = None, partial: bool = False
) -> dict[str, Path]:
    """Write table.md, table.csv (as displayed), cells.csv (numbers), table.json and per_group_accuracy.png."""
    out = Path(out_dir)
    data = report_json(report, scale_note, partial)
    wide = [["method"] + [c.label for c in report.columns]]
    wide += [[report.labels.get(method, method), *_row_texts(report, method, "")] for method in report.methods]
    keys = [k for k in data["cells"][0] if k not in ("group_accuracy", "arg_by_pretrain_seed")]  # mappings: JSON only
    long = [keys] + [[_csv_value(rec[k]) for k in keys] for rec in data["cells"]]
    return {
        "markdown": write_text_atomic(out / "table.md", render_markdown(report, scale_note)),
        "csv": write_text_atomic(out / "table.csv", _csv(wide)),
        "cells_csv": write_text_atomic(out / "cells.csv", _csv(long)),
        "json": write_json_atomic(out / "table.json", data),
        "png": plot_group_accuracy(report, out / "per_group_accuracy.png", partial=partial),
    }


def _csv_value(value: Any) -> Any:
    """CSV-friendly value: lists joined by ';', None as empty."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join("" if v is None else str(v) for v in value)
    return value
