"""Reading the run directories written by ``promptability evaluate --out DIR``.

A run directory holds ``run.json`` (what was evaluated), ``accuracy.json``
(``{task: accuracy}``) and ``predictions.jsonl`` (one line per instance: ``task``,
``index``, ``scores``, ``prediction``, ``label``). ``load_run`` validates all three
and says which file, line and field is wrong. A folder with ``predictions.jsonl`` and no ``run.json`` is
another tool's run, read by ``eval.outside``.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from promptability.eval.groups import arg_groups as arg_groups_of
from promptability.eval.metrics import ARGResult, MetricsError, arg_breakdown, chance_level, is_fraction, resolve_groups
from promptability.model.prompts import prompt_names

__all__ = [
    "Run",
    "RunError",
    "TaskPredictions",
    "check_agreement",
    "check_same_instances",
    "find_runs",
    "group_by_config",
    "is_outside_run",
    "load_accuracies",
    "load_run",
    "pooled_correctness",
    "seed_correctness",
    "split_by_pretrain_seed",
]

RUN_FILE, ACCURACY_FILE, PREDICTIONS_FILE = "run.json", "accuracy.json", "predictions.jsonl"
NO_LABEL = -1  # the label of an instance whose outside run did not write it


class RunError(ValueError):
    """A run directory is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class TaskPredictions:
    """One task's instances, sorted by ``index``; ``num_choices`` is each instance's (``len(scores)``)."""

    index: np.ndarray
    label: np.ndarray  # NO_LABEL (-1) where an outside run did not write it
    correct: np.ndarray
    num_choices: np.ndarray  # 0 where an outside run did not write it


@dataclass
class Run:
    path: Path
    method: str
    prompt: str
    shots: int | None  # None: an outside run whose shots were not given
    model: str
    model_size: str
    seed: int | None
    groups: dict[str, dict[str, Any]] | None
    accuracy: dict[str, float]
    predictions: dict[str, TaskPredictions] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    pretrain_seed: int | None = None  # the continued-pretraining seed of the model; None: one model, no seeds
    model_family: str | None = None  # what the models of one row's pretraining seeds share (out/models/<row>)

    @property
    def config(self) -> tuple[str, str, int | None, str]:
        """What the runs of one configuration share: (method, prompt, shots, model), where the model of a
        seeded row is its family, so its pretraining seeds and few-shot seeds land in one cell."""
        return (self.method, self.prompt, self.shots, self.model_family or self.model)

    @property
    def arg_groups(self) -> dict[str, dict[str, Any]] | None:
        """The groups ARG is taken over: None (all 116 P3 held-out templates) for P3 runs (see eval.groups)."""
        return arg_groups_of(self.groups)

    @property
    def chance(self) -> dict[str, float] | None:
        """Each task's chance accuracy, the mean of 1/n over its instances (None without predictions); tasks
        of an outside run with unknown numbers of choices are left out (their groups' count is used)."""
        if self.predictions is None:
            return None
        return {
            task: chance_level(p.num_choices.tolist()) for task, p in self.predictions.items() if p.num_choices.all()
        }

    def arg(self, *, partial: bool = False) -> ARGResult:
        """ARG with chance from the predictions' per-instance choices; from ``num_choices`` without them."""
        try:
            return arg_breakdown(self.accuracy, self.arg_groups, partial=partial, chance=self.chance)
        except MetricsError as err:
            raise MetricsError(f"run {self.path}: {err}") from None

    def require_predictions(self) -> dict[str, TaskPredictions]:
        if self.predictions is None:
            raise RunError(f"{self.path / PREDICTIONS_FILE}: missing; per-instance predictions are needed here")
        return self.predictions

    def instances(self, labels: bool = True) -> set[tuple[str, int, int]]:
        """The set of (task, index, label) the run was evaluated on (label NO_LABEL for all with ``labels=False``)."""
        return {
            (task, int(i), int(y) if labels else NO_LABEL)
            for task, p in self.require_predictions().items()
            for i, y in zip(p.index, p.label)
        }


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise RunError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunError(f"{path}: not valid JSON ({err})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _parse_meta(path: Path, meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key in ("method", "prompt", "shots", "model"):
        if key not in meta:
            raise RunError(f"{path}: missing field {key!r}")
    if not isinstance(meta["method"], str) or not meta["method"]:
        raise RunError(f"{path}: 'method' must be a non-empty string such as 'mtl-tp', got {meta['method']!r}")
    if meta["prompt"] not in prompt_names():
        raise RunError(f"{path}: 'prompt' must be one of {prompt_names()}, got {meta['prompt']!r}")
    if not _is_int(meta["shots"]) or meta["shots"] < 0:
        raise RunError(f"{path}: 'shots' must be an integer >= 0, got {meta['shots']!r}")
    if meta.get("seed") is not None and not _is_int(meta["seed"]):
        raise RunError(f"{path}: 'seed' must be an integer or null, got {meta['seed']!r}")
    size = meta.get("model_size") or Path(str(meta["model"])).name
    groups = meta.get("groups")
    if groups is not None:
        try:
            resolve_groups(groups)
        except ValueError as err:
            raise RunError(f"{path}: field 'groups': {err}") from None
    return {
        "method": meta["method"].lower(),
        "prompt": meta["prompt"],
        "shots": int(meta["shots"]),
        "model": str(meta["model"]),
        "model_size": str(size),
        "seed": None if meta.get("seed") is None else int(meta["seed"]),
        "groups": groups,
    }


def _parse_pretrain(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The optional ``pretrain_seed`` (int or null) and ``model_family`` (a string) of a run.json."""
    seed, family = meta.get("pretrain_seed"), meta.get("model_family")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise RunError(f"{path}: 'pretrain_seed' must be an integer >= 0 or null, got {seed!r}")
    if family is not None and (not isinstance(family, str) or not family):
        raise RunError(f"{path}: 'model_family' must be a non-empty string, got {family!r}")
    return {"pretrain_seed": None if seed is None else int(seed), "model_family": family}


def _parse_accuracy(path: Path, data: Any) -> dict[str, float]:
    if not isinstance(data, dict) or not data:
        raise RunError(f"{path}: expected a non-empty object {{task: accuracy}}")
    for task, acc in data.items():
        if not is_fraction(acc):
            raise RunError(f"{path}: accuracy of {task!r} must be a fraction in [0, 1], got {acc!r}")
    return {str(task): float(acc) for task, acc in data.items()}


def read_predictions(
    path: Path, parse: Callable[[Any, str], tuple[str, int, int, bool, int]]
) -> dict[str, TaskPredictions]:
    """A predictions JSONL per task, sorted by index; ``parse(row, where)`` gives each line's (task, index,
    label, correct, number of choices) or raises naming ``where``. An instance twice is an error."""
    rows: dict[str, list[tuple[int, int, bool, int]]] = {}
    seen: set[tuple[str, int]] = set()
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RunError(f"{where}: not valid JSON ({err})") from None
            task, index, label, correct, choices = parse(row, where)
            if (task, index) in seen:
                raise RunError(f"{where}: duplicate instance (task {task!r}, index {index})")
            seen.add((task, index))
            rows.setdefault(task, []).append((index, label, correct, choices))
    arrays = {task: np.array(sorted(items), dtype=np.int64).reshape(-1, 4) for task, items in rows.items()}
    return {t: TaskPredictions(index=a[:, 0], label=a[:, 1], correct=a[:, 2].astype(bool), num_choices=a[:, 3])
            for t, a in arrays.items()}  # fmt: skip


def _our_row(row: Any, where: str, choices: dict[str, int]) -> tuple[str, int, int, bool, int]:
    """One line of our ``predictions.jsonl`` (``evaluate``'s), checked against the run's numbers of choices."""
    if not isinstance(row, dict):
        raise RunError(f"{where}: expected a JSON object")
    for key in ("task", "index", "scores", "prediction", "label"):
        if key not in row:
            raise RunError(f"{where}: missing field {key!r}")
    task, index, scores = row["task"], row["index"], row["scores"]
    if not isinstance(task, str) or not _is_int(index) or index < 0:
        raise RunError(f"{where}: 'task' must be a string and 'index' an integer >= 0")
    if not isinstance(scores, list) or len(scores) < 2:
        raise RunError(f"{where}: 'scores' must be a list with one score per choice (>= 2)")
    for key in ("prediction", "label"):
        if not _is_int(row[key]) or not 0 <= row[key] < len(scores):
            raise RunError(f"{where}: {key!r} must be an integer in [0, {len(scores)}), got {row[key]!r}")
    # Tasks may vary their number of choices per instance; more than the group's count is an error.
    if task in choices and len(scores) > choices[task]:
        raise RunError(f"{where}: {len(scores)} scores but task {task!r} has {choices[task]} choices")
    return task, index, row["label"], row["prediction"] == row["label"], len(scores)


def load_run(path: str | Path, *, require_predictions: bool = False) -> Run:
    """Load and validate a run directory (or its ``run.json``).

    ``predictions.jsonl`` is read when present (``require_predictions`` makes it
    mandatory); its tasks must match ``accuracy.json`` and its per-task accuracy
    must agree with it to half an instance. Another tool's run (no ``run.json``):
    ``eval.outside.load_any_run``.
    """
    root = Path(path)
    if root.name == RUN_FILE and root.is_file():
        root = root.parent
    if not root.is_dir():
        raise RunError(
            f"{root}: not a run directory (a folder with {RUN_FILE} and {ACCURACY_FILE}, or {PREDICTIONS_FILE})"
        )
    meta = _read_json(root / RUN_FILE)
    info = _parse_meta(root / RUN_FILE, meta)
    accuracy = _parse_accuracy(root / ACCURACY_FILE, _read_json(root / ACCURACY_FILE))
    preds = None
    pred_path = root / PREDICTIONS_FILE
    if pred_path.is_file():
        choices = {t: k for t, (_, k) in resolve_groups(info["groups"]).items()}
        preds = read_predictions(pred_path, lambda row, where: _our_row(row, where, choices))
        check_agreement(root, preds, accuracy)
    elif require_predictions:
        raise RunError(f"{pred_path}: file not found (per-instance predictions are needed)")
    pretrain = _parse_pretrain(root / RUN_FILE, meta)
    return Run(path=root, accuracy=accuracy, predictions=preds, meta=meta, **info, **pretrain)


def is_outside_run(path: Path) -> bool:
    """A folder with another tool's predictions.jsonl: no run.json."""
    return path.is_dir() and not (path / RUN_FILE).is_file() and (path / PREDICTIONS_FILE).is_file()


def check_agreement(root: Path, preds: dict[str, TaskPredictions], accuracy: dict[str, float]) -> None:
    """Raise unless ``predictions.jsonl`` and ``accuracy.json`` list the same tasks, with the same accuracies."""
    if set(preds) != set(accuracy):
        only_p, only_a = sorted(set(preds) - set(accuracy)), sorted(set(accuracy) - set(preds))
        raise RunError(
            f"{root}: {PREDICTIONS_FILE} and {ACCURACY_FILE} list different tasks "
            f"(only in predictions: {only_p}; only in accuracy: {only_a})"
        )
    for task, p in preds.items():
        recomputed = float(p.correct.mean())
        if abs(recomputed - accuracy[task]) > 0.5 / p.correct.size:
            raise RunError(
                f"{root}: accuracy of {task!r} is {accuracy[task]} in {ACCURACY_FILE} but "
                f"{recomputed} from {PREDICTIONS_FILE}"
            )


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each a run dir (ours, or an outside one), its run.json, or a folder
    searched for run dirs (ours only: a run.json marks them)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.name == RUN_FILE and path.is_file():
            hits = [path.parent]
        elif (path / RUN_FILE).is_file() or is_outside_run(path):
            hits = [path]
        elif path.is_dir():
            hits = sorted(p.parent for p in path.rglob(RUN_FILE))
            if not hits:
                raise RunError(f"{path}: no {RUN_FILE} found in this folder or below")
        else:
            raise RunError(f"{path}: no such run directory")
        found.extend(h for h in hits if h.resolve() not in {f.resolve() for f in found})
    return found


def load_accuracies(path: str | Path) -> tuple[dict[str, float], dict[str, Any] | None, dict[str, Any] | None]:
    """``({task: accuracy}, groups or None, run.json or None)`` from a run dir or an accuracy.json-style file.

    For a file, the groups and run.json come from a ``run.json`` beside it, when there is one;
    None groups mean the P3 held-out registry.
    """
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such file or run directory")
    if path.is_dir():
        if not (path / RUN_FILE).is_file() and (path / ACCURACY_FILE).is_file():
            path = path / ACCURACY_FILE
        else:
            run = load_run(path)
            return run.accuracy, run.arg_groups, run.meta
    accuracy = _parse_accuracy(path, _read_json(path))
    sibling = path.parent / RUN_FILE
    meta = _read_json(sibling) if sibling.is_file() else None
    groups = None if meta is None else _parse_meta(sibling, meta)["groups"]
    return accuracy, arg_groups_of(groups), meta


def check_same_instances(runs: list[Run]) -> None:
    """Raise ``RunError`` unless all runs were evaluated on the same (task, index, label) set.

    When an outside run did not write its labels, the (task, index) sets are compared.
    """
    labels = all(NO_LABEL not in p.label for run in runs for p in run.require_predictions().values())
    reference = runs[0].instances(labels)
    for other in runs[1:]:
        theirs = other.instances(labels)
        if theirs != reference:
            only_a, only_b = sorted(reference - theirs), sorted(theirs - reference)
            raise RunError(
                f"runs {runs[0].path} and {other.path} were evaluated on different instances: "
                f"{len(only_a)} only in the first (e.g. {only_a[:3]}), {len(only_b)} only in the second "
                f"(e.g. {only_b[:3]}); paired comparison needs the same (task, index, label) set"
            )


def pooled_correctness(runs: list[Run]) -> dict[str, np.ndarray]:
    """Per task, the fraction of ``runs`` (e.g. few-shot seeds) right on each instance, by index."""
    check_same_instances(runs)
    preds = [run.require_predictions() for run in runs]
    return {task: np.mean([p[task].correct for p in preds], axis=0) for task in preds[0]}


def group_by_config(runs: list[Run]) -> dict[tuple[str, str, int | None, str], list[Run]]:
    """Runs grouped by configuration (the seeds of one config together, sorted by pretraining seed, then seed)."""
    grouped: dict[tuple[str, str, int | None, str], list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.config, []).append(run)
    for config, members in grouped.items():
        members.sort(key=_seed_key)
        if members[0].pretrain_seed is not None and members[-1].pretrain_seed is None:
            raise RunError(
                f"runs {members[0].path} and {members[-1].path} have the same configuration {config} but only the "
                "first records a pretraining seed (a folder from before pretraining seeds? rerun it with --force)"
            )
        for i in range(1, len(members)):
            if _seed_key(members[i]) == _seed_key(members[i - 1]):
                pseed = "" if members[i].pretrain_seed is None else f"pretraining seed {members[i].pretrain_seed}, "
                raise RunError(
                    f"runs {members[i - 1].path} and {members[i].path} have the same configuration "
                    f"{config} and the same {pseed}seed {members[i].seed}; pass each run once"
                )
    return grouped


def _seed_key(run: Run) -> tuple[bool, int, bool, int]:
    return (run.pretrain_seed is None, run.pretrain_seed or 0, run.seed is None, run.seed or 0)


def split_by_pretrain_seed(runs: list[Run]) -> list[list[Run]]:
    """The runs of one configuration per pretraining seed (in seed order; runs without one form one group)."""
    return [list(group) for _, group in groupby(sorted(runs, key=_seed_key), key=lambda run: run.pretrain_seed)]


def seed_correctness(runs: list[Run]) -> list[list[dict[str, np.ndarray]]]:
    """``[pretraining seed][few-shot run] -> {task: correct}`` for ``eval.significance.hierarchical_bootstrap``."""
    check_same_instances(runs)
    return [
        [{task: p.correct for task, p in run.require_predictions().items()} for run in group]
        for group in split_by_pretrain_seed(runs)
    ]
