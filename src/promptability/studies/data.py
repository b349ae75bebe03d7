"""The real study's data directory: raw real data + promptsource templates -> records in the suite layout.

Output (read by the same trainers and evaluators as the demo's suite)::

    out/train/<T0 training template>.jsonl     the MTL mixture (capped per template)
    out/train/<held-out template>.jsonl        its few-shot pool (StoryCloze: out/validation/)
    out/validation/<held-out template>.jsonl   its evaluation instances (StoryCloze: out/test/)
    out/study.json                             counts, provenance of every pool, skipped templates

Every template of a held-out dataset is evaluated on the same raw instances. Where a held-out
dataset has no training split in its source (the curated files of ANLI, HellaSwag, Winogrande), its
few-shot pool is a fixed, held-back slice of the evaluation file that is never evaluated on.
Rows come from the curated files or from any ``data.sources`` spec per dataset (Hub, save_to_disk, Parquet, JSON).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from promptability.data.promptsource import TemplateError, render_records, template_for
from promptability.data.readers import eval_split_for, train_split_for
from promptability.data.registry import heldout_templates, template_dataset, train_templates
from promptability.data.sources import Source, SourceError, SourceSpec, parse_source
from promptability.io import write_json_atomic, write_jsonl_atomic

MANIFEST = "study.json"

# Held-out dataset -> (the split evaluated on, the split few-shot examples come from where present).
# StoryCloze is evaluated on its 2016 validation split, as in P3; its labelled test split is the pool.
# The curated files have no train split of ANLI, HellaSwag and Winogrande; the Hub's have.
HELDOUT_SPLITS: dict[str, tuple[str, str | None]] = {
    "super_glue/rte": ("validation", "train"),
    "super_glue/cb": ("validation", "train"),
    "super_glue/copa": ("validation", "train"),
    "super_glue/wic": ("validation", "train"),
    "super_glue/wsc.fixed": ("validation", "train"),
    "anli/r1": ("dev", "train"),
    "anli/r2": ("dev", "train"),
    "anli/r3": ("dev", "train"),
    "hellaswag": ("validation", "train"),
    "winogrande/winogrande_xl": ("validation", "train"),
    "story_cloze/2016": ("validation", "test"),
}

# Training dataset -> the split used as training data (the largest one present here).
TRAIN_SPLITS: dict[str, str] = {
    "dream": "train",
    "social_i_qa": "train",
    "cosmos_qa": "validation",
    "commonsense_qa": "validation",
    "quail": "challenge",
    "common_gen": "train",
    "wiki_qa": "validation",
    "rotten_tomatoes": "all",
    "ag_news": "test",
    "trec": "train",
    "glue/mrpc": "train",
}


def dataset_key(template: str) -> str:
    """The realdata key of a registry template: "super_glue/rte", "anli/r1", "dream", ...

    T0 trains on CommonsenseQA through P3's ``cos_e`` templates, so those read CommonsenseQA rows.
    """
    key = template_dataset(template)
    return "commonsense_qa" if key.partition("/")[0] == "cos_e" else key


def as_cos_e(row: Mapping[str, Any]) -> dict[str, Any]:
    """A CommonsenseQA row in cos_e's schema; templates that need the explanations fail and are skipped."""
    choices = list(row["choices"]["text"])
    answer = choices[list(row["choices"]["label"]).index(row["answerKey"])]
    return {"id": row.get("id", ""), "question": row["question"], "choices": choices, "answer": answer}


def _shuffled(rows: list[dict[str, Any]], seed: int, key: str) -> list[dict[str, Any]]:
    order = list(range(len(rows)))
    random.Random(f"{seed}:{key}").shuffle(order)
    return [rows[i] for i in order]


def build_study_data(
    realdata: str | Path | None,
    templates: str | Path | None,
    out: str | Path,
    *,
    eval_instances: int,
    pool_holdout: int = 64,
    pool_size: int = 128,
    train_per_template: int = 64,
    max_source_words: int = 200,
    seed: int = 0,
    progress: bool = True,
    sources: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Writes the data directory (``study.json`` last) and returns its manifest.

    Each dataset's rows come from ``sources[key]`` (a ``data.sources`` spec) if given, else from the
    curated files under ``realdata`` (if given); ``templates`` None means the shipped promptsource templates.
    """
    out = Path(out)
    manifest: dict[str, Any] = {"heldout": {}, "train": {}, "pools": {}, "skipped": {}, "seed": seed,
                                "eval_instances": eval_instances, "train_per_template": train_per_template,
                                "max_source_words": max_source_words}  # fmt: skip
    if sources:
        manifest["sources"] = dict(sources)
    source = _Source(study_sources(realdata, sources), None if templates is None else Path(templates), seed)
    _write_heldout(source, out, manifest, eval_instances, pool_holdout, pool_size, progress)
    _write_train(source, out, manifest, train_per_template, max_source_words, progress)
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def study_sources(realdata: str | Path | None, sources: Mapping[str, str] | None) -> dict[str, Source]:
    """Dataset key -> its source, for every dataset the study reads; an unknown key or a bad spec is an error."""
    curated = Source(SourceSpec("curated", str(realdata))) if realdata is not None else None
    out = {key: curated for key in (*HELDOUT_SPLITS, *TRAIN_SPLITS) if curated is not None}
    for key, spec in (sources or {}).items():
        if key not in HELDOUT_SPLITS and key not in TRAIN_SPLITS:
            known = ", ".join([*HELDOUT_SPLITS, *TRAIN_SPLITS])
            raise SourceError(f"source {spec}: the study reads no dataset {key!r}; it reads {known}")
        out[key] = Source(parse_source(spec, key))
    return out


@dataclass
class _Source:
    """Where each dataset's raw rows and the templates come from, and the seed of every shuffle and rendering."""

    sources: dict[str, Source]  # dataset key -> its source
    templates: Path | None  # None: the shipped templates
    seed: int
    _splits: dict[str, list[str]] = field(default_factory=dict)

    def where(self, key: str) -> str:
        return str(self.sources[key].spec) if key in self.sources else "any source (none given)"

    def splits(self, key: str) -> list[str]:
        if key not in self._splits:
            self._splits[key] = self.sources[key].splits(key) if key in self.sources else []
        return self._splits[key]

    def rows(self, key: str, split: str) -> list[dict[str, Any]]:
        return self.sources[key].rows(key, split)

    def render(self, name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return render_records(template_for(self.templates, name), rows, name, seed=self.seed)


def _write_heldout(source: _Source, out: Path, manifest: dict[str, Any], eval_instances: int, pool_holdout: int,
                   pool_size: int, progress: bool) -> None:  # fmt: skip
    """Every held-out template's evaluation instances and few-shot pool; the templates of a dataset share rows."""
    seed = source.seed
    by_dataset: dict[str, list[str]] = defaultdict(list)
    for name in heldout_templates():
        by_dataset[dataset_key(name)].append(name)
    bar = tqdm(total=len(heldout_templates()), desc="held-out templates", disable=not progress, dynamic_ncols=True)
    for key, names in by_dataset.items():
        eval_split, pool_split = HELDOUT_SPLITS.get(key, (None, None))
        if eval_split is None or eval_split not in source.splits(key):
            why = f"no {key} {eval_split or ''} data in {source.where(key)}".replace("  ", " ")
            manifest["skipped"] |= dict.fromkeys(names, why)
            bar.update(len(names))
            continue
        rows = _shuffled(source.rows(key, eval_split), seed, key)
        if pool_split is not None and pool_split in source.splits(key):
            pool = _shuffled(source.rows(key, pool_split), seed, key)[:pool_size]
            manifest["pools"][key] = f"the {pool_split} split ({pool_size} of its rows at most)"
        else:
            pool, rows = rows[:pool_holdout], rows[pool_holdout:]
            manifest["pools"][key] = (
                f"no training split here: {len(pool)} rows held back from {eval_split} (never evaluated on)"
            )
        rows = rows[:eval_instances]
        for name in names:
            bar.update(1)
            try:
                records, shots = source.render(name, rows), source.render(name, pool)
            except TemplateError as error:
                manifest["skipped"][name] = str(error).splitlines()[0]
                continue
            if not records:
                manifest["skipped"][name] = f"none of the {len(rows)} sampled instances renders with this template"
                continue
            write_jsonl_atomic(out / eval_split_for(name) / f"{name}.jsonl", records)
            write_jsonl_atomic(out / train_split_for(name) / f"{name}.jsonl", shots)
            manifest["heldout"][name] = {"dataset": key, "split": eval_split, "instances": len(records),
                                         "pool": len(shots)}  # fmt: skip
    bar.close()


def _write_train(source: _Source, out: Path, manifest: dict[str, Any], train_per_template: int,
                 max_source_words: int, progress: bool) -> None:  # fmt: skip
    """The MTL mixture: at most ``train_per_template`` examples of each T0 training template with data here."""
    wanted = [t for t in train_templates() if dataset_key(t) in TRAIN_SPLITS]
    raw: dict[str, list[dict[str, Any]]] = {}
    for name in tqdm(wanted, desc="training templates", disable=not progress, dynamic_ncols=True):
        key = dataset_key(name)
        if TRAIN_SPLITS[key] not in source.splits(key):
            manifest["skipped"][name] = f"no {key} data in {source.where(key)}"
            continue
        if key not in raw:
            rows = source.rows(key, TRAIN_SPLITS[key])
            raw[key] = _shuffled([as_cos_e(r) for r in rows] if key == "commonsense_qa" else rows, source.seed, key)
        records: list[dict[str, Any]] = []
        rendered = 0
        try:
            # Render a few times the cap at once: long sources are dropped, the rest kept up to the cap.
            for start in range(0, len(raw[key]), 4 * train_per_template):
                chunk = source.render(name, raw[key][start : start + 4 * train_per_template])
                rendered += len(chunk)
                records += [r for r in chunk if len(r["source"].split()) <= max_source_words]
                if len(records) >= train_per_template:
                    break
        except TemplateError as error:
            manifest["skipped"][name] = str(error).splitlines()[0]
            continue
        if not records:
            manifest["skipped"][name] = (
                f"all {rendered} rendered examples have sources longer than {max_source_words} words"
                if rendered
                else f"no {key} row renders with a target (the template needs fields these rows lack)"
            )
            continue
        write_jsonl_atomic(out / "train" / f"{name}.jsonl", records[:train_per_template])
        manifest["train"][name] = {"dataset": key, "split": TRAIN_SPLITS[key],
                                   "examples": len(records[:train_per_template])}  # fmt: skip
