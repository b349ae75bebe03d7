"""Pair 4: a few-shot prompt-tuning step with the transformer frozen vs the same step training everything.

Both run ``promptability.train.steps.fixed_batch.FixedBatchStep`` on the same k-shot
batch as the shared loop runs it (step, gradient clipping, Adafactor,
zero_grad), from the same weights; only the freeze preset differs
(``prompt-only`` vs ``all``). With the transformer frozen, backward still
carries activation gradients down to the prompt at the input but computes no
weight gradients, so the step should cost about 2/3 of a full step (forward 1,
backward 2 -> 1), and Adafactor steps the prompt alone. Targets: at least 1.2x at the tiny shape, 1.5x at
the T5-small shape (pair 2's workload, measured in every tiny run), or 90% of the FLOP limit where the target
exceeds it. The limit is counted on each side's warm-up rep: the weight gradients the full step adds (the LM
head's and the embeddings' included) against attention's weightless score and value products, which cost the
same on both sides (1.54x at the T5-small shape, 1.60x at tiny). The check also counts the transformer
tensors holding a ``.grad`` after the frozen step's backward: 0, no weight gradient was computed or stored.
The first step's prompt gradient must be the same either way.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch

from benchmarks.common import PAD_ID, Settings, Stat, build_model, make_accelerator, synthetic_dataset, time_pair
from benchmarks.flops import capped_target, counted_once, flop_limit
from benchmarks.report import Row, fmt_stat

TARGET = 1.2
SMALL_TARGET = 1.5  # the target at the T5-small shape, where the optimizer's share is larger


def run(settings: Settings, context: dict[str, Any]) -> list[Row]:
    rows = [_pair(settings, "fewshot", "", TARGET)]
    if settings.size.name == "tiny":  # the T5-small workload, as pair 2 runs it
        from benchmarks.mtl import SMALL_REPS, SMALL_STEP

        small = replace(settings, size=SMALL_STEP, reps=min(settings.reps, SMALL_REPS))
        rows.append(_pair(small, "fewshot_small", " at the T5-small shape", SMALL_TARGET))
    return rows


def fewshot_batch(dataset: Any, task: str, k: int, *, pad_id: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One fixed batch of ``k`` examples of ``task``: a seeded draw, the same for the same seed."""
    import numpy as np

    from promptability.data.batching import TRAIN_COLUMNS, collate, task_indices

    idx = task_indices(dataset)[task]
    if not 1 <= k <= len(idx):
        raise ValueError(f"k={k} few-shot examples requested but task '{task}' has {len(idx)}")
    rows = np.sort(np.random.default_rng(seed).choice(idx, size=k, replace=False)).tolist()
    return collate(dataset.select_columns(TRAIN_COLUMNS)[rows], pad_id)


def _pair(settings: Settings, key: str, where: str, target: float) -> Row:
    from promptability.train.loop import build_optimizer
    from promptability.train.steps.fixed_batch import FixedBatchStep

    size = settings.size
    data = synthetic_dataset(size.shots * 2, size.source_len, size.target_len, size.vocab_size, tasks=1,
                             seed=settings.seed + 11)  # fmt: skip
    batch = fewshot_batch(data, "bench_task_0", size.shots, pad_id=PAD_ID, seed=settings.seed)
    accelerator = make_accelerator(settings)
    prompt_model = build_model(settings).train()
    full_model = copy.deepcopy(prompt_model)
    first: dict[str, torch.Tensor] = {}
    frozen_grads: list[int] = []

    def runner(model, preset: str, side: str):
        params = model.freeze(preset)
        optimizer = build_optimizer(params, 1e-3)
        step = FixedBatchStep(batch)

        def one_rep() -> None:
            for _ in range(size.steps_per_rep):
                step(model, accelerator)
                if side not in first:
                    first[side] = model.prompt.weight.grad.detach().float().clone()
                    frozen_grads.append(sum(p.grad is not None for p in model.transformer.parameters()))
                float(torch.nn.utils.clip_grad_norm_(params, 1.0))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        return one_rep

    (ours, ours_flop), (full, full_flop) = (counted_once(runner(prompt_model, "prompt-only", "ours")),
                                            counted_once(runner(full_model, "all", "full")))  # fmt: skip
    timing = time_pair(ours, full, settings, f"few-shot step{where}")
    limit = flop_limit(ours_flop, full_flop)
    capped = capped_target(target, limit)
    scale = max(float(first["full"].abs().max()), 1e-30)
    diff = float((first["ours"] - first["full"]).abs().max()) / scale
    ok = diff <= (5e-2 if settings.bf16 else 1e-4) and frozen_grads[0] == 0
    ratio = Stat.of(timing.ratios())
    per_step = 1 / size.steps_per_rep
    return Row(
        key=f"{key}_step_time", pair="4 few-shot",
        name=f"{size.shots}-shot prompt-tuning step{where}: frozen transformer (prompt-only) vs full-model step: "
             "time per step",
        ours=fmt_stat(Stat.of(timing.ours).scaled(per_step), "s"),
        baseline=fmt_stat(Stat.of(timing.baseline).scaled(per_step), "s"),
        ratio=ratio, ratio_note="speed-up", met=round(ratio.median, 2) >= capped, limit=limit,
        target=f">= {capped:g}x" + (f" (90% of the limit; {target:g}x asked)" if capped < target else ""),
        check=f"first-step prompt gradients {'match' if diff <= 1e-4 or settings.bf16 else 'DIFFER'} (max diff "
              f"{diff:.1e} of the largest); transformer tensors with a .grad: {frozen_grads[0]}",
        check_ok=ok,
    )  # fmt: skip


if __name__ == "__main__":  # python -m benchmarks.fewshot
    from benchmarks.runner import pair_main

    raise SystemExit(pair_main(["fewshot"]))
