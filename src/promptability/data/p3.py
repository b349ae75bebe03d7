"""Reading P3 (Sanh et al., 2022) template folders into records.

Two on-disk layouts are read, one folder per template (the folder name is the
template name):

* ``datasets.save_to_disk`` output (``dataset_dict.json`` plus one folder per split);
* the native Hub layout of ``bigscience/P3``: ``{split}.tfrecord-NNNNN-of-NNNNN``
  shards and ``info.{split}.json``, read with the ``tfrecord`` package (no TensorFlow).

Both give the same raw rows (``inputs``, ``inputs_pretokenized``, ``targets``,
``targets_pretokenized`` and, where present, ``answer_choices``, ``is_correct``,
``idx``, ``weight``). Rows become *instances*:

* ``_score_eval`` rows (they carry ``is_correct``) hold one row per (instance, choice);
  consecutive rows are one instance until ``idx[1]`` restarts at 0. Choices are the
  rows' stripped targets, the label the row with ``is_correct``.
* rows with ``answer_choices``: the stripped target is the correct choice.
* rows without either (training templates): ``choices=[]``, ``label=-1``.

The record's ``source`` is ``inputs_pretokenized`` unchanged (T5's tokenizer drops the
surrounding whitespace and newlines anyway, and P3's ``inputs`` ids were made from it);
``target`` and ``choices`` are stripped, as P3 pads them with newlines. Instances keep
the token ids (``inputs``, ``targets``) for the few-shot md5 check. Rows count from 0.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypedDict

from promptability.data.schema import DataError, Example, validate

TFRECORD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)\.tfrecord-(?P<index>\d+)-of-(?P<count>\d+)$")
# Shapes used when a native folder lacks its info.{split}.json: True = one value.
_SCALAR_FIELDS = {"inputs_pretokenized", "targets_pretokenized", "is_correct", "weight"}


class P3Instance(TypedDict):
    inputs: list[int]  # token ids of the prompted input
    targets: list[int] | list[list[int]]  # target ids, or one id list per choice (_score_eval)
    source: str
    target: str
    choices: list[str]
    label: int
    row: int  # first raw row of the instance in its split


def p3_format(path: str | os.PathLike[str]) -> str | None:
    """ "arrow" for a save_to_disk template folder, "tfrecord" for the Hub layout, else None."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / "dataset_dict.json").is_file():
        return "arrow"
    if any(TFRECORD_RE.match(f.name) for f in p.iterdir() if f.is_file()):
        return "tfrecord"
    return None


def p3_splits(path: str | os.PathLike[str]) -> list[str]:
    """The splits of one P3 template folder, sorted."""
    p = Path(path)
    fmt = p3_format(p)
    if fmt == "arrow":
        try:
            return sorted(json.loads((p / "dataset_dict.json").read_text())["splits"])
        except (ValueError, KeyError) as err:
            raise DataError(f"{p / 'dataset_dict.json'}: unreadable split list ({err})") from None
    if fmt == "tfrecord":
        return sorted({m["split"] for f in p.iterdir() if (m := TFRECORD_RE.match(f.name))})
    raise DataError(f"{p}: not a P3 template folder (no dataset_dict.json and no *.tfrecord-*-of-* files)")


def iter_p3_rows(path: str | os.PathLike[str], split: str) -> Iterator[dict[str, Any]]:
    """Raw P3 rows of one split, as plain Python values (ids as int lists, strings decoded)."""
    p = Path(path)
    if split not in (splits := p3_splits(p)):
        raise DataError(f"{p}: template '{p.name}' has no '{split}' split (it has: {', '.join(splits)})")
    if p3_format(p) == "arrow":
        yield from _arrow_rows(p, split)
    else:
        yield from _tfrecord_rows(p, split)


def _arrow_rows(path: Path, split: str) -> Iterator[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path / split))
    except Exception as err:  # datasets raises several types for a damaged folder
        raise DataError(f"{path / split}: cannot load the saved dataset ({err})") from None
    for batch in ds.iter(batch_size=1000):  # {column: values} -> one dict per row
        yield from (dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True))


def _feature_shapes(path: Path, split: str) -> dict[str, dict[str, Any]]:
    info = path / f"info.{split}.json"
    if not info.is_file():
        return {}
    try:
        return dict(json.loads(info.read_text()).get("features", {}))
    except ValueError as err:
        raise DataError(f"{info}: not valid JSON ({err})") from None


def _tfrecord_rows(path: Path, split: str) -> Iterator[dict[str, Any]]:
    from tfrecord import example_pb2
    from tfrecord.reader import tfrecord_iterator

    shapes = _feature_shapes(path, split)
    shards = sorted(glob.glob(str(path / glob.escape(f"{split}.tfrecord-")) + "*-of-*"))
    row = 0
    for shard in shards:
        try:
            for raw in tfrecord_iterator(shard):
                example = example_pb2.Example()
                example.ParseFromString(bytes(raw))
                yield _decode_example(example, shapes, shard, row)
                row += 1
        except RuntimeError as err:  # tfrecord's message for a truncated file
            raise DataError(f"{shard}: row {row}: damaged TFRecord ({err})") from None


def _decode_example(example: Any, shapes: dict[str, dict[str, Any]], shard: str, row: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values: list[Any] = list(getattr(feature, kind).value) if kind else []
        info = shapes.get(name, {})
        dtype = info.get("dtype")
        if kind == "bytes_list":  # P3 stores only UTF-8 text as bytes
            try:
                values = [v.decode("utf-8") for v in values]
            except UnicodeDecodeError:
                raise DataError(f"{shard}: row {row}: field '{name}' is not UTF-8 text") from None
        if dtype == "bool" or name == "is_correct":
            values = [bool(v) for v in values]
        scalar = info["shape"] == [] if "shape" in info else name in _SCALAR_FIELDS
        if scalar:
            if len(values) != 1:
                raise DataError(f"{shard}: row {row}: field '{name}' should hold one value, has {len(values)}")
            out[name] = values[0]
        else:
            out[name] = values
    return out


def _ids(value: Any, at: str, field: str) -> list[int]:
    if value is None:
        raise DataError(f"{at}: missing field '{field}'")
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise DataError(f"{at}: field '{field}' must be a list of token ids") from None


def _text(row: dict[str, Any], at: str, field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        raise DataError(f"{at}: missing field '{field}'" if value is None else f"{at}: field '{field}' must be text")
    return value


def group_p3_rows(rows: Iterable[dict[str, Any]], origin: str | None = None) -> Iterator[P3Instance]:
    """Turns raw P3 rows into instances (one per _score_eval group, else one per row)."""
    group: list[tuple[int, dict[str, Any]]] = []
    for n, row in enumerate(rows):
        at = f"{origin or '<P3 rows>'}, row {n}"
        if "is_correct" not in row:
            if group:
                raise DataError(f"{at}: field 'is_correct' missing, but earlier rows have it")
            yield _plain_instance(row, n, at)
            continue
        idx = row.get("idx")
        if not isinstance(idx, (list, tuple)) or len(idx) != 2:
            raise DataError(f"{at}: field 'idx' must be [instance, choice] in _score_eval data, got {idx!r}")
        if int(idx[1]) == 0 and group:
            yield _scored_instance(group, origin)
            group = []
        if int(idx[1]) != len(group):
            raise DataError(f"{at}: field 'idx' is {list(idx)}; expected choice {len(group)} of the current instance")
        group.append((n, row))
    if group:
        yield _scored_instance(group, origin)


def _plain_instance(row: dict[str, Any], n: int, at: str) -> P3Instance:
    target = _text(row, at, "targets_pretokenized").strip()
    inst = P3Instance(
        inputs=_ids(row.get("inputs"), at, "inputs"),
        targets=_ids(row.get("targets"), at, "targets"),
        source=_text(row, at, "inputs_pretokenized"),
        target=target,
        choices=[],
        label=-1,
        row=n,
    )
    answer_choices = row.get("answer_choices")
    if answer_choices is not None:
        if not isinstance(answer_choices, (list, tuple)) or not all(isinstance(c, str) for c in answer_choices):
            raise DataError(f"{at}: field 'answer_choices' must be a list of strings")
        choices = [c.strip() for c in answer_choices]
        if not choices:
            raise DataError(f"{at}: field 'answer_choices' is empty")
        if target not in choices:
            raise DataError(
                f"{at}: field 'targets_pretokenized' ({target!r}) is not one of the answer_choices {choices}"
            )
        inst["choices"], inst["label"] = choices, choices.index(target)
    return inst


def _scored_instance(group: list[tuple[int, dict[str, Any]]], origin: str | None) -> P3Instance:
    first_n, first = group[0]
    at = f"{origin or '<P3 rows>'}, row {first_n}"
    source = _text(first, at, "inputs_pretokenized")
    choices, targets, correct = [], [], []
    for n, row in group:
        row_at = f"{origin or '<P3 rows>'}, row {n}"
        if row.get("inputs_pretokenized") != source:
            raise DataError(f"{row_at}: field 'inputs_pretokenized' differs from row {first_n} of the same instance")
        choices.append(_text(row, row_at, "targets_pretokenized").strip())
        targets.append(_ids(row.get("targets"), row_at, "targets"))
        if row.get("is_correct"):
            correct.append(len(choices) - 1)
    if len(correct) != 1:
        rows = f"rows {first_n}-{group[-1][0]}"
        raise DataError(
            f"{origin or '<P3 rows>'}, {rows}: field 'is_correct' is true on {len(correct)} rows of one instance;"
            " expected exactly 1"
        )
    return P3Instance(
        inputs=_ids(first.get("inputs"), at, "inputs"),
        targets=targets,
        source=source,
        target=choices[correct[0]],
        choices=choices,
        label=correct[0],
        row=first_n,
    )


def read_p3_instances(path: str | os.PathLike[str], split: str) -> list[P3Instance]:
    """All instances of one split of a P3 template folder (token ids kept)."""
    from tqdm.auto import tqdm

    p = Path(path)
    # disable=None: a bar on terminals only; full P3 training splits take a while
    rows = tqdm(iter_p3_rows(p, split), desc=f"{p.name} [{split}]", unit=" rows", disable=None, leave=False)
    return list(group_p3_rows(rows, origin=f"{p} [{split}]"))


def instance_to_example(inst: P3Instance, task: str, origin: str | None = None) -> Example:
    """The schema record of one instance (validated)."""
    record = {"task": task, **{k: inst[k] for k in ("source", "target", "choices", "label")}}
    return validate(record, origin, inst["row"])


def read_p3(path: str | os.PathLike[str], split: str, task: str | None = None) -> list[Example]:
    """Records of one split of a P3 template folder; ``task`` defaults to the folder name."""
    p = Path(path)
    origin = f"{p} [{split}]"
    return [instance_to_example(i, task or p.name, origin) for i in read_p3_instances(p, split)]
