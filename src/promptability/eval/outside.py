"""Runs of other tools: a folder with ``predictions.jsonl`` (and maybe ``accuracy.json``) but no ``run.json``.

Each line of an outside ``predictions.jsonl`` is one instance: ``task`` (or ``template``), ``index`` (or
``id``: the instance's position in its template, an integer >= 0, as ours), and either ``prediction`` and
``label`` (choice numbers) or ``correct`` (true/false; with ``label`` too when it is known). ``scores``
(one per choice) or ``num_choices`` are optional and give each instance's chance level. Without
``accuracy.json`` the accuracies come from the predictions; with it, the two must agree.

What the run is (method, prompt, shots, model) is not in the folder: the caller passes it
(``compare``/``arg`` options), and what it does not pass reads "unknown".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptability.eval.runs import (
    ACCURACY_FILE,
    NO_LABEL,
    PREDICTIONS_FILE,
    RUN_FILE,
    Run,
    RunError,
    _is_int,
    _parse_accuracy,
    _read_json,
    check_agreement,
    is_outside_run,
    load_run,
    read_predictions,
)
from promptability.model.prompts import prompt_names

UNKNOWN = "unknown"
IDENTITY_FIELDS = ("method", "prompt", "shots", "model")


def outside_identity(path: Path, identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run.json-like fields of an outside run: those given, validated, and "unknown" for the rest."""
    given = {k: v for k, v in (identity or {}).items() if v is not None}
    unknown = sorted(set(given) - set(IDENTITY_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown identity field(s) {unknown}; expected some of {list(IDENTITY_FIELDS)}")
    method, prompt = given.get("method", UNKNOWN), given.get("prompt", UNKNOWN)
    if not isinstance(method, str) or not method:
        raise ValueError(f"{path}: method must be a non-empty string such as 'mtl-tp', got {method!r}")
    if prompt != UNKNOWN and prompt not in prompt_names():
        raise ValueError(f"{path}: prompt must be one of {prompt_names()}, got {prompt!r}")
    shots = given.get("shots")
    if shots is not None and (not _is_int(shots) or shots < 0):
        raise ValueError(f"{path}: shots must be an integer >= 0, got {shots!r}")
    model = str(given.get("model", UNKNOWN))
    return {"method": method.lower(), "prompt": prompt, "shots": shots, "model": model, "outside": True}


def _field(row: dict[str, Any], names: tuple[str, ...], where: str) -> Any:
    for name in names:
        if name in row:
            return row[name]
    raise ValueError(f"{where}: missing field {' or '.join(repr(n) for n in names)}")


def outside_row(row: Any, where: str) -> tuple[str, int, int, bool, int]:
    """(task, index, label or NO_LABEL, correct, number of choices or 0 when unknown) of one line."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object")
    task, index = _field(row, ("task", "template"), where), _field(row, ("index", "id"), where)
    if not isinstance(task, str) or not task:
        raise ValueError(f"{where}: the template name ('task') must be a non-empty string, got {task!r}")
    if not _is_int(index) or index < 0:
        raise ValueError(f"{where}: the instance number ('index' or 'id') must be an integer >= 0, got {index!r}")
    scores = row.get("scores")
    if scores is not None and (not isinstance(scores, list) or len(scores) < 2):
        raise ValueError(f"{where}: 'scores' must be a list with one score per choice (>= 2)")
    choices = len(scores) if scores is not None else row.get("num_choices", 0)
    if not _is_int(choices) or choices == 1 or choices < 0:
        raise ValueError(f"{where}: 'num_choices' must be an integer >= 2, got {choices!r}")
    for key in ("prediction", "label"):
        value = row.get(key)
        if value is not None and (not _is_int(value) or value < 0 or (choices and value >= choices)):
            bound = f" in [0, {choices})" if choices else " >= 0"
            raise ValueError(f"{where}: {key!r} must be an integer{bound}, got {value!r}")
    label, prediction, correct = row.get("label"), row.get("prediction"), row.get("correct")
    if correct is None:
        if prediction is None or label is None:
            raise ValueError(f"{where}: needs 'prediction' and 'label', or 'correct'")
        correct = prediction == label
    elif not isinstance(correct, bool):
        raise ValueError(f"{where}: 'correct' must be true or false, got {correct!r}")
    elif prediction is not None and label is not None and correct != (prediction == label):
        raise ValueError(f"{where}: 'correct' is {correct} but prediction {prediction} vs label {label} says otherwise")
    return task, int(index), NO_LABEL if label is None else int(label), correct, int(choices)


def load_outside_run(root: Path, identity: Mapping[str, Any] | None) -> Run:
    """The outside run in ``root`` (see the module docstring) as a ``Run``."""
    try:
        info = outside_identity(root, identity)
        preds = dict(sorted(read_predictions(root / PREDICTIONS_FILE, outside_row).items()))
    except ValueError as err:
        raise RunError(str(err)) from None
    if not preds:
        raise RunError(f"{root / PREDICTIONS_FILE}: no predictions")
    accuracy = {task: float(p.correct.mean()) for task, p in preds.items()}
    if (root / ACCURACY_FILE).is_file():
        accuracy = _parse_accuracy(root / ACCURACY_FILE, _read_json(root / ACCURACY_FILE))
        check_agreement(root, preds, accuracy)
    fields = {k: info[k] for k in IDENTITY_FIELDS}
    return Run(path=root, **fields, model_size=Path(info["model"]).name, seed=None, groups=None, accuracy=accuracy,
               predictions=preds, meta=info)  # fmt: skip


def load_any_run(
    path: str | Path, *, require_predictions: bool = False, identity: Mapping[str, Any] | None = None
) -> Run:
    """``runs.load_run`` for our runs, ``load_outside_run`` for a folder with only another tool's predictions.

    ``identity`` (``method``, ``prompt``, ``shots``, ``model``; None values ignored) is for the latter only.
    """
    root = Path(path)
    if is_outside_run(root):
        return load_outside_run(root, identity)
    if given := sorted(k for k, v in (identity or {}).items() if v is not None):
        raise RunError(f"{root}: has a {RUN_FILE}, which says what the run is; {given} are for runs without one")
    return load_run(root, require_predictions=require_predictions)
