"""The paper's study in miniature, offline: suite -> tiny LM -> continued pretraining -> 0/16-shot -> report.

Stages, resumption and the folders they share with the real study: ``promptability.studies.pipeline``.
``force`` starts over.

Layout:
    out/suite/                 the generated task suite
    out/lm/                    prefix-LM records for the LM-adaptation stage
    out/models/base/seed-<p>/  the tiny T5 after LM adaptation, one per pretraining seed (row "no continued
                               pretraining"); each row's seed-<p> continues from base/seed-<p>
    out/models/<row>/seed-<p>/ one continued-pretraining run per Table-1 row and pretraining seed, and the
                               instrument's oracle (out/models/oracle/seed-<p>; its runs under out/instrument)
    out/runs/0shot/<row>/seed-<p>/   zero-shot evaluation (run directories), base included
    out/runs/16shot/<row>-<prompt>/pseed-<p>/seed-<s>/   few-shot prompt tuning + evaluation
    out/report/                table.md/.csv/.json, per_group_accuracy.png
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptability.io import write_json_atomic, write_jsonl_atomic
from promptability.model.prompts import NO_PROMPT, PROMPT_KINDS
from promptability.studies.pipeline import (
    BASE,
    Plan,
    Stages,
    check_settings,
    run_plan,
    start,
    torch_threads,
    write_tables,
)
from promptability.train.methods import METHODS

if TYPE_CHECKING:
    from promptability.train.config import FewShotConfig, TrainConfig


@dataclass
class Scale:
    """How big the miniature is; the paper's scale is in configs/. A larger scale is other values of these fields.

    Time at the defaults (tiny T5, 1.3M parameters), from the full demo on 2 quiet AVX2 cores, one torch thread
    per stage, ``--jobs 2`` (README, docs/miniature.md check G): LM adaptation 76 s per base, the two side by
    side in 82 s; one MTL run of 250 x 32 55-95 s and one meta-learning run 32-42 s, 20 of them (2 seeds x 9
    rows + 2 oracles) in 591 s of wall time; 0-shot 49 s; 16-shot 140 s; the instrument 10 s. In all 14 min
    47 s, 13 s under issue 13's 15-minute budget on that host. ``seeds`` adds few-shot draws (~12 s of stage
    time each per configuration).
    """

    suite_size: str = "default"  # "default": 33 training + 12 held-out templates; "quick": tiny counts
    lm_passages: int = 8000  # LM-adaptation texts (prefix -> continuation)
    lm_steps: int = 250
    batch_size: int = 32  # MTL examples per optimizer step
    # Examples per forward pass. A step's examples are sorted by length and cut into micro-batches, so smaller
    # ones pad less; with example-weighted losses the step's gradient is the same for any micro-batch size.
    micro_batch_size: int = 8
    mtl_steps: int = 250  # per MTL row (and the oracle): 250 x 32 = 8,000 examples, ~40% of an epoch of the suite
    meta_steps: int = 20  # per meta-learning row: 20 x 4 tasks x (3 support + 1 query) x 16 = 5,120 examples
    meta_batch_size: int = 4
    inner_steps: int = 3
    max_source_len: int = 128  # the longest suite source is about 110 tokens
    max_target_len: int = 48
    fewshot_templates_per_dataset: int = 1  # templates few-shot tuned per held-out dataset (0-shot uses all)
    fewshot_epochs: int = 25  # the paper: 100
    seeds: list[int] = field(default_factory=lambda: [0])  # 16-shot draws (and prompt inits) per model
    prompt_length: int = 20
    pretrain_seeds: list[int] = field(default_factory=lambda: [0, 1])  # bases, and continued-pretraining runs per row
    # The training settings of every stage (LM adaptation, rows, oracle): the reference code's, as in the paper
    # configs; the instrument checks of other choices are in docs/miniature.md.
    step_composition: str = "iid"
    loss_weighting: str = "example"

    def describe(self, model_params: int) -> str:
        return (
            f"tiny T5 ({model_params / 1e6:.1f}M parameters, random init + {self.lm_steps} LM-adaptation steps); "
            f"offline suite ({self.suite_size}); MTL rows {self.mtl_steps} steps x {self.batch_size} examples; "
            f"meta-learning rows {self.meta_steps} steps x {self.meta_batch_size} tasks x ({self.inner_steps} support "
            f"+ 1 query) x 16; few-shot: 16 shots, {self.fewshot_epochs} epochs (paper: 100), "
            f"{len(self.seeds)} seeds, {self.fewshot_templates_per_dataset} template(s) per held-out dataset; "
            f"0-shot on every held-out template"
        )


QUICK = Scale(
    suite_size="quick", lm_passages=400, lm_steps=8, batch_size=16, mtl_steps=6, meta_steps=2, meta_batch_size=2,
    inner_steps=1, max_source_len=128, max_target_len=32, fewshot_epochs=3, prompt_length=4, pretrain_seeds=[0],
    seeds=[0, 1, 2],  # few-shot seeds: the tests see the few-shot level of the report
)  # fmt: skip
# About 50 minutes on 2 quiet cores (estimated from the stage times above; the measured run: README): the
# default's LM adaptation (3 bases), twice the continued-pretraining steps, 3 pretraining seeds, 2 few-shot draws
# and 2 templates per held-out dataset at 16 shots.
LARGE = Scale(mtl_steps=500, meta_steps=40, pretrain_seeds=[0, 1, 2], seeds=[0, 1], fewshot_templates_per_dataset=2)
SCALES: dict[str, Scale] = {"default": Scale(), "quick": QUICK, "large": LARGE}
# Settings a rerun may extend (more seeds reuse the runs already made); any other change needs another --out.
EXTENDABLE = ("pretrain_seeds", "seeds")
# torch's intra-op threads in every stage of the demo, whatever --jobs and the machine's core count: a float sum
# split over another number of threads rounds differently, so the table's digits would depend on both.
DEMO_THREADS = 1


# The rows of the paper's Table 1: (row name, method, prompt kind). BASE is "no continued pretraining".
ROWS: list[tuple[str, str, str]] = [
    (f"{m.name}-{kind}", m.name, kind) if m.prompted else (m.name, m.name, "none")
    for m in METHODS.values()
    for kind in (tuple(PROMPT_KINDS) if m.prompted else (NO_PROMPT,))
]


def lm_records(passages: list[str], seed: int) -> list[dict[str, Any]]:
    """Prefix-LM examples as in LM adaptation of T5: a passage cut at a random word, prefix -> continuation."""
    rng = random.Random(seed)
    out = []
    for text in passages:
        words = text.split()
        if len(words) < 4:
            continue
        cut = rng.randrange(1, len(words) - 1)
        out.append({"task": "lm_adaptation", "source": " ".join(words[:cut]), "target": " ".join(words[cut:])})
    return out


@torch_threads(DEMO_THREADS)  # the stages outside run_plan too: suite, LM adaptation, instrument
def run_demo(
    out: str | Path = "runs/demo",
    scale: str | Scale = "default",
    force: bool = False,
    progress: bool = True,
    check: bool = False,
    pretrain_seeds: list[int] | None = None,
    jobs: int = 1,
) -> str:
    """Runs (or continues) the whole study; returns the Markdown table, then the instrument's floor/ceiling table.

    ``scale``: a name in ``SCALES`` or a ``Scale``. ``check``: only the suite, the bases and oracles (one each
    per pretraining seed) and the instrument check (``promptability.studies.instrument``). ``pretrain_seeds`` replaces the scale's. ``jobs``:
    the pipeline's stages run that many at a time in spawned processes (so a script calling this with jobs > 1
    needs an ``if __name__ == "__main__":`` guard; the CLI uses every core); it changes the time, not the numbers,
    since every stage runs at ``DEMO_THREADS``.
    """
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown demo scale {scale!r}: choose one of {', '.join(SCALES)}")
        scale = SCALES[scale]
    scale = scale if pretrain_seeds is None else replace(scale, pretrain_seeds=pretrain_seeds)
    out, stages = start(out, force, "demo")
    from promptability.suite.tasks import DATASETS

    # The suite's datasets and the thread count change numbers too: a folder of another design is refused.
    fixed = {k: v for k, v in asdict(scale).items() if k not in EXTENDABLE}
    fixed |= {"threads": DEMO_THREADS, "suite_datasets": [f"{d.cluster}/{d.name}" for d in DATASETS]}
    check_settings(out, {"model": "tiny", "data": "suite", "scale": fixed})
    with stages:  # closes the workers kept between phases
        return _run(out, stages, scale, check, jobs, progress)


def _run(out: Path, stages: Stages, scale: Scale, check: bool, jobs: int, progress: bool) -> str:
    from promptability.data.suite_layout import read_meta
    from promptability.model import load_model
    from promptability.studies.instrument import ORACLE, run_instrument
    from promptability.suite.generate import lm_corpus, write_suite

    suite_dir, base = out / "suite", out / "models" / BASE
    stages.run("suite", suite_dir / "suite.json",
               lambda: write_suite(suite_dir, seed=0, size=scale.suite_size, progress=progress))  # fmt: skip
    meta = read_meta(suite_dir)
    if not (lm_file := out / "lm" / "train" / "lm_adaptation.jsonl").is_file():  # one corpus for every seed's base
        write_jsonl_atomic(lm_file, lm_records(list(lm_corpus(seed=1, n=scale.lm_passages)), seed=0))
    # One base per pretraining seed, so the seeds' spread covers LM adaptation too (issue 13: every source of
    # randomness the miniature can afford), and the floor is judged over bases, not on one.
    lm_jobs = min(jobs, len(scale.pretrain_seeds))
    adapt = [(f"LM adaptation (base, seed {p})", base / f"seed-{p}" / "promptability.json",
              partial(_lm_adapt, out, scale, p, progress and lm_jobs == 1)) for p in scale.pretrain_seeds]  # fmt: skip
    stages.run_phase("LM adaptation", adapt, jobs=lm_jobs, threads=DEMO_THREADS, progress=progress)
    plan = _plan(out, scale, meta)
    if check:  # the oracle is the only model trained
        plan = replace(plan, pretrain=[r for r in plan.pretrain if r[0] == ORACLE], zero_shot=[], fewshot=[])
    run_plan(plan, out, stages, progress, jobs=jobs, threads=DEMO_THREADS)
    instrument = run_instrument(out, scale, stages, progress, jobs=jobs, threads=DEMO_THREADS)
    if check:
        write_json_atomic(out / "timings.json", stages.summary())
        return instrument
    note = scale.describe(sum(p.numel() for p in load_model(base / f"seed-{scale.pretrain_seeds[0]}").parameters()))
    # Every row's seed p starts from base p, so the rows' seeds are paired in the significance test.
    table = write_tables(out, stages, note, baseline="mtl-t", partial=False, pretrain_seeds=scale.pretrain_seeds,
                         test="paired-seeds")  # fmt: skip
    return table + "\n" + instrument


def _train_config(scale: Scale, method: str, prompt: str, data: Path, steps: int, model: str) -> TrainConfig:
    from promptability.train.config import DataConfig, MetaConfig, TrainConfig

    return TrainConfig(
        method=method, prompt=prompt, prompt_length=scale.prompt_length, model=model,
        data=DataConfig(path=str(data), split="train", max_source_len=scale.max_source_len,
                        max_target_len=scale.max_target_len, step_composition=scale.step_composition),
        loss_weighting=scale.loss_weighting, batch_size=scale.batch_size, micro_batch_size=scale.micro_batch_size, max_steps=steps,
        save_every=max(steps // 4, 1), log_every=5,
        meta=MetaConfig(meta_batch_size=scale.meta_batch_size, inner_steps=scale.inner_steps),
    )  # fmt: skip


def _lm_adapt(out: Path, scale: Scale, seed: int, progress: bool) -> None:
    """The base model of one pretraining seed: the tiny T5 (initialised with ``seed``) after a short prefix-LM
    stage on the suite's world (``out/lm``, the same texts for every seed, in the seed's order)."""
    from promptability.model import load_model
    from promptability.train.loop import latest_checkpoint
    from promptability.train.pretrain import pretrain

    lm_dir, target = out / "lm", out / "models" / BASE / f"seed-{seed}"
    if latest_checkpoint(target) is None:  # the tokenizer and initial weights, for a resumed run to start from
        load_model("tiny", seed=seed).save(target / "init")
    model = load_model(target / "init")
    config = replace(_train_config(scale, "mtl-t", "none", lm_dir, scale.lm_steps, "tiny"), seed=seed)
    pretrain(config, target, resume=latest_checkpoint(target) is not None, progress=progress, model=model)


def _plan(out: Path, scale: Scale, meta: dict[str, Any]) -> Plan:
    """Every Table-1 row, seed p from base p; 0-shot on every held-out template, 16-shot on a few. The
    instrument's oracle is one more pretraining row, never evaluated here (its runs are not Table 1's)."""
    from promptability.studies.instrument import oracle_row

    suite_dir, models, base = out / "suite", out / "models", str(out / "models" / BASE)
    heldout = [t for t, info in meta["templates"].items() if info["role"] == "heldout"]
    pretrain = []
    for row, method, prompt in ROWS:
        steps = scale.meta_steps if METHODS[method].meta else scale.mtl_steps
        pretrain.append((row, _train_config(scale, method, prompt, suite_dir, steps, base)))
    pretrain.append(oracle_row(_train_config(scale, "mtl-t", "none", suite_dir, scale.mtl_steps, base), meta))
    zero_shot = [(BASE, "none")] + [(row, method) for row, method, _ in ROWS]
    by_dataset: dict[str, list[str]] = {}
    for t in heldout:
        by_dataset.setdefault(meta["templates"][t]["dataset"], []).append(t)
    tasks = [t for ts in by_dataset.values() for t in ts[: scale.fewshot_templates_per_dataset]]
    fewshot: list[tuple[str, str | Path, FewShotConfig]] = []
    for row, method in zero_shot:
        # rows without a prompt of their own are tuned with a fresh prompt of every kind
        unprompted = method == NO_PROMPT or not METHODS[method].prompted
        for kind in list(PROMPT_KINDS) if unprompted else [row.rsplit("-", 1)[1]]:
            fewshot.append((row, models / row, _fewshot_config(scale, kind, method, tasks)))
    return Plan(
        data=suite_dir, heldout=heldout, pretrain=pretrain,
        zero_shot=[(row, method, str(models / row)) for row, method in zero_shot], fewshot=fewshot,
        model_size="tiny", eval_batch_size=64, max_source_len=scale.max_source_len, max_target_len=scale.max_target_len,
        pretrain_seeds=list(scale.pretrain_seeds), seeded_rows=[BASE],
    )  # fmt: skip


def _fewshot_config(scale: Scale, kind: str, method: str, tasks: list[str]) -> FewShotConfig:
    from promptability.train.config import FewShotConfig

    return FewShotConfig(
        shots=16, epochs=scale.fewshot_epochs, seeds=list(scale.seeds), prompt=kind,
        prompt_length=scale.prompt_length, tasks=tasks, method=method, eval_batch_size=64,
        templates_per_step=len(tasks),
        max_source_len=scale.max_source_len, max_target_len=scale.max_target_len,
    )  # fmt: skip
