"""Where raw dataset rows come from: one spec string per source, rows in the Hugging Face Hub's schema.

A spec is ``[DATASET=]KIND:LOCATION`` with KIND one of:

* ``hub:REPO[:CONFIG][@REVISION]`` -- ``datasets.load_dataset`` (never remote code). ``hub:super_glue/rte``
  is short for ``hub:super_glue:rte`` when ``super_glue/rte`` is a dataset of the registry (and
  ``anli/r1``'s rows are ANLI's splits ``dev_r1``, ``train_r1``...). REVISION defaults to
  ``DEFAULT_REVISION``; pin a commit for results that others can reproduce. A Hub dataset that is a
  loading script is refused; its Parquet export (branch refs/convert/parquet), downloaded, reads as ``parquet:``.
* ``disk:PATH`` -- a ``save_to_disk`` folder: a DatasetDict (its splits), or one Dataset (its folder name is the split).
* ``parquet:PATH`` / ``json:PATH`` -- a file, or a folder of files in any of the Hub's layouts: ``SPLIT.parquet``,
  ``data/SPLIT-00000-of-00001.parquet``, ``CONFIG/SPLIT/0000.parquet`` (JSON: ``.json``/``.jsonl``).
* ``curated:PATH`` -- the hand-collected files in their original formats (``data.realdata``).

DATASET is the dataset key whose promptsource templates render the rows: "super_glue/rte", "anli/r1",
"hellaswag" (the registry's ``dataset[/subset]``). A Hub spec implies it (the repo's name without its
owner, then "/CONFIG"); the other kinds need it where one dataset is meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from promptability.data import registry
from promptability.data.promptsource import (
    Template,
    TemplateError,
    load_templates,
    normalise,
    render_records,
    template_for,
)
from promptability.data.realdata import Row, read_raw
from promptability.data.realdata import available as curated_splits
from promptability.data.schema import DataError, Example

KINDS = ("hub", "disk", "parquet", "json", "curated")
# A branch, not a commit: pin one with @REVISION to freeze the data.
DEFAULT_REVISION = "main"
_SUFFIXES = {"parquet": (".parquet",), "json": (".json", ".jsonl")}
# The split a held-out dataset is evaluated on where it is not "validation" (as the real study's).
EVAL_SPLITS = {"anli/r1": "dev", "anli/r2": "dev", "anli/r3": "dev"}
_SHARD = re.compile(r"-\d+-of-\d+$")


class SourceError(DataError):
    """A spec that cannot be parsed, a source that cannot be read, or a split or dataset it lacks."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    location: str  # hub: the repo id; otherwise a path
    dataset: str | None = None  # the dataset key whose templates render the rows
    config: str | None = None  # hub only
    revision: str | None = None  # hub only
    split_suffix: str = ""  # hub only: anli/r1's splits are "dev_r1", ...

    def __str__(self) -> str:
        if self.kind != "hub":
            where = f"{self.kind}:{self.location}"
        else:
            where = f"hub:{self.location}{f':{self.config}' if self.config else ''}@{self.revision}"
        return f"{self.dataset}={where}" if self.dataset else where


@cache
def dataset_keys() -> frozenset[str]:
    """The registry's datasets as ``dataset[/subset]`` (ANLI's rounds: anli/r1, anli/r2, anli/r3)."""
    return frozenset(map(registry.template_dataset, registry.all_templates()))


def parse_source(text: str, dataset: str | None = None) -> SourceSpec:
    """A ``SourceSpec`` from ``[DATASET=]KIND:LOCATION``; ``dataset`` is the key when the text names none."""
    head, sep, rest = text.partition(":")
    if sep and "=" in head:
        named, _, head = head.partition("=")
        dataset = named.strip() or dataset
    if not sep or head not in KINDS or not rest:
        raise SourceError(f"source {text!r}: expected [DATASET=]KIND:LOCATION with KIND one of {', '.join(KINDS)}")
    if head != "hub":
        return SourceSpec(head, rest, dataset)
    repo, _, revision = rest.partition("@")
    repo, _, config = repo.partition(":")
    if not config and repo in dataset_keys() and "/" in repo:  # a registry key: "super_glue/rte", "anli/r1"
        repo, subset = repo.split("/")
        config, dataset = ("" if repo == "anli" else subset), dataset or f"{repo}/{subset}"
    if not repo or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo):
        raise SourceError(f"source {text!r}: {repo!r} is not a Hub dataset id (NAME or OWNER/NAME)")
    dataset = dataset or repo.split("/")[-1] + (f"/{config}" if config else "")
    # The Hub keeps ANLI's rounds as splits of one dataset: "dev_r1", "train_r1"...
    suffix = f"_{dataset.split('/')[1]}" if dataset.startswith("anli/") and not config else ""
    return SourceSpec("hub", repo, dataset, config or None, revision or DEFAULT_REVISION, suffix)


class Source:
    """The rows of one source, by dataset key and split, in a fixed order (file order; the Hub's row order)."""

    def __init__(self, spec: SourceSpec | str) -> None:
        self.spec = parse_source(spec) if isinstance(spec, str) else spec
        if self.spec.kind != "hub" and not Path(self.spec.location).exists():
            raise SourceError(f"source {self.spec}: {self.spec.location} does not exist")

    def _check(self, dataset: str) -> None:
        if self.spec.kind != "curated" and self.spec.dataset not in (None, dataset):
            raise SourceError(f"source {self.spec} holds {self.spec.dataset}, not {dataset}")

    def splits(self, dataset: str) -> list[str]:
        """The splits of ``dataset`` here (Hub: loads the dataset)."""
        self._check(dataset)
        kind, location = self.spec.kind, self.spec.location
        if kind == "curated":
            return curated_splits(location).get(dataset, [])
        if kind == "hub":
            suffix = self.spec.split_suffix
            return [s.removesuffix(suffix) for s in _hub(self.spec) if s.endswith(suffix)]
        if kind == "disk":
            return list(_disk(location))
        return list(_files(kind, location))

    def rows(self, dataset: str, split: str) -> list[Row]:
        """The rows of ``dataset``'s ``split``, each a dict in the Hub's schema."""
        self._check(dataset)
        kind, location = self.spec.kind, self.spec.location
        if kind == "curated":
            return read_raw(location, dataset, split)
        if split not in self.splits(dataset):
            raise SourceError(f"source {self.spec}: no split {split!r}; it has {', '.join(self.splits(dataset))}")
        if kind == "hub":
            return _hub(self.spec)[split + self.spec.split_suffix].to_list()
        if kind == "disk":
            return _disk(location)[split].to_list()
        import datasets

        files = [str(p) for p in _files(kind, location)[split]]
        try:
            return datasets.load_dataset(kind, data_files={split: files}, split=split).to_list()
        except (OSError, ValueError) as err:  # pyarrow's and datasets' errors for unreadable files are both
            raise SourceError(f"source {self.spec}: cannot read {split} ({', '.join(files)}): {err}") from err


@cache
def _hub(spec: SourceSpec) -> Any:
    import datasets

    try:
        return datasets.load_dataset(spec.location, spec.config, revision=spec.revision)
    except RuntimeError as err:  # datasets >= 4 refuses loading scripts; promptability would never run one either
        raise SourceError(
            f"source {spec}: {spec.location} at {spec.revision} is a loading script, which is never run ({err}). "
            f"Download the Hub's Parquet export instead (huggingface-cli download --repo-type dataset {spec.location} "
            f"--revision refs/convert/parquet --local-dir DIR) and give {spec.dataset}=parquet:DIR/{spec.config or 'default'}"
        ) from err
    except (OSError, ValueError) as err:  # ConnectionError offline; DatasetNotFoundError is a FileNotFoundError
        raise SourceError(
            f"source {spec}: cannot load {spec.location}{f' ({spec.config})' if spec.config else ''} at revision "
            f"{spec.revision} from the Hub: {err}. Offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE) it must be in the "
            "datasets cache already; otherwise load it once online, or give a local copy (disk:, parquet:, json:)"
        ) from err


@cache
def _disk(location: str) -> dict[str, Any]:
    import datasets

    try:
        loaded = datasets.load_from_disk(location)
    except (OSError, ValueError) as err:
        raise SourceError(f"source disk:{location}: not a save_to_disk folder: {err}") from err
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {Path(location).name: loaded}


def _files(kind: str, location: str) -> dict[str, list[Path]]:
    """Split -> its files, sorted; a shard's split is its name without "-00000-of-00003" (or its folder's name)."""
    root = Path(location)
    found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out: dict[str, list[Path]] = {}
    for path in found:
        suffix = next((s for s in _SUFFIXES[kind] if path.name.endswith(s)), None)
        if suffix is None:
            continue
        stem = _SHARD.sub("", path.name.removesuffix(suffix))
        split = path.parent.name if re.fullmatch(r"\d+|partial.*", stem) else stem
        out.setdefault(split, []).append(path)
    if not out:
        raise SourceError(f"source {kind}:{location}: no {'/'.join(_SUFFIXES[kind])} files there")
    for split, paths in out.items():  # the Parquet export's CONFIG/SPLIT/0000.parquet, several configs at once
        if len(configs := {p.parent.parent for p in paths if p.parent.name == split}) > 1:
            names = ", ".join(sorted(c.name for c in configs))
            raise SourceError(f"source {kind}:{location} holds {split} of several configs ({names}): give DIR/CONFIG")
    return out


def templates_for(dataset: str, root: str | Path | None = None) -> dict[str, Template]:
    """Task name -> template, for every promptsource template of ``dataset`` that has answer choices.

    Datasets of the registry keep its P3 names (held-out ones end in "_score_eval"); any other dataset's
    templates are named as P3 names them, ``{dataset}_{subset}_{template}`` with non-alphanumerics as "_".
    ``root`` is a promptsource templates folder (default: the templates shipped in the package).
    """
    names = [n for n in registry.all_templates() if registry.template_dataset(n) == dataset]
    if names:
        found = {n: template_for(root, n) for n in names}
    else:
        name, _, subset = dataset.partition("/")
        try:
            loaded = load_templates(root, name, subset or None)
        except TemplateError as err:
            raise SourceError(f"no promptsource templates for dataset {dataset!r}: {err}") from None
        prefix = dataset.replace("/", "_")
        found = {f"{prefix}_{normalise(t.name)}": t for t in loaded.values()}
    return {n: t for n, t in found.items() if t.answer_choices is not None}


def source_records(
    source: Source | str,
    split: str | None = None,
    *,
    tasks: list[str] | None = None,
    templates: str | Path | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Evaluation records: ``split``'s rows (the first ``limit``) rendered by every template of the dataset.

    ``split`` defaults to the dataset's evaluation split (``EVAL_SPLITS``, else "validation"). ``tasks``
    keeps only those templates (naming one the dataset lacks is an error). Seeds as ``render_records``'s default.
    """
    source = source if isinstance(source, Source) else Source(source)
    dataset = source.spec.dataset
    if dataset is None:
        raise SourceError(f"source {source.spec}: name the dataset its rows belong to (DATASET={source.spec})")
    found = templates_for(dataset, templates)
    if tasks is not None:
        if unknown := sorted(set(tasks) - set(found)):
            raise SourceError(f"{dataset} has no template(s) {', '.join(unknown)}; it has: {', '.join(sorted(found))}")
        found = {n: t for n, t in found.items() if n in tasks}
    rows = source.rows(dataset, split or EVAL_SPLITS.get(dataset, "validation"))[:limit]
    rendered = [record for name, template in found.items() for record in render_records(template, rows, name)]
    return cast(list[Example], rendered)  # render_records validates every record


def source_map(specs: list[str]) -> dict[str, str]:
    """Dataset key -> spec, from ``[DATASET=]KIND:LOCATION`` texts; each needs a dataset, named once."""
    out: dict[str, str] = {}
    for text in specs:
        dataset = parse_source(text).dataset
        if dataset is None:
            raise SourceError(f"source {text!r}: name the dataset its rows belong to, as DATASET={text}")
        if dataset in out:
            raise SourceError(f"sources {out[dataset]!r} and {text!r} both give {dataset}")
        out[dataset] = text
    return out
