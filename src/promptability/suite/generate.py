"""The offline task suite from a seed: generated in memory, written atomically, and its text corpora.

What the suite holds is described in ``promptability.suite``; the folder it writes, in
``promptability.data.suite_layout``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from promptability.cli.common import fail
from promptability.data.schema import Example, validate
from promptability.data.suite_layout import FORMAT, META_FILE, read_meta
from promptability.io import atomic_dir
from promptability.suite import tasks
from promptability.suite import world as world_mod
from promptability.suite.tasks import CLUSTERS, DATASETS, Dataset

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class SuiteSize:
    """Instances per template and split; every template of a dataset renders the same instances, as in P3."""

    train: int  # per training template
    train_validation: int
    heldout_train: int  # the few-shot pool of each held-out template
    heldout_validation: int  # the evaluation instances
    max_train_total: int  # caps ``train`` so the training mixture stays this small

    def counts(self, role: str, n_train_templates: int) -> dict[str, int]:
        if role == "heldout":
            return {"train": self.heldout_train, "validation": self.heldout_validation}
        return {
            "train": min(self.train, self.max_train_total // n_train_templates),
            "validation": self.train_validation,
        }


SIZES: dict[str, SuiteSize] = {
    "quick": SuiteSize(train=64, train_validation=16, heldout_train=32, heldout_validation=32, max_train_total=4000),
    "default": SuiteSize(
        train=600, train_validation=50, heldout_train=600, heldout_validation=150, max_train_total=20000
    ),
}


@dataclass
class Suite:
    """The generated suite: ``records[split][template]`` lists of records, plus ``meta`` (as in suite.json)."""

    meta: dict[str, Any]
    records: dict[str, dict[str, list[Example]]] = field(default_factory=dict)

    def templates(self, role: str | None = None) -> list[str]:
        return [t for t, info in self.meta["templates"].items() if role is None or info["role"] == role]

    def iter_records(self, split: str, role: str | None = None) -> Iterator[Example]:
        for template in self.templates(role):
            yield from self.records.get(split, {}).get(template, [])


def suite_templates(role: str | None = None) -> list[str]:
    """The template (task) names of the suite, without generating it; ``role`` "train" or "heldout"."""
    if role not in (None, "train", "heldout"):
        raise ValueError(f"role must be 'train', 'heldout' or None, got {role!r}")
    return [d.task(t) for d in DATASETS for t in d.templates if role is None or CLUSTERS[d.cluster][0] == role]


def _size(size: str) -> SuiteSize:
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return SIZES[size]


def _instances(ds: Dataset, world: world_mod.World, seed: int, split: str, n: int, seen: set[str]) -> list[dict]:
    rng = random.Random(f"suite:{seed}:{ds.cluster}:{ds.name}:{split}")
    wants: list[dict[str, int]] = [{} for _ in range(n)]
    for key, arity in ds.balance:  # exact balance, in a seeded order
        values = [i % arity for i in range(n)]
        rng.shuffle(values)
        for want, value in zip(wants, values):
            want[key] = value
    out = []
    for want in wants:
        for _ in range(200):
            inst = ds.make(world, rng, want)
            key = json.dumps(inst, sort_keys=True)
            if not ds.unique or key not in seen:
                break
        else:
            raise RuntimeError(f"suite dataset {ds.cluster}/{ds.name}: cannot draw {n} distinct {split} instances")
        seen.add(key)
        out.append(inst)
    return out


def generate_suite(seed: int = 0, size: str = "default", *, progress: bool = False) -> Suite:
    """Generates the whole suite in memory, deterministically from ``seed``."""
    spec = _size(size)
    world = world_mod.make_world(seed)
    n_train_templates = len(suite_templates("train"))
    meta: dict[str, Any] = {"format": FORMAT, "seed": seed, "size": size, "splits": list(SPLITS)}
    meta["sizes"] = asdict(spec)
    meta["clusters"] = {c: {"role": role, "about": about, "datasets": []} for c, (role, about) in CLUSTERS.items()}
    meta["templates"] = {}
    records: dict[str, dict[str, list[Example]]] = {s: {} for s in SPLITS}
    for ds in tqdm(DATASETS, desc="suite", unit="dataset", disable=not progress):
        role = CLUSTERS[ds.cluster][0]
        meta["clusters"][ds.cluster]["datasets"].append(ds.name)
        counts = spec.counts(role, n_train_templates)
        seen: set[str] = set()  # validation instances never repeat training ones
        per_split = {s: _instances(ds, world, seed, s, counts[s], seen) for s in SPLITS}
        for template in ds.templates:
            task = ds.task(template)
            for split, instances in per_split.items():
                rendered = (template.render(task, inst) for inst in instances)
                records[split][task] = [validate(r, task, row) for row, r in enumerate(rendered)]
            meta["templates"][task] = {
                "cluster": ds.cluster, "dataset": ds.name, "template": template.name, "role": role,
                "group": ds.group, "num_choices": len(template.choices), "counts": dict(counts),
            }  # fmt: skip
    meta["totals"] = {
        role: {s: sum(i["counts"][s] for i in meta["templates"].values() if i["role"] == role) for s in SPLITS}
        for role in ("train", "heldout")
    }
    return Suite(meta, records)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def write_suite(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: str = "default",
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Writes the suite under ``out_dir`` atomically and returns its metadata.

    An ``out_dir`` already holding the same suite (seed, size) is left as it is; a different
    suite or other files there raise ``FileExistsError`` unless ``overwrite``.
    """
    out = Path(out_dir)
    _size(size)  # an unknown size fails before the folder is touched
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder")
        if (out / META_FILE).is_file() and not overwrite:
            meta = read_meta(out)
            if (meta.get("seed"), meta.get("size")) == (seed, size):
                return meta
            raise FileExistsError(
                f"{out}: holds a suite with seed {meta.get('seed')} and size {meta.get('size')!r}, "
                f"not seed {seed} and size {size!r}; pass overwrite=True (--overwrite) to replace it"
            )
        if any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out}: exists and is not empty; choose another folder or pass --overwrite")
    with atomic_dir(out) as tmp:  # the old folder moves aside only once the new one is complete
        suite = generate_suite(seed, size, progress=progress)
        for split, per_template in suite.records.items():
            (tmp / split).mkdir()
            for task, recs in per_template.items():
                text = "".join(_dumps(r) + "\n" for r in recs)
                (tmp / split / f"{task}.jsonl").write_text(text, encoding="utf-8")
        (tmp / META_FILE).write_text(json.dumps(suite.meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return suite.meta


def lm_corpus(seed: int = 0, n: int = 20000) -> Iterator[str]:
    """``n`` plain passages from the world (people, stories, topics, reviews, world facts), for LM adaptation.

    Drawn from their own random stream, so they are not the suite's examples, and carry no prompts.
    """
    world = world_mod.make_world(seed)
    rng = random.Random(f"suite:{seed}:lm")

    def people() -> str:
        return tasks._people_context(rng, rng.choice((1, 2)))[1]

    def story() -> str:
        return tasks.summarisation(world, rng, {})["story"]

    def topic() -> str:
        return tasks.topic(world, rng, {"label": rng.randrange(len(world_mod.TOPICS))})["text"]

    def review() -> str:
        return tasks.sentiment(world, rng, {"label": rng.randrange(2)})["review"]

    def fact() -> str:
        town = rng.choice(world_mod.TOWNS)
        job, pet = rng.choice(list(world_mod.WORKPLACE.items())), rng.choice(list(world_mod.PET_FOOD.items()))
        return rng.choice((
            f"{town} is a town in {world.region[town]}. It is famous for its {world.product[town]}.",
            f"A {job[0]} works at {job[1]}.", f"A {pet[0]} likes to eat {pet[1]}.",
        ))  # fmt: skip

    def meeting() -> str:
        return tasks.coreference(world, rng, {"label": rng.randrange(2), "yn": 0})["text"]

    kinds = (people, people, story, story, topic, topic, review, fact, meeting)
    for _ in range(n):
        yield rng.choice(kinds)()


def tokenizer_texts(suite: Suite) -> Iterator[str]:
    """The suite's texts (sources, targets, choices), a sample of ``lm_corpus`` and the world's word lists."""
    seed = suite.meta["seed"]
    for split in SPLITS:
        for r in suite.iter_records(split):
            yield r["source"]
            yield r["target"]
            yield from r["choices"]
    yield from lm_corpus(seed, 2000)
    yield from world_mod.lexicon()


def add_suite_command(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``suite`` to the ``promptability data`` subcommands."""
    parser = data_subparsers.add_parser(
        "suite",
        help="write the offline task suite (a small P3-like benchmark, no download)",
        description="Writes the offline task suite: {out}/{split}/{template}.jsonl and {out}/suite.json.",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write (created atomically)")
    parser.add_argument("--seed", type=int, default=0, help="world and sampling seed (default 0)")
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="quick: tests; default: the demo")
    parser.add_argument("--overwrite", action="store_true", help="replace a different suite already at --out")
    parser.set_defaults(func=_run_suite_command)
    return parser


def _run_suite_command(args: argparse.Namespace) -> int:
    kept = (args.out / META_FILE).is_file() and not args.overwrite  # then it is kept only if it is the same
    try:
        meta = write_suite(args.out, seed=args.seed, size=args.size, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as err:
        return fail(err)
    totals = meta["totals"]
    print(
        f"{args.out}{' (already there, unchanged)' if kept else ''}: suite seed {meta['seed']}, size {meta['size']}: "
        f"{len(suite_templates('train'))} training templates ({totals['train']['train']} train examples), "
        f"{len(suite_templates('heldout'))} held-out templates ({totals['heldout']['validation']} evaluation examples)"
    )
    return 0
