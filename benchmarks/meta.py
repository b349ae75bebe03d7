"""Pair 3: a FOMAML and a Reptile meta-step with prompt-only cloning vs a whole-model deep copy per task.

Ours: ``promptability.train.steps.meta.MetaStep`` (the learner clones only the
prompt; the transformer is shared through ``torch.func.functional_call``).
The baseline is the straightforward implementation: per task,
``copy.deepcopy(model)``, the inner prompt-tuning steps on the copy (same
Adafactor, built over every trained tensor of the copy as the reference's
MetaLearner does), the query backward on the copy, then its gradients (FOMAML)
or its parameter change (Reptile: one more step of that Adafactor on the whole
copy, Algorithm 2) added to the model's ``.grad``. Both use a fresh
inner optimizer per task (``carry_inner_state=False``) so their meta-gradients
must agree; we check that. Timed: the meta-gradient computation of one outer
step (the outer optimizer step is the same for all methods and left out).

Peak memory is compared with a plain MTL step (``MTLStep``, forward and
backward) on the largest of the batches the meta-step forwards, so both see
the same activation sizes. Target: the meta-step's peak at most 1.3x the MTL step's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from benchmarks.common import (
    PAD_ID,
    PairTiming,
    Settings,
    Stat,
    build_model,
    make_accelerator,
    model_bytes,
    peak_memory,
    synthetic_dataset,
    time_pair,
    to_device,
)
from benchmarks.report import Row, fmt_stat

INNER_LR = 1e-3
MEMORY_TARGET = 1.3


class CachedEpisodes:
    """Pre-built episodes (already on the device), handed out by index like a ``TaskBatcher``."""

    def __init__(self, episodes: list[Any]) -> None:
        self.episodes = episodes

    def episode(self, i: int) -> Any:
        from promptability.data.episodes import Episode

        return Episode("bench", *self.episodes[i % len(self.episodes)])


def _nll_over_count(model, batch: dict[str, torch.Tensor], settings: Settings) -> torch.Tensor:
    from promptability.train.losses import token_nll_per_row

    with settings.autocast():
        logits = model(**batch).logits
        nll = token_nll_per_row(logits, batch["labels"], batch["decoder_attention_mask"]).sum()
    return nll / max(int(batch["decoder_attention_mask"].sum()), 1)


def naive_meta_step(model, episodes: list[Any], method: str, inner_steps: int, settings: Settings) -> None:
    """Meta-gradients into ``model``'s ``.grad``, deep-copying the whole model for every task."""
    from promptability.train.loop import build_optimizer

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    prompt_names = [n for n in trainable if n.startswith("prompt.")]
    for p in trainable.values():
        p.grad = None
    for support, query in episodes:
        learner = copy.deepcopy(model)
        learned = dict(learner.named_parameters())
        for name, p in learned.items():
            p.requires_grad_(name in prompt_names)
        optimizer = build_optimizer([learned[n] for n in trainable], INNER_LR)  # only the prompt has .grad here
        for batch in support[:inner_steps]:
            _nll_over_count(learner, batch, settings).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for name, p in learned.items():
            p.requires_grad_(name in trainable)
        _nll_over_count(learner, query, settings).backward()
        with torch.no_grad():
            if method == "reptile":
                optimizer.step()  # the whole copy's full step: the prompt's (k+1)-th, the transformer's first
            for name, p in trainable.items():
                update = learned[name].grad if method == "fomaml" else p - learned[name]
                if update is None:
                    update = torch.zeros_like(p)
                p.grad = update.clone() if p.grad is None else p.grad.add_(update)
        del learner, learned, optimizer
    for p in trainable.values():
        p.grad.div_(len(episodes))


def rows_dataset(batch: dict[str, torch.Tensor]):
    """The rows of a collated training batch, as a tokenized dataset (collating it again gives the batch back)."""
    from datasets import Dataset

    from promptability.data.tokenize import FEATURES

    rows = []
    for i in range(batch["input_ids"].shape[0]):
        src = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        tgt = batch["labels"][i][batch["decoder_attention_mask"][i].bool()].tolist()
        rows.append({"task": "bench_reference", "index": i, "input_ids": src, "labels": tgt, "choice_ids": [],
                     "label": -1, "source_len": len(src), "target_len": len(tgt)})  # fmt: skip
    return Dataset.from_list(rows, features=FEATURES)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}


def _max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    scale = max(max(float(t.abs().max()) for t in a.values()), 1e-30)
    return max(float((a[n] - b[n]).abs().max()) for n in a) / scale


def _mb(x: float) -> str:
    return f"{x / 2**20:,.1f} MB"


def run(settings: Settings, context: dict[str, Any]) -> list[Row]:
    from promptability.data.episodes import TaskBatcher
    from promptability.train.steps.meta import MetaStep
    from promptability.train.steps.mtl import MTLStep

    size = settings.size
    model = build_model(settings)
    model.freeze("mtl-tp")
    model.train()
    accelerator = make_accelerator(settings)
    data = synthetic_dataset(
        size.train_examples, size.source_len, size.target_len, size.vocab_size, seed=settings.seed + 7
    )
    batcher = TaskBatcher(data, pad_id=PAD_ID, support_batches=size.inner_steps, batch_size=size.task_batch_size,
                          seed=settings.seed, episodes="sample")  # fmt: skip
    episodes = []
    for i in range(size.meta_batch_size):
        ep = batcher.episode(i)
        episodes.append(([to_device(b, settings.device) for b in ep.support], to_device(ep.query, settings.device)))
    cached = CachedEpisodes(episodes)
    tolerance = 5e-2 if settings.bf16 else 1e-4
    shape = (f"{size.meta_batch_size} tasks x ({size.inner_steps} support + 1 query) batches of "
             f"{size.task_batch_size}")  # fmt: skip

    def clear() -> None:
        for p in model.parameters():
            p.grad = None

    # The reference for memory: a plain MTL step (forward + backward) on the largest batch the meta-step
    # forwards, so both peaks see the same activations (a random task batch pads more than a length-grouped one).
    largest = max((b for support, query in episodes for b in [*support, query]),
                  key=lambda b: b["input_ids"].numel() + b["labels"].numel())  # fmt: skip
    reference = rows_dataset(largest)
    mtl = MTLStep(reference, pad_id=PAD_ID, batch_size=len(reference), micro_batch_size=len(reference),
                  seed=settings.seed)  # fmt: skip
    mtl(model, accelerator)  # warm-up
    clear()
    mtl_peak = peak_memory(lambda: mtl(model, accelerator), settings.device, model_bytes(model))
    clear()
    context["mtl_peak_bytes"] = mtl_peak
    rows: list[Row] = []
    for method in ("fomaml", "reptile"):
        step = MetaStep(method, cached, meta_batch_size=size.meta_batch_size, inner_steps=size.inner_steps,
                        inner_lr=INNER_LR, carry_inner_state=False)  # fmt: skip

        first: dict[str, dict[str, torch.Tensor]] = {}

        def ours(step=step, first=first):
            step(model, accelerator)
            if "ours" not in first:  # the warm-up call keeps its gradients for the check
                first["ours"] = _grads(model)

        def naive(method=method, first=first):
            naive_meta_step(model, episodes, method, size.inner_steps, settings)
            if "naive" not in first:
                first["naive"] = _grads(model)

        timing = time_pair(ours, naive, settings, f"{method} meta-step")
        diff = _max_rel_diff(first["ours"], first["naive"])
        first.update(ours={}, naive={})  # free them; later calls keep none
        clear()
        ours_peak = peak_memory(ours, settings.device, model_bytes(model))
        clear()
        naive_peak = peak_memory(naive, settings.device, model_bytes(model))
        clear()
        rows += _rows(method, shape, size.task_batch_size, timing, diff <= tolerance, diff, ours_peak, naive_peak,
                      mtl_peak)  # fmt: skip
    return rows


def _rows(method: str, shape: str, task_batch_size: int, timing: PairTiming, match: bool, diff: float, ours_peak: float,
          naive_peak: float, mtl_peak: float) -> list[Row]:  # fmt: skip
    """The time row and the two memory rows of one meta-learning method."""
    label = "FOMAML" if method == "fomaml" else "Reptile"
    ratio = ours_peak / mtl_peak
    return [
        Row(
            key=f"meta_{method}_time", pair="3 meta-learning",
            name=f"{label} meta-step, {shape}: time (prompt-only clone vs whole-model deep copy per task)",
            ours=fmt_stat(Stat.of(timing.ours), "s"), baseline=fmt_stat(Stat.of(timing.baseline), "s"),
            ratio=Stat.of(timing.ratios()), ratio_note="speed-up",
            check=f"meta-gradients {'match' if match else 'DIFFER'} (max diff {diff:.1e} of the largest)",
            check_ok=match,
        ),
        Row(
            key=f"meta_{method}_memory_vs_copy", pair="3 meta-learning",
            name=f"{label} meta-step: peak memory vs whole-model deep copy",
            ours=_mb(ours_peak), baseline=_mb(naive_peak),
            ratio=Stat.of([naive_peak / ours_peak]), ratio_note="copy/ours",
        ),
        Row(
            key=f"meta_{method}_memory_vs_mtl", pair="3 meta-learning",
            name=f"{label} meta-step: peak memory vs a plain MTL step on its largest batch "
                 f"({task_batch_size} examples)",
            ours=_mb(ours_peak), baseline=f"{_mb(mtl_peak)} (MTL step)",
            ratio=Stat.of([ratio]), ratio_note="ours/MTL, lower is better",
            target=f"<= {MEMORY_TARGET:g}x", met=round(ratio, 2) <= MEMORY_TARGET,
        ),
    ]  # fmt: skip


if __name__ == "__main__":  # python -m benchmarks.meta
    from benchmarks.runner import pair_main

    raise SystemExit(pair_main(["meta"]))
