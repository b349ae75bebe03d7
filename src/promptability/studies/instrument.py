"""Is the miniature a valid instrument? Its floor and ceiling on every held-out group, checked against fixed criteria.

The demo measures how continued pretraining changes zero- and few-shot accuracy on held-out task types. That
means something only if the held-out groups can move: the LM-adapted base must sit near chance 0-shot (the
floor: it has the knowledge but has never seen the prompt formats), and a model that is *shown* the held-out
tasks must get well above chance on each of them (the ceiling: the oracle, MTL-T from the same base with the
held-out templates' own training pools added to the mixture, same steps). A group the oracle cannot learn at
this scale measures nothing. The criteria below were fixed before the checks they judged ran; the suite was
designed against them only, never against the Table-1 rows. The oracle is an ordinary continued-pretraining
row of the demo's plan (:func:`oracle_row`), trained once per pretraining seed like a Table-1 row, and judged
over its seeds.

The base is LM-adapted once per pretraining seed (the demo's ``models/base/seed-<p>``), so the floor, like
the ceiling, is judged over seeds.

Folders (beside the demo's, outside ``out/runs`` so the Table-1 report never picks them up)::

    out/models/oracle/seed-<p>/          the oracle's continued pretraining, per pretraining seed
    out/instrument/base/seed-<p>/        each base's 0-shot rank-classification run on every held-out template
    out/instrument/oracle/seed-<p>/      each oracle's
    out/instrument/probe/seed-<p>/       the knowledge probe of each base
    out/report/instrument.md             the floor/ceiling table (also .json)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from promptability.eval.metrics import chance_level, relative_gain
from promptability.io import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from promptability.studies.demo import Scale
    from promptability.studies.pipeline import Stages
    from promptability.train.config import TrainConfig

# The criteria (percent relative gain over chance, as ARG), each set fixed before any check it judged was run
# (docs/miniature.md). Each v2 replaces a v1 that judged one model, whose verdict moved with float rounding (the
# ceiling) or with the base's retraining (the floor): both are now judged over the pretraining seeds, one base
# and one oracle per seed; the thresholds are v1's.
FLOOR_CRITERIA, CEILING_CRITERIA = "v2", "v2"
FLOOR_MAX_ABS_ARG = 5.0  # the bases' 0-shot ARG over all groups, averaged over the seeds, lies within +-5
FLOOR_MAX_GROUP_GAIN = 15.0  # and no group's gain, averaged over the seeds, is more than 15% (relative)
CEILING_MIN_ARG = 40.0  # the oracle's ARG, averaged over its pretraining seeds, is at least 40
CEILING_MAX_P = 0.05  # and every group is above chance, one-sided p < 0.05 (seeds, then instances, resampled)
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class GroupResult:
    """One model (or one model's pretraining seeds) on one held-out group: accuracy and relative gain over its
    templates, means over the seeds, and p above chance."""

    group: str
    templates: int
    instances: int
    chance: float
    accuracy: float  # percent, the mean over seeds
    gain: float  # percent relative gain over chance (the group's ARG term), the mean over seeds
    p_above_chance: float
    seed_accuracies: tuple[float, ...] = ()  # percent, one per pretraining seed (empty: one model)

    def accuracy_text(self) -> str:
        """``93.0``, or with several seeds ``93.0 (91.8-94.2)``: the mean and the range over seeds."""
        if len(self.seed_accuracies) < 2:
            return f"{self.accuracy:.1f}"
        return f"{self.accuracy:.1f} ({min(self.seed_accuracies):.1f}-{max(self.seed_accuracies):.1f})"


def above_chance_p(
    correct: Sequence[np.ndarray], chance: float, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> float:
    """One-sided p that accuracy is above ``chance``; ``correct``: one array per pretraining seed of a model (one
    for a model without seeds), each per instance the correctness (a fraction when averaged over templates), same
    instances.

    eval.significance's hierarchical bootstrap of (these runs) against a constant run at chance: each resample
    draws the pretraining seeds with replacement, then the instances (with one run, the instance bootstrap
    alone). Instances are the unit: every template of a dataset renders the same instances, so a template's
    predictions are not independent of another's. p = (1 + resamples not above chance) / (1 + samples): never
    0, which no finite number of resamples can show.
    """
    from promptability.eval.significance import hierarchical_bootstrap

    runs = [np.asarray(r, dtype=np.float64) for r in correct]
    if not runs or any(r.ndim != 1 or not len(r) or len(r) != len(runs[0]) for r in runs):
        raise ValueError(
            f"above_chance_p needs non-empty 1-D arrays of one length, got shapes {[r.shape for r in runs]}"
        )
    group = {"g": {"group": "g", "num_choices": 2}}  # its chance is given below
    at_chance = [[{"g": np.full(len(runs[0]), chance)}]]
    result = hierarchical_bootstrap(at_chance, [[{"g": r}] for r in runs], group, samples=samples, seed=seed,
                                    chance={"g": chance})  # fmt: skip
    return (1 + round(result.p_value * samples)) / (1 + samples)


def group_results(runs: Sequence[list[dict[str, Any]]], meta: dict[str, Any]) -> dict[str, GroupResult]:
    """Per held-out group of the suite (``meta``: suite.json), from ``evaluate``'s prediction rows of each run:
    one run per pretraining seed of a model (or the one run of a model without seeds), on the same instances."""
    if not runs or not all(isinstance(run, list) for run in runs):
        raise ValueError("group_results needs a list of runs, each the list of one run's prediction rows")
    per_run = [_run_groups(predictions, meta) for predictions in runs]
    if any(r.keys() != per_run[0].keys() for r in per_run):
        raise ValueError(f"the runs cover other groups: {[sorted(r) for r in per_run]}")
    out = {}
    for group, first in per_run[0].items():
        keys = list(first.correct)  # the first run's order: the bootstrap's draws index into it
        if any(group not in r or r[group].cells != first.cells for r in per_run[1:]):
            raise ValueError(f"the runs differ in group {group}'s templates or instances")
        accs = [100 * float(np.mean(r[group].accuracies)) for r in per_run]
        gains = [100 * float(np.mean([relative_gain(a, chance=c) for a, c in zip(r[group].accuracies, r[group].chances)]))
                 for r in per_run]  # fmt: skip
        chance = float(np.mean(first.chances))
        p = above_chance_p([np.array([np.mean(r[group].correct[k]) for k in keys]) for r in per_run], chance)
        seeds = tuple(accs) if len(per_run) > 1 else ()
        out[group] = GroupResult(group, len(first.tasks), len(keys), chance, float(np.mean(accs)),
                                 float(np.mean(gains)), p, seeds)  # fmt: skip
    return dict(sorted(out.items()))


class _Group(NamedTuple):
    tasks: tuple[str, ...]
    cells: set[tuple[str, int]]  # (template, instance index) of every prediction
    accuracies: list[float]  # per template
    chances: list[float]  # per template
    correct: dict[tuple[str, int], list[float]]  # per instance (dataset, index): its correctness per template


def _run_groups(predictions: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, _Group]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in predictions:
        by_task.setdefault(row["task"], []).append(row)
    groups: dict[str, list[str]] = {}
    for task in sorted(by_task):
        if task not in meta["templates"]:
            raise ValueError(f"prediction rows name template {task!r}, which the suite's suite.json does not have")
        groups.setdefault(meta["templates"][task]["group"], []).append(task)
    out = {}
    for group, tasks in groups.items():
        found = _Group(tuple(tasks), {(t, r["index"]) for t in tasks for r in by_task[t]}, [], [], {})
        for task in tasks:
            rows = by_task[task]
            found.chances.append(chance_level(len(r["scores"]) for r in rows))
            found.accuracies.append(float(np.mean([r["prediction"] == r["label"] for r in rows])))
            dataset = meta["templates"][task]["dataset"]
            for r in rows:
                found.correct.setdefault((dataset, r["index"]), []).append(float(r["prediction"] == r["label"]))
        out[group] = found
    return out


def arg(results: dict[str, GroupResult]) -> float:
    """ARG (percent): the mean of the groups' relative gains."""
    return float(np.mean([r.gain for r in results.values()]))


def seeds_of(results: dict[str, GroupResult]) -> int:
    """How many pretraining seeds (runs) the results average over."""
    return max((len(r.seed_accuracies) for r in results.values()), default=1) or 1


def verdict(floor: dict[str, GroupResult], ceiling: dict[str, GroupResult]) -> list[str]:
    """The criteria that fail, each named with its version (empty: the instrument is valid)."""
    failed = []
    f, c = f"floor {FLOOR_CRITERIA}", f"ceiling {CEILING_CRITERIA}"
    bases = f"over {seeds_of(floor)} base{'s' * (seeds_of(floor) > 1)}"
    if abs(arg(floor)) > FLOOR_MAX_ABS_ARG:
        failed.append(f"{f}: base 0-shot ARG {arg(floor):+.1f}, outside +-{FLOOR_MAX_ABS_ARG:g} ({bases})")
    failed += [f"{f}: {g} {r.gain:+.1f} above chance (> {FLOOR_MAX_GROUP_GAIN:g}, {bases})"
               for g, r in floor.items() if r.gain > FLOOR_MAX_GROUP_GAIN]  # fmt: skip
    seeds = f"over {seeds_of(ceiling)} pretraining seed{'s' * (seeds_of(ceiling) > 1)}"
    if arg(ceiling) < CEILING_MIN_ARG:
        failed.append(f"{c}: oracle ARG {arg(ceiling):+.1f} < {CEILING_MIN_ARG:g} ({seeds})")
    failed += [f"{c}: {g} not above chance (p = {r.p_above_chance:.3g} >= {CEILING_MAX_P:g}, {seeds})"
               for g, r in ceiling.items() if r.p_above_chance >= CEILING_MAX_P]  # fmt: skip
    return failed


def render(floor: dict[str, GroupResult], ceiling: dict[str, GroupResult]) -> str:
    """The floor/ceiling table in Markdown, with the criteria and the verdict."""
    k = seeds_of(ceiling)
    lines = [
        "## Instrument check: floor and ceiling per held-out group (not part of Table 1)",
        "",
        (
            "Floor: the LM-adapted bases, 0-shot. Ceiling: the oracle (MTL-T with the held-out templates' own training "
            f"pools added), 0-shot. {k} pretraining seed{'s' * (k > 1)}, one base and one oracle each: accuracy and "
            "gain are means over the seeds"
            + (", the range over seeds in brackets" if k > 1 else "")
            + ". Accuracy and relative gain (%) are means over the group's templates; p: one-sided bootstrap "
            f"({BOOTSTRAP_SAMPLES} resamples of the seeds, then the instances) that accuracy is above chance."
        ),
        "",
        (
            "| Group | templates | instances | chance | floor acc | floor gain | floor p | ceiling acc | ceiling gain "
            "| ceiling p |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g, f in floor.items():
        c = ceiling[g]
        lines.append(f"| {g} | {f.templates} | {f.instances} | {100 * f.chance:.1f} | {f.accuracy_text()} | "
                     f"{f.gain:+.1f} | {f.p_above_chance:.3g} | {c.accuracy_text()} | {c.gain:+.1f} | "
                     f"{c.p_above_chance:.3g} |")  # fmt: skip
    lines.append(f"| **ARG** | | | | | **{arg(floor):+.1f}** | | | **{arg(ceiling):+.1f}** | |")
    failed = verdict(floor, ceiling)
    lines += [
        "",
        (
            f"Criteria (fixed in `promptability.studies.instrument`): floor {FLOOR_CRITERIA}: |ARG| <= "
            f"{FLOOR_MAX_ABS_ARG:g} and every group's gain <= {FLOOR_MAX_GROUP_GAIN:g} (means over the bases' seeds); "
            f"ceiling {CEILING_CRITERIA}: "
            f"ARG (mean over the oracle's pretraining seeds) >= {CEILING_MIN_ARG:g} and every group above chance with "
            f"p < {CEILING_MAX_P:g} (hierarchical bootstrap: seeds, then instances)."
        ),
        "",
        "Verdict: " + ("valid (every criterion holds)." if not failed else "NOT valid: " + "; ".join(failed) + "."),
    ]
    return "\n".join(lines) + "\n"


def knowledge_probes(seed: int = 0, n: int = 200) -> list[dict[str, Any]]:
    """Two-way records that ask the base for the knowledge behind each held-out group in plain text, no prompt.

    The right choice is the likelier continuation when the LM has the knowledge: the pronoun of a name's gender
    (Coreference), the next step of an event script (Completion), a sentence on the topic of the ambiguous
    word's sense (WordSense). Drawn from the suite's world with their own random stream, so they are not suite
    instances.
    """
    import random

    from promptability.suite import world as w

    rng = random.Random(f"instrument:{seed}:probes")
    records = []
    for i in range(n):
        label = i % 2
        (person,) = w.pick_names(rng, 1)
        town = rng.choice(w.TOWNS)
        she, he = (f"{p} lives in {town}." for p in ("She", "He"))
        gendered = (she, he) if person.female else (he, she)
        records.append(_probe("gender", f"{person.name} is a {rng.choice(w.JOBS)}.", gendered, label))
        name, other = rng.sample(list(w.SCRIPTS), 2)
        script, fillers = w.SCRIPTS[name], w.fill(rng)
        k = rng.randint(2, len(script.steps) - 2)
        context = " ".join(f"{person.name} {s.format(**fillers)}." for s in script.steps[:k])
        steps = (script.steps[k].format(**fillers), rng.choice(w.SCRIPTS[other].steps).format(**w.fill(rng)))
        records.append(_probe("scripts", context, tuple(f"{person.name} {s}." for s in steps), label))
        word = rng.choice(list(w.USAGES))
        sense = rng.randrange(2)
        topics = [w.USAGES[word][j][0] for j in (sense, 1 - sense)]
        records.append(_probe("senses", w.usage(rng, word, sense), tuple(w.topic_sentence(rng, t) for t in topics),
                              label))  # fmt: skip
    return records


PROBE_GROUPS = {"gender": "Coreference", "scripts": "Completion", "senses": "WordSense"}


def _probe(kind: str, source: str, right_wrong: tuple[str, ...], label: int) -> dict[str, Any]:
    choices = list(right_wrong) if label == 0 else list(reversed(right_wrong))
    return {"task": f"probe_{kind}", "source": source, "target": choices[label], "choices": choices, "label": label}


def oracle_row(mtl_t: TrainConfig, meta: dict[str, Any]) -> tuple[str, TrainConfig]:
    """The oracle as a row of a ``Plan.pretrain``: ``mtl_t`` (the MTL-T config of the demo's rows from the base)
    with the held-out templates' training pools added: its mixture is every training template plus every held-out
    template (their train split). It is trained once per pretraining seed into ``out/models/oracle/seed-<p>`` and
    must never be in a plan's 0-shot or few-shot rows, which feed Table 1."""
    tasks = [t for t, info in meta["templates"].items() if info["role"] in ("train", "heldout")]
    return ORACLE, replace(mtl_t, data=replace(mtl_t.data, tasks=tasks))


ORACLE = "oracle"


def run_instrument(out: Path, scale: Scale, stages: Stages, progress: bool = True, jobs: int = 1,
                   threads: int | None = None) -> str:  # fmt: skip
    """Evaluates every seed's base and oracle 0-shot, probes the bases, writes report/instrument.md/.json; returns
    the table.

    Needs the demo's suite (``out/suite``), and the base and the oracle of every pretraining seed of ``scale``
    (``out/models/base/seed-<p>``, ``out/models/oracle/seed-<p>``: :func:`oracle_row` in the plan the demo ran).
    Every stage resumes; ``jobs`` and ``threads`` as in ``pipeline.run_plan``.
    """
    from promptability.data.readers import read_examples
    from promptability.data.suite_layout import read_meta
    from promptability.studies.pipeline import BASE

    suite_dir, models, runs = out / "suite", out / "models", out / "instrument"
    meta = read_meta(suite_dir)
    seeds = list(scale.pretrain_seeds)
    bases, oracles = ([(models / row / f"seed-{s}", runs / row / f"seed-{s}", f"{row}, seed {s}") for s in seeds]
                      for row in (BASE, ORACLE))  # fmt: skip
    if missing := [str(model) for model, _, _ in bases + oracles if not (model / "promptability.json").is_file()]:
        raise FileNotFoundError(
            f"the instrument needs the base and the trained oracle of every pretraining seed; missing: {missing}"
        )
    heldout = [t for t, info in meta["templates"].items() if info["role"] == "heldout"]
    evaluation = read_examples(suite_dir, tasks=heldout)
    bars = progress and jobs == 1
    probe_dirs, probe_records = [runs / "probe" / f"seed-{s}" for s in seeds], knowledge_probes()
    items = [
        (
            f"0-shot {label} (instrument)",
            run_dir / "run.json",
            partial(_zero_shot, model, run_dir, evaluation, scale, bars),
        )
        for model, run_dir, label in bases + oracles
    ]
    items += [(f"knowledge probe of the {label} (instrument)", probe_dir / "run.json",
               partial(_zero_shot, model, probe_dir, probe_records, scale, bars))
              for (model, _, label), probe_dir in zip(bases, probe_dirs, strict=True)]  # fmt: skip
    stages.run_phase("instrument", items, jobs=jobs, threads=threads, progress=progress)
    floor = group_results([_read_predictions(run_dir) for _, run_dir, _ in bases], meta)
    ceiling = group_results([_read_predictions(run_dir) for _, run_dir, _ in oracles], meta)
    probes = probe_results([_read_predictions(d) for d in probe_dirs])
    table = render(floor, ceiling) + "\n" + render_probes(probes)
    write_text_atomic(out / "report" / "instrument.md", table)
    write_json_atomic(out / "report" / "instrument.json", {
        "criteria": {"floor": FLOOR_CRITERIA, "ceiling": CEILING_CRITERIA},
        "floor": {g: asdict(r) for g, r in floor.items()}, "floor_arg": arg(floor),
        "ceiling": {g: asdict(r) for g, r in ceiling.items()}, "ceiling_arg": arg(ceiling),
        "pretrain_seeds": seeds, "failed": verdict(floor, ceiling), "knowledge_probes": probes,
    })  # fmt: skip
    return table


def probe_results(runs: Sequence[list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per probe kind, from the probe's prediction rows of each base (one run per pretraining seed, the same
    records): the accuracy (percent, the mean over the bases) and the one-sided p that it is above chance (50%),
    the seeds then the records resampled."""
    if not runs or not all(isinstance(run, list) for run in runs):
        raise ValueError("probe_results needs a list of runs, each the list of one run's prediction rows")
    per_run = []
    for predictions in runs:
        hits: dict[str, list[float]] = {}
        for row in predictions:
            hits.setdefault(row["task"].removeprefix("probe_"), []).append(float(row["prediction"] == row["label"]))
        per_run.append(hits)
    if any(h.keys() != per_run[0].keys() or any(len(h[k]) != len(per_run[0][k]) for k in h) for h in per_run):
        raise ValueError("the probe runs differ in their records")
    return {kind: {"accuracy": 100 * float(np.mean([h[kind] for h in per_run])),
                   "p_above_chance": above_chance_p([np.array(h[kind]) for h in per_run], 0.5)}
            for kind in sorted(per_run[0])}  # fmt: skip


def render_probes(probes: dict[str, dict[str, float]]) -> str:
    lines = [
        (
            "Knowledge probe of the bases: two plain-text continuations, the right one likelier if the LM knows "
            "(chance 50%; `instrument.knowledge_probes`); accuracy: the mean over the bases."
        ),
        "",
        "| Knowledge | for | base accuracy | p |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {kind} | {PROBE_GROUPS.get(kind, '')} | {r['accuracy']:.1f} | {r['p_above_chance']:.3g} |"
              for kind, r in probes.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def _zero_shot(model_dir: Path, run_dir: Path, evaluation: list[Any], scale: Scale, progress: bool) -> None:
    from promptability.eval.rank import evaluate, write_run
    from promptability.model import load_model

    model = load_model(model_dir)
    rows = evaluate(model, evaluation, batch_size=64, max_source_len=scale.max_source_len,
                    max_target_len=scale.max_target_len, progress=progress)  # fmt: skip
    write_run(run_dir, rows, {"model": str(model_dir), "shots": 0, "score": "mean", "instrument": True})


def _read_predictions(run_dir: Path) -> list[dict[str, Any]]:
    import json

    text = (run_dir / "predictions.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]
