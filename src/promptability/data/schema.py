"""The prompted-example record every reader produces, and its validation.

One record is a plain dict with the fields below; readers yield them, the
batching layer tokenizes them, the evaluator scores ``choices`` against
``source``. Errors name the file, the row and the field at fault.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypedDict

FIELDS = ("task", "source", "target", "choices", "label")


class Example(TypedDict, total=False):
    task: str  # template name, e.g. "super_glue_rte_GPT_3_style"
    source: str  # NL-templated input text
    target: str  # answer text (the correct choice for evaluation data)
    choices: list[str]  # answer strings; empty for generation-only training data
    label: int  # index of the correct choice; -1 when there are no choices


class DataError(ValueError):
    """Bad input data: the message names the file, row and field."""


def not_utf8(path: str | os.PathLike[str], err: UnicodeDecodeError) -> DataError:
    """A ``DataError`` naming the file and the first line of it that is not UTF-8."""
    with open(path, "rb") as f:
        for row, raw in enumerate(f):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return DataError(f"{path}, row {row} (line {row + 1}): not UTF-8 text (byte {raw[bad.start]:#04x})")
    return DataError(f"{path}: not UTF-8 text ({err.reason})")


def validate(record: Mapping[str, Any], origin: str | None = None, row: int | None = None) -> Example:
    """Checks one record and returns it normalised (choices a list, label an int).

    Training records may omit ``choices``/``label``; evaluation records need
    both, with ``label`` indexing ``choices``. A record with choices needs at least two
    (one choice is always "right"), and its label may not point at a second copy of an
    earlier choice (rank classification gives ties to the first copy, so the instance
    could never be right). Other repeats are fine: real P3 templates repeat choices
    (trec ``fine_grained_*``, social_i_qa, commonsense_qa, dream), labelled at the first copy.
    """
    at = (origin or "<data>") + (f", row {row}" if row is not None else "")
    if not isinstance(record, dict):
        raise DataError(f"{at}: expected an object with fields {FIELDS}, got {type(record).__name__}")
    for field in ("task", "source", "target"):
        if field not in record or record[field] is None:
            raise DataError(f"{at}: missing field '{field}'")
        if not isinstance(record[field], str):
            raise DataError(f"{at}: field '{field}' must be a string, got {type(record[field]).__name__}")
    if not record["task"]:
        raise DataError(f"{at}: field 'task' is empty")
    choices = record.get("choices")
    label = record.get("label")
    if choices is None or (isinstance(choices, (list, tuple)) and len(choices) == 0 and label in (None, -1)):
        # A training-only record: no choices to rank.
        return Example(task=record["task"], source=record["source"], target=record["target"], choices=[], label=-1)
    if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{at}: field 'choices' must be a list of strings")
    if len(choices) == 0:
        raise DataError(f"{at}: field 'choices' is empty")
    if len(choices) == 1:
        raise DataError(f"{at}: field 'choices' has one choice ({choices[0]!r}); ranking needs at least two")
    if label is None:
        raise DataError(f"{at}: missing field 'label' (records with choices need the index of the correct one)")
    if isinstance(label, bool) or not isinstance(label, int):
        raise DataError(f"{at}: field 'label' must be an integer, got {label!r}")
    if not 0 <= label < len(choices):
        raise DataError(f"{at}: field 'label' is {label}, outside the {len(choices)} choices")
    if list(choices).index(choices[label]) != label:
        raise DataError(
            f"{at}: field 'choices' holds {choices[label]!r} more than once and 'label' {label} points at a later "
            "copy (ties go to the first, so it could never be right)"
        )
    return Example(
        task=record["task"], source=record["source"], target=record["target"], choices=list(choices), label=int(label)
    )


def validate_all(records: Iterable[Mapping[str, Any]]) -> Iterator[Example]:
    for row, record in enumerate(records):
        yield validate(record, None, row)
