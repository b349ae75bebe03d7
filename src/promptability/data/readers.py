"""One entry point for every data layout: ``read_examples(path, split, tasks)``.

``path`` may be:

* a ``.jsonl`` or ``.parquet`` file of records (see ``schema``);
* a directory of such files, either named ``{task}.{split}.jsonl|parquet`` (the name
  gives the task and split; a ``task`` field, if present, must agree) or with any other
  name, whose records carry a ``task`` field and are read whatever the split;
* a directory of split folders holding ``{task}.jsonl|parquet`` (the offline suite's layout);
* one P3 template folder (``datasets.save_to_disk`` output or the Hub's TFRecord layout);
* a directory of P3 template folders, one per template (also a Hub snapshot's ``data/``).

``split`` is a split name, a function ``task -> split`` (e.g. ``train_split_for``), or
None for each task's evaluation split: "validation", but "test" for StoryCloze, whose
validation split serves as its few-shot training pool (it has no train split).
``tasks`` selects templates; naming one the data lacks is an error. Bad data raises
``DataError`` naming the file, the row (counting from 0; JSONL: line number - 1) and field.

``read_split`` adds the offline suite's layout (``{root}/{split}/{template}.jsonl`` next to a
``suite.json``, found by ``data.suite_layout.find_meta``); ``available_tasks`` tells a folder's templates from
its file names alone when the layout allows.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from promptability.data.p3 import p3_format, read_p3
from promptability.data.schema import DataError, Example, not_utf8, validate
from promptability.data.suite_layout import find_meta

SplitArg = str | Callable[[str], str] | None
DATA_SUFFIXES = (".jsonl", ".parquet")
# "{task}.{split}.jsonl". The split must look like one (train, validation, test, dev, optionally "_r1"...), because
# P3 template names hold dots themselves: "super_glue_wsc.fixed_GPT_3_Style_score_eval.jsonl" is a task, not a split.
NAMED_FILE = re.compile(
    r"^(?P<task>.+)\.(?P<split>(?:train|validation|test|dev)(?:_[A-Za-z0-9]+)?)\.(?:jsonl|parquet)$"
)


def eval_split_for(task: str) -> str:
    """The split a template is evaluated on: "validation" ("test" for StoryCloze)."""
    return "test" if task.startswith("story_cloze") else "validation"


def train_split_for(task: str) -> str:
    """The split few-shot examples come from: "train" ("validation" for StoryCloze)."""
    return "validation" if task.startswith("story_cloze") else "train"


def _split_fn(split: SplitArg) -> Callable[[str], str]:
    if split is None:
        return eval_split_for
    if callable(split):
        return split
    if not isinstance(split, str) or not split:
        raise DataError(f"split must be a split name such as 'validation', got {split!r}")
    return lambda task: split


def _task_set(tasks: Iterable[str] | str | None) -> set[str] | None:
    if tasks is None:
        return None
    names = {tasks} if isinstance(tasks, str) else set(tasks)
    if not names or not all(isinstance(t, str) and t for t in names):
        raise DataError(f"tasks must be a non-empty list of template names, got {tasks!r}")
    return names


def _unknown_tasks(missing: set[str], available: Iterable[str], where: str) -> DataError:
    available = sorted(set(available))
    hints = []
    for name in sorted(missing):
        close = difflib.get_close_matches(name, available, n=1)
        hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    shown = ", ".join(available[:10]) + (f", ... ({len(available)} in all)" if len(available) > 10 else "")
    return DataError(f"{where}: unknown template(s) {', '.join(hints)}; the data has: {shown or 'none'}")


def _missing_path(p: Path) -> DataError:
    parent = p.parent if p.parent.is_dir() else None
    close = difflib.get_close_matches(p.name, os.listdir(parent), n=1) if parent else []
    hint = f" (did you mean {parent / close[0]}?)" if parent and close else ""  # close is [] without a parent
    return DataError(f"{p}: no such file or directory{hint}")


def _with_task(record: Any, task: str | None, origin: str, row: int) -> Any:
    if task is None or not isinstance(record, dict):
        return record
    if record.get("task") in (None, ""):
        return {**record, "task": task}
    if record["task"] != task:
        raise DataError(f"{origin}, row {row}: field 'task' is '{record['task']}' but the file name says '{task}'")
    return record


def read_jsonl(path: str | os.PathLike[str], task: str | None = None) -> Iterator[Example]:
    """Records of a JSONL file; ``task`` fills records without one (and must match the others)."""
    p, origin = Path(path), str(path)
    try:
        with p.open(encoding="utf-8") as f:
            for row, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{origin}, row {row} (line {row + 1}): not valid JSON ({err.msg})") from None
                yield validate(_with_task(record, task, origin, row), origin, row)
    except UnicodeDecodeError as err:
        raise not_utf8(p, err) from None


def read_parquet(path: str | os.PathLike[str], task: str | None = None) -> Iterator[Example]:
    """Records of a Parquet file (columns named as the record fields)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    origin = str(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{origin}: not a readable Parquet file ({err})") from None
    records = itertools.chain.from_iterable(batch.to_pylist() for batch in table.to_batches())  # a batch at a time
    for row, record in enumerate(records):
        yield validate(_with_task(record, task, origin, row), origin, row)


def _read_file(p: Path, task: str | None = None) -> Iterator[Example]:
    if p.suffix == ".jsonl":
        return read_jsonl(p, task)
    if p.suffix == ".parquet":
        return read_parquet(p, task)
    raise DataError(f"{p}: unsupported file type '{p.suffix}' (expected .jsonl or .parquet, or a P3 template folder)")


def _roots(p: Path) -> list[Path]:
    """``p``, and its ``data/`` folder if any (a Hub snapshot keeps its template folders there)."""
    return [p] + ([p / "data"] if (p / "data").is_dir() else [])


def _template_dirs(p: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in _roots(p):
        for sub in sorted(root.iterdir()):
            if sub.is_dir() and p3_format(sub) is not None:
                found.setdefault(sub.name, sub)
    return found


def _split_dir_files(p: Path, templates: dict[str, Path]) -> dict[Path, tuple[str, str]]:
    """``{split}/{task}.jsonl|parquet`` files (the offline suite's layout): file -> (task, split)."""
    found: dict[Path, tuple[str, str]] = {}
    for sub in sorted(p.iterdir()):
        if sub.is_dir() and sub.name not in templates and sub.name != "data":
            for f in sorted(sub.iterdir()):
                if f.is_file() and f.suffix in DATA_SUFFIXES:
                    found[f] = (f.stem, sub.name)
    return found


def _read_dir(p: Path, split_for: Callable[[str], str], wanted: set[str] | None) -> Iterator[Example]:
    templates = _template_dirs(p)
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in DATA_SUFFIXES)
    # file -> (task, split) for every file whose name or folder says both
    named = {f: (m["task"], m["split"]) for f in files if (m := NAMED_FILE.match(f.name))}
    in_split_dirs = _split_dir_files(p, templates) if not files else {}
    named.update(in_split_dirs)
    files += list(in_split_dirs)
    if not templates and not files:
        raise DataError(
            f"{p}: no data found: expected .jsonl/.parquet files, {{split}}/{{task}}.jsonl folders, "
            "a P3 template folder (dataset_dict.json or *.tfrecord-*-of-* files) or a folder of them"
        )
    if wanted and len(named) == len(files):  # every name is known up front: check before reading
        missing = wanted - set(templates) - {t for t, _ in named.values()}
        if missing:
            raise _unknown_tasks(missing, list(templates) + [t for t, _ in named.values()], str(p))
    for task in (wanted or set()) - set(templates):
        splits = sorted(s for t, s in named.values() if t == task)
        if splits and split_for(task) not in splits:
            raise DataError(f"{p}: task '{task}' has no '{split_for(task)}' file (it has: {', '.join(splits)})")
    for name, folder in templates.items():
        if wanted is None or name in wanted:
            yield from read_p3(folder, split_for(name), task=name)
    for f in files:
        if f in named:
            task, split = named[f]
            if (wanted is not None and task not in wanted) or split != split_for(task):
                continue
            yield from _read_file(f, task)
        else:
            yield from (r for r in _read_file(f) if wanted is None or r["task"] in wanted)


def iter_examples(
    path: str | os.PathLike[str], split: SplitArg = None, tasks: Iterable[str] | str | None = None
) -> Iterator[Example]:
    """Yields validated records from ``path`` (see the module docstring for layouts)."""
    p = Path(path)
    split_for, wanted = _split_fn(split), _task_set(tasks)
    if not p.exists():
        raise _missing_path(p)
    records: Iterable[Example]
    if p.is_file():
        m = NAMED_FILE.match(p.name)
        records = _read_file(p, m["task"] if m else None)
    elif p3_format(p) is not None:
        if wanted is not None and wanted != {p.name}:
            raise _unknown_tasks(wanted - {p.name}, [p.name], str(p))
        records = read_p3(p, split_for(p.name), task=p.name)
    else:
        records = _read_dir(p, split_for, wanted)  # already only the wanted tasks'
    seen: set[str] = set()  # every task the data holds, for the error on names it lacks
    for record in records:
        seen.add(record["task"])
        if wanted is None or record["task"] in wanted:  # a single file holds any tasks
            yield record
    if wanted is not None and wanted - seen:
        raise _unknown_tasks(wanted - seen, seen, str(p))


def read_examples(
    path: str | os.PathLike[str], split: SplitArg = None, tasks: Iterable[str] | str | None = None
) -> list[Example]:
    """All records from ``path`` as a list (see ``iter_examples``)."""
    return list(iter_examples(path, split, tasks))


# ----- the offline suite, and templates known without reading records ------------------------------
def read_split(path: str | os.PathLike[str], split: SplitArg, tasks: Iterable[str] | None = None) -> list[Example]:
    """``read_examples``, plus the offline suite's ``{root}/{split}/{template}.jsonl`` layout."""
    meta = find_meta(path)
    if meta is None:
        return read_examples(path, split, tasks)
    split_for = _split_fn(split)
    names = list(tasks) if tasks is not None else list(meta["templates"])
    by_split: dict[str, list[str]] = {}
    for name in names:
        by_split.setdefault(split_for(name), []).append(name)
    records = []
    for name, wanted in by_split.items():
        folder = Path(path) / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{path}: the suite has no '{name}' split folder (needed for {wanted[:3]})")
        records += read_examples(folder, name, wanted)
    return records


def available_tasks(path: Path) -> set[str] | None:
    """Template names a data dir offers, when its layout tells without reading records; else None."""
    if not path.is_dir():
        return None
    if p3_format(path) is not None:
        return {path.name}
    files = [f for root in _roots(path) for f in root.iterdir() if f.is_file() and f.suffix in DATA_SUFFIXES]
    named = [NAMED_FILE.match(f.name) for f in files]
    if not all(named):
        return None  # records name their tasks inside: must read to know
    return set(_template_dirs(path)) | {m["task"] for m in named if m}
