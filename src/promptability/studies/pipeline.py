"""The pipeline the demo and the real study share: continued pretraining per row -> 0-shot evaluation ->
few-shot prompt tuning -> the Table-1 report, each stage resumable.

A stage is skipped when its completion marker exists: the file its writer renames into place last, so an
interrupted pipeline continues from the last finished stage; a training stage interrupted mid-way resumes
from its last checkpoint. Folders under ``out``::

    out/models/<row>/seed-<p>/                        one continued-pretraining run per row and pretraining seed
    out/runs/0shot/<row>/seed-<p>/                    zero-shot rank classification (run directories)
    out/runs/16shot/<row>-<prompt>/pseed-<p>/seed-<f>/  few-shot prompt tuning + evaluation per few-shot seed
    out/runs/0shot/base/, out/runs/16shot/base-<prompt>/seed-<f>/   a row of one model (the real study's base; the
                                       demo's base is a seeded row: one model per pretraining seed, as above)
    out/report/                        table.md/.csv/.json, per_group_accuracy.png
    out/timings.json                   what each stage took, or that it was reused; each phase's wall time

With ``jobs > 1`` the stages of one phase (pretraining, 0-shot, few-shot) run in that many spawned worker
processes; the phases stay in order, since a later phase reads an earlier one's models.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptability.io import write_json_atomic

if TYPE_CHECKING:
    import torch

    from promptability.data.schema import Example
    from promptability.train.config import FewShotConfig, TrainConfig


BASE = "base"  # the row "no continued pretraining": the demo's LM-adapted bases, the real study's pretrained LM


class StageError(RuntimeError):
    """A stage that raised in a worker process; the stages finished before it stay done."""


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block, the previous value after; None: unchanged."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count), at least 1."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only; elsewhere every core counts
    return max(len(affinity(0)) if affinity is not None else (os.cpu_count() or 1), 1)


class Stages:
    """Runs stages in order, prints what each took (or that it was reused) and keeps the timings.

    Phases run with ``jobs > 1`` keep their worker processes for the next phase: :meth:`close` them (or use the
    runner as a context manager) when the pipeline is done."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.timings: list[tuple[str, float, bool]] = []
        self.phases: list[dict[str, Any]] = []
        self.parallel: dict[str, int | None] = {}  # the jobs and threads of run_plan, for timings.json
        self.started = time.perf_counter()
        self._workers: tuple[tuple[int, int | None], ProcessPoolExecutor] | None = None

    def close(self) -> None:
        """Stops the worker processes kept from one phase to the next, if any."""
        if self._workers is not None:
            self._workers[1].shutdown(wait=True)
            self._workers = None

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pool(self, jobs: int, threads: int | None) -> ProcessPoolExecutor:
        """The workers of every phase run with ``jobs`` and ``threads``: kept between phases, since a spawned
        worker spends seconds importing torch before its first stage (stages seed themselves, so a worker's past
        stages do not change a later one's digits)."""
        if self._workers is None or self._workers[0] != (jobs, threads):
            self.close()
            context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init,
                                       initargs=(threads,))  # fmt: skip
            self._workers = ((jobs, threads), pool)
        return self._workers[1]

    def reused(self, name: str, marker: Path) -> bool:
        """Whether the stage is done (its marker exists); a done stage is recorded and reported as reused."""
        if not marker.exists():
            return False
        self.timings.append((name, 0.0, True))
        print(f"[{self.label}] {name}: done earlier, reused")
        return True

    def run(self, name: str, marker: Path, fn: Callable[[], Any], threads: int | None = None) -> None:
        if self.reused(name, marker):
            return
        with torch_threads(threads):
            took = _timed(fn)
        self.timings.append((name, took, False))
        print(f"[{self.label}] {name}: {took:.1f} s")

    def summary(self) -> dict[str, Any]:
        stages = [{"stage": n, "seconds": round(s, 2), "reused": r} for n, s, r in self.timings]
        total = round(time.perf_counter() - self.started, 2)
        return {"stages": stages, "phases": self.phases, **self.parallel, "total_s": total}

    def run_phase(self, phase: str, items: Sequence[tuple[str, Path, Callable[[], Any]]], jobs: int = 1,
                  threads: int | None = None, progress: bool = True) -> None:  # fmt: skip
        """Every stage of one phase: (name, marker, fn) in order with ``jobs == 1``, else the unfinished ones in
        ``jobs`` spawned processes (``fn`` picklable), kept for the next phase until :meth:`close`. A stage that
        raises stops the phase: the pending stages are cancelled, the running ones finish (so their markers are
        whole or absent), the workers stop, then :class:`StageError`."""
        start = time.perf_counter()
        if jobs == 1:
            for name, marker, fn in items:
                self.run(name, marker, fn, threads)
        else:
            pending = [(name, fn) for name, marker, fn in items if not self.reused(name, marker)]
            self._in_processes(phase, pending, jobs, threads, progress)
        wall = round(time.perf_counter() - start, 2)
        self.phases.append({"phase": phase, "stages": len(items), "wall_s": wall})

    def _in_processes(self, phase: str, pending: list[tuple[str, Callable[[], Any]]], jobs: int,
                      threads: int | None, progress: bool) -> None:  # fmt: skip
        if not pending:
            return
        from tqdm.auto import tqdm

        pool = self._pool(jobs, threads)
        bar = tqdm(total=len(pending), desc=f"[{self.label}] {phase}", disable=not progress, leave=False)
        try:
            futures: dict[Future[float], str] = {pool.submit(_timed, fn): name for name, fn in pending}
            waiting, finished = set(futures), 0
            while waiting:
                done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: futures[f]):
                    name = futures[future]
                    try:
                        took = future.result()
                    except Exception as error:
                        raise StageError(
                            f"[{self.label}] stage {name!r} failed: {type(error).__name__}: {error}"
                        ) from error
                    finished += 1
                    self.timings.append((name, took, False))
                    bar.update()
                    tqdm.write(f"[{self.label}] {name}: {took:.1f} s ({finished}/{len(pending)})")
        except BaseException:
            # Ctrl-C or a failed stage: nothing new starts; running stages finish, so a rerun resumes cleanly.
            pool.shutdown(wait=True, cancel_futures=True)
            self._workers = None
            raise
        finally:
            bar.close()


def _worker_init(threads: int | None) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # as start() does in the parent; a spawned worker starts afresh
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _timed(fn: Callable[[], Any]) -> float:
    """Runs one stage; its own seconds (in a worker, measured there: the parent's clock includes queueing)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class StudySettingsError(ValueError):
    """An output folder that holds a study run with other settings."""


def check_settings(out: Path, settings: dict[str, Any], fewshot_keys: Collection[str] = (),
                   absent: Mapping[str, Callable[[dict[str, Any]], Any]] | None = None) -> None:  # fmt: skip
    """Finished stages are reused by marker, so they must come from the same settings.

    ``settings``: ``model``, ``data`` and ``scale`` (a dict); the first call writes them to ``out/settings.json``.
    A change confined to ``fewshot_keys`` (scale fields only the few-shot stage reads) is allowed: the few-shot
    runs and the report are removed and redone, while the models and 0-shot runs are kept. ``absent``: for a scale
    field newer than a folder's settings, the value its runs had, from their scale (e.g. a batch run whole).
    """
    path = out / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        old = dict(before["scale"])
        old |= {key: value_of(old) for key, value_of in (absent or {}).items() if key not in old}
        changed = sorted(k for k in settings["scale"] if old.get(k) != settings["scale"][k])
        changed += [k for k in ("model", "data", "sources") if before.get(k) != settings.get(k)]
        if not changed:
            return
        if blocking := [k for k in changed if k not in fewshot_keys]:
            raise StudySettingsError(
                f"{out} holds a study with other settings ({', '.join(blocking)}); use another --out or --force"
            )
        print(f"[settings] {', '.join(changed)} changed: redoing the few-shot runs and the report", flush=True)
        for stale in (out / "runs" / "16shot", out / "report"):
            if stale.exists():  # a failed removal stops here, before the new settings would bless what is left
                shutil.rmtree(stale)
    write_json_atomic(path, settings)


def start(out: str | Path, force: bool, label: str) -> tuple[Path, Stages]:
    """The output folder (emptied first with ``force``) and the stage runner of one pipeline run."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model load drowns the stage bars
    out = Path(out)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out, Stages(label)


@dataclass
class Plan:
    """What one pipeline run trains and evaluates; models are read from and written to ``out/models/<row>``.

    Every row of ``pretrain`` is trained once per pretraining seed (``TrainConfig.seed``) into
    ``out/models/<row>/seed-<p>``, and its 0-shot and few-shot entries run on each seed's model (their model
    field is then unused). A row of ``seeded_rows`` is not trained here but is one model per seed too, in the
    same layout (the demo's base, LM-adapted per seed); a pretraining config whose ``model`` is such a row's
    folder starts each seed from that seed's model. Other rows (the real study's base) are one model, as given.
    """

    data: Path  # the data folder (suite layout): training data and held-out templates
    heldout: list[str]  # the templates evaluated 0-shot
    pretrain: list[tuple[str, TrainConfig]]  # (row, its continued-pretraining config)
    zero_shot: list[tuple[str, str, str]]  # (row, method, the model to load)
    fewshot: list[tuple[str, str | Path, FewShotConfig]]  # (row, the model to tune, config): runs/16shot/<row>-<prompt>
    model_size: str  # for the run.json of the 0-shot runs
    eval_batch_size: int
    max_source_len: int
    max_target_len: int
    autocast: torch.dtype | None = None  # of the 0-shot evaluation
    run_info: dict[str, Any] = field(default_factory=dict)  # more fields for each 0-shot run.json
    pretrain_seeds: list[int] = field(default_factory=lambda: [0])  # one continued-pretraining run per seed and row
    seeded_rows: list[str] = field(default_factory=list)  # rows made outside the plan, one model per pretraining seed

    def __post_init__(self) -> None:
        seeds = self.pretrain_seeds
        valid = all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        if not seeds or not valid or len(set(seeds)) != len(seeds):
            raise ValueError(f"pretrain_seeds must be distinct integers >= 0, at least one; got {seeds!r}")
        if both := set(self.seeded_rows) & {row for row, _ in self.pretrain}:
            raise ValueError(f"rows {sorted(both)} are trained by the plan, so they cannot be seeded_rows too")


def _models(plan: Plan, out: Path, row: str, model: str | Path) -> list[tuple[str, Path | str, dict[str, Any]]]:
    """(folder below the row's run folder, model, run.json fields) for each model of ``row``: one per
    pretraining seed for a row of ``plan.pretrain`` or ``plan.seeded_rows``, else the given model."""
    if row not in {r for r, _ in plan.pretrain} | set(plan.seeded_rows):
        return [("", model, {})]
    family = out / "models" / row
    return [(f"seed-{s}", family / f"seed-{s}", {"pretrain_seed": s, "model_family": str(family)})
            for s in plan.pretrain_seeds]  # fmt: skip


def run_plan(plan: Plan, out: Path, stages: Stages, progress: bool = True, jobs: int = 1,
             threads: int | None = None) -> None:  # fmt: skip
    """Continued pretraining of every row, then 0-shot evaluation, then few-shot tuning (each stage resumable).

    ``jobs``: the stages of a phase run that many at a time, in spawned processes (1: in this process, in order);
    their progress bars are off then. ``threads``: torch's intra-op threads in every stage (None: torch's default).
    """
    from promptability.data.readers import read_examples
    from promptability.eval.groups import groups_for
    from promptability.train.fewshot import fewshot

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be None or an integer >= 1, got {threads!r}")
    stages.parallel = {"jobs": jobs, "threads": threads}
    bars = progress and jobs == 1  # workers' bars would interleave; the parent shows one over the phase instead
    phase = partial(stages.run_phase, jobs=jobs, threads=threads, progress=progress)
    models, runs = out / "models", out / "runs"
    pretraining = []
    seeded = {(models / r).resolve() for r in plan.seeded_rows}  # resolved: a relative and an absolute path match
    for row, config in plan.pretrain:
        for seed in plan.pretrain_seeds:
            target = models / row / f"seed-{seed}"
            from_seeded = Path(config.model).resolve() in seeded
            initial = str(Path(config.model) / f"seed-{seed}") if from_seeded else config.model
            train = partial(_pretrain, replace(config, seed=seed, model=initial), target, bars)
            pretraining.append((f"pretrain {row} (seed {seed})", target / "promptability.json", train))
    phase("pretraining", pretraining)

    evaluation = read_examples(plan.data, tasks=plan.heldout)
    groups = groups_for(evaluation, plan.data)
    zero_shot = []
    for row, method, model in plan.zero_shot:
        for folder, source, info in _models(plan, out, row, model):
            run_dir = runs / "0shot" / row / folder
            zero = partial(_zero_shot, plan, method, str(source), run_dir, evaluation, groups, bars, info)
            label = f" (seed {info['pretrain_seed']})" if info else ""
            zero_shot.append((f"0-shot {row}{label}", run_dir / "run.json", zero))
    phase("0-shot", zero_shot)

    few = []
    for row, tuned_model, fewshot_config in plan.fewshot:
        for folder, source, info in _models(plan, out, row, tuned_model):
            run_dir = runs / "16shot" / f"{row}-{fewshot_config.prompt}" / folder.replace("seed-", "pseed-")
            tune = partial(fewshot, source, plan.data, run_dir, fewshot_config, progress=bars, run_info=info)
            label = f", pretraining seed {info['pretrain_seed']}" if info else ""
            few.append((f"16-shot {row} ({fewshot_config.prompt}{label})", run_dir / "summary.json", tune))
    phase("16-shot", few)


def _pretrain(config: TrainConfig, target: Path, progress: bool) -> None:
    from promptability.train.loop import latest_checkpoint
    from promptability.train.pretrain import pretrain

    pretrain(config, target, resume=latest_checkpoint(target) is not None, progress=progress)


def _zero_shot(plan: Plan, method: str, source: str, run_dir: Path, evaluation: list[Example],
               groups: dict[str, Any], progress: bool, seed_info: dict[str, Any]) -> None:  # fmt: skip
    from promptability.eval.rank import evaluate, precision_of, write_run
    from promptability.model import load_model

    model = load_model(source)
    rows = evaluate(model, evaluation, batch_size=plan.eval_batch_size, max_source_len=plan.max_source_len,
                    max_target_len=plan.max_target_len, progress=progress, autocast=plan.autocast)  # fmt: skip
    write_run(run_dir, rows, {"method": method, "prompt": model.prompt_kind, "shots": 0, "model": source,
                              "model_size": plan.model_size, "seed": None, "score": "mean", "data": str(plan.data),
                              "groups": groups, "precision": precision_of(plan.autocast),
                              "source_eos": not model.is_causal, **plan.run_info, **seed_info})  # fmt: skip


def write_tables(out: Path, stages: Stages, note: str, *, baseline: str, partial: bool,
                 extra: Callable[[Path], None] | None = None, pretrain_seeds: list[int] | None = None,
                 test: str = "hierarchical") -> str:  # fmt: skip
    """The report of every run under ``out/runs`` into ``out/report`` (``extra`` adds files there), and
    ``out/timings.json``; returns the Markdown table. ``pretrain_seeds``: only runs of these pretraining seeds
    (and runs without one) are reported, so the seeds of an earlier, larger run in ``out`` stay out. ``test``: the
    report's significance test (``eval.report.build_report``)."""
    from promptability.eval.report import build_report, render_markdown, write_report
    from promptability.eval.runs import find_runs, load_run

    start_s = time.perf_counter()
    runs = [load_run(p) for p in find_runs([out / "runs"])]
    report = build_report(
        [r for r in runs if pretrain_seeds is None or r.pretrain_seed is None or r.pretrain_seed in pretrain_seeds],
        baseline=baseline,
        partial=partial,
        test=test,
    )
    write_report(report, out / "report", scale_note=note, partial=partial)
    if extra is not None:
        extra(out / "report")
    table = render_markdown(report, note)
    stages.timings.append(("report", time.perf_counter() - start_s, False))
    write_json_atomic(out / "timings.json", stages.summary())
    return table
