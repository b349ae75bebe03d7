"""Is the miniature a valid instrument? Its floor and ceiling on every held-out group, checked against fixed criteria.

The demo measures how continued pretraining changes zero- and few-shot accuracy on held-out task types. That
means something only if the held-out groups can move: the LM-adapted base must sit near chance 0-shot (the
floor: it has the knowledge but has never seen the prompt formats), and a model that is *shown* the held-out
tasks must get well above chance on each of them (the ceiling: the oracle, MTL-T from the same base with the
held-out templates' own training pools added to the mixture, same steps). A group the oracle cannot learn at
this scale measures nothing. The criteria below were fixed before the first check ran; the suite was
designed against them only, never against the Table-1 rows.

Folders (beside the demo's, outside ``out/runs`` so the Table-1 report never picks them up)::

    out/models/oracle/             the oracle's continued pretraining
    out/instrument/{base,oracle}/  their 0-shot rank-classification runs on every held-out template
    out/report/instrument.md       the floor/ceiling table (also .json)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from promptability.eval.metrics import chance_level, relative_gain
from promptability.io import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from promptability.studies.demo import Scale
    from promptability.studies.pipeline import Stages
    from promptability.train.config import TrainConfig

# The criteria (percent relative gain over chance, as ARG). Fixed before any check was run.
FLOOR_MAX_ABS_ARG = 5.0  # the base's 0-shot ARG over all groups lies within +-5
FLOOR_MAX_GROUP_GAIN = 15.0  # and no single group is more than 15% (relative) above chance
CEILING_MIN_ARG = 40.0  # the oracle's ARG over all groups is at least 40
CEILING_MAX_P = 0.05  # and every group is above chance, one-sided p < 0.05
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class GroupResult:
    """One model on one held-out group: mean accuracy and relative gain over its templates, p above chance."""

    group: str
    templates: int
    instances: int
    chance: float
    accuracy: float  # percent
    gain: float  # percent relative gain over chance (the group's ARG term)
    p_above_chance: float


def above_chance_p(excess: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> float:
    """One-sided bootstrap p-value that the mean of ``excess`` (per instance: correct - chance) is above 0.

    Instances are the unit resampled: every template of a dataset renders the same instances, so a
    template's predictions are not independent of another's; ``excess`` holds each instance's mean over
    its templates. p = (1 + resampled means <= 0) / (1 + samples).
    """
    excess = np.asarray(excess, dtype=np.float64)
    if excess.ndim != 1 or not len(excess):
        raise ValueError(f"above_chance_p needs a non-empty 1-D array, got shape {excess.shape}")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 1000):  # in chunks: samples x instances indices would not fit at large n
        idx = rng.integers(0, len(excess), size=(min(1000, samples - start), len(excess)))
        means[start : start + len(idx)] = excess[idx].mean(axis=1)
    return float((1 + np.count_nonzero(means <= 0.0)) / (1 + samples))


def group_results(predictions: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, GroupResult]:
    """Per held-out group of the suite (``meta``: suite.json), from ``evaluate``'s prediction rows."""
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
        excess: dict[tuple[str, int], list[float]] = {}
        accs, gains, chances = [], [], []
        for task in tasks:
            rows = by_task[task]
            chance = chance_level(len(r["scores"]) for r in rows)
            acc = float(np.mean([r["prediction"] == r["label"] for r in rows]))
            accs.append(acc)
            chances.append(chance)
            gains.append(relative_gain(acc, chance=chance))
            dataset = meta["templates"][task]["dataset"]
            for r in rows:
                excess.setdefault((dataset, r["index"]), []).append(float(r["prediction"] == r["label"]) - chance)
        per_instance = np.array([np.mean(v) for v in excess.values()])
        out[group] = GroupResult(group, len(tasks), len(per_instance), float(np.mean(chances)),
                                 100 * float(np.mean(accs)), 100 * float(np.mean(gains)),
                                 above_chance_p(per_instance))  # fmt: skip
    return dict(sorted(out.items()))


def arg(results: dict[str, GroupResult]) -> float:
    """ARG (percent): the mean of the groups' relative gains."""
    return float(np.mean([r.gain for r in results.values()]))


def verdict(floor: dict[str, GroupResult], ceiling: dict[str, GroupResult]) -> list[str]:
    """The criteria that fail (empty: the instrument is valid)."""
    failed = []
    if abs(arg(floor)) > FLOOR_MAX_ABS_ARG:
        failed.append(f"floor: base 0-shot ARG {arg(floor):+.1f}, outside +-{FLOOR_MAX_ABS_ARG:g}")
    failed += [f"floor: {g} {r.gain:+.1f} above chance (> {FLOOR_MAX_GROUP_GAIN:g})"
               for g, r in floor.items() if r.gain > FLOOR_MAX_GROUP_GAIN]  # fmt: skip
    if arg(ceiling) < CEILING_MIN_ARG:
        failed.append(f"ceiling: oracle ARG {arg(ceiling):+.1f} < {CEILING_MIN_ARG:g}")
    failed += [f"ceiling: {g} not above chance (p = {r.p_above_chance:.3g} >= {CEILING_MAX_P:g})"
               for g, r in ceiling.items() if r.p_above_chance >= CEILING_MAX_P]  # fmt: skip
    return failed


def render(floor: dict[str, GroupResult], ceiling: dict[str, GroupResult], note: str = "") -> str:
    """The floor/ceiling table in Markdown, with the criteria and the verdict."""
    lines = [
        "## Instrument check: floor and ceiling per held-out group (not part of Table 1)",
        "",
        (
            "Floor: the LM-adapted base, 0-shot. Ceiling: the oracle (MTL-T with the held-out templates' own training "
            "pools added), 0-shot. Accuracy and relative gain (%) are means over the group's templates; p: one-sided "
            f"bootstrap over instances ({BOOTSTRAP_SAMPLES} resamples) that accuracy is above chance."
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
        lines.append(f"| {g} | {f.templates} | {f.instances} | {100 * f.chance:.1f} | {f.accuracy:.1f} | "
                     f"{f.gain:+.1f} | {f.p_above_chance:.3g} | {c.accuracy:.1f} | {c.gain:+.1f} | "
                     f"{c.p_above_chance:.3g} |")  # fmt: skip
    lines.append(f"| **ARG** | | | | | **{arg(floor):+.1f}** | | | **{arg(ceiling):+.1f}** | |")
    failed = verdict(floor, ceiling)
    lines += [
        "",
        (
            f"Criteria (fixed in `promptability.studies.instrument`): floor |ARG| <= {FLOOR_MAX_ABS_ARG:g} and every "
            f"group's gain <= {FLOOR_MAX_GROUP_GAIN:g}; ceiling ARG >= {CEILING_MIN_ARG:g} and every group above "
            f"chance with p < {CEILING_MAX_P:g}."
        ),
        "",
        "Verdict: " + ("valid (every criterion holds)." if not failed else "NOT valid: " + "; ".join(failed) + "."),
    ]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def knowledge_probes(seed: int = 0, n: int = 200) -> list[dict[str, Any]]:
    """Two-way records that ask the base for the knowledge behind each held-out group in plain text, no prompt.

    The right choice is the likelier continuation when the LM has the knowledge: a restated fact of the
    premise (NLI, RTE), the pronoun of a name's gender (Coreference), the next step of an event script
    (Completion), a sentence on the topic of the ambiguous word's sense (WordSense). Drawn from the suite's
    world with their own random stream, so they are not suite instances.
    """
    import random

    from promptability.suite import world as w

    rng = random.Random(f"instrument:{seed}:probes")
    records = []
    for i in range(n):
        label = i % 2
        (person,) = w.pick_names(rng, 1)
        w.give_facts(rng, [person], (2, 3))
        slot = rng.choice(list(person.facts))
        wrong = rng.choice([v for v in w.SLOTS[slot].values if v != person.facts[slot]])
        variant = rng.randrange(4)  # the same wording for both, so only the value differs
        facts = tuple(w.say(rng, slot, v, person.forms(True), variant) for v in (person.facts[slot], wrong))
        records.append(_probe("facts", " ".join(w.describe(rng, person)) + " So, again:", facts, label))
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


PROBE_GROUPS = {"facts": "NLI, RTE", "gender": "Coreference", "scripts": "Completion", "senses": "WordSense"}


def _probe(kind: str, source: str, right_wrong: tuple[str, ...], label: int) -> dict[str, Any]:
    choices = list(right_wrong) if label == 0 else list(reversed(right_wrong))
    return {"task": f"probe_{kind}", "source": source, "target": choices[label], "choices": choices, "label": label}


def oracle_tasks(meta: dict[str, Any]) -> list[str]:
    """The oracle's mixture: every training template plus every held-out template (their train split)."""
    return [t for t, info in meta["templates"].items() if info["role"] in ("train", "heldout")]


def run_instrument(out: Path, scale: Scale, oracle: TrainConfig, stages: Stages, progress: bool = True) -> str:
    """Trains the oracle, evaluates base and oracle 0-shot, writes report/instrument.md/.json; returns the table.

    Needs the demo's suite (``out/suite``) and base model (``out/models/base``); ``oracle``: the MTL-T config of
    the demo's rows from the base (its ``data.tasks`` are set here: :func:`oracle_tasks`). Every stage resumes.
    """
    from promptability.data.readers import read_examples
    from promptability.data.suite_layout import read_meta
    from promptability.train.loop import latest_checkpoint
    from promptability.train.pretrain import pretrain

    suite_dir, models = out / "suite", out / "models"
    meta = read_meta(suite_dir)
    config = replace(oracle, data=replace(oracle.data, tasks=oracle_tasks(meta)))
    target = models / "oracle"
    stages.run("pretrain oracle (instrument)", target / "promptability.json",
               lambda: pretrain(config, target, resume=latest_checkpoint(target) is not None, progress=progress))  # fmt: skip
    heldout = [t for t, info in meta["templates"].items() if info["role"] == "heldout"]
    evaluation = read_examples(suite_dir, tasks=heldout)
    results = {}
    for name in ("base", "oracle"):
        run_dir = out / "instrument" / name
        zero = partial(_zero_shot, models / name, run_dir, evaluation, scale, progress)
        stages.run(f"0-shot {name} (instrument)", run_dir / "run.json", zero)
        results[name] = group_results(_read_predictions(run_dir), meta)
    probe_dir = out / "instrument" / "probe"
    stages.run("knowledge probe of the base (instrument)", probe_dir / "run.json",
               lambda: _zero_shot(models / "base", probe_dir, knowledge_probes(), scale, progress))  # fmt: skip
    probes = probe_results(_read_predictions(probe_dir))
    table = render(results["base"], results["oracle"]) + "\n" + render_probes(probes)
    write_text_atomic(out / "report" / "instrument.md", table)
    write_json_atomic(out / "report" / "instrument.json", {
        "floor": {g: asdict(r) for g, r in results["base"].items()}, "floor_arg": arg(results["base"]),
        "ceiling": {g: asdict(r) for g, r in results["oracle"].items()}, "ceiling_arg": arg(results["oracle"]),
        "failed": verdict(results["base"], results["oracle"]), "knowledge_probes": probes,
    })  # fmt: skip
    return table


def probe_results(predictions: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per probe kind: the base's accuracy (percent) and the one-sided p that it is above chance (50%)."""
    hits: dict[str, list[float]] = {}
    for row in predictions:
        hits.setdefault(row["task"].removeprefix("probe_"), []).append(float(row["prediction"] == row["label"]))
    return {kind: {"accuracy": 100 * float(np.mean(h)), "p_above_chance": above_chance_p(np.array(h) - 0.5)}
            for kind, h in sorted(hits.items())}  # fmt: skip


def render_probes(probes: dict[str, dict[str, float]]) -> str:
    lines = [
        (
            "Knowledge probe of the base: two plain-text continuations, the right one likelier if the LM knows "
            "(chance 50%; `instrument.knowledge_probes`)."
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
