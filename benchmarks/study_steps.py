"""The real study's training steps run whole vs in micro-batches of similar lengths, side by side.

The study's steps are small batches of very different lengths: a template's 16 shots (HellaSwag's longest source
is three times its mean) and the MTL step's 8 examples drawn from the whole mixture. Run whole, every row is padded
to the batch's longest. Split into length-sorted micro-batches whose gradients add up (``FixedBatchStep``'s
``micro_batch_tokens``, ``MTLStep``'s ``micro_batch_size``), the same work has less padding, and each pass's
activations are smaller. This times both ways on the study's own data and model, interleaved (the order of the
two sides alternates per round; the first round warms up, so an odd ``--rounds`` balances the order), forward
and backward only (the optimizer step is the same either way), and checks that the loss and the trained tensors'
gradients agree (exit status 1 where they differ beyond the precision's rounding).

    python -m benchmarks.study_steps --data runs/study-real/data [--model smollm2-135m] [--precision auto]

Few-shot: each tuned template's first 16 evaluation instances stand in for its 16 shots (the same template, so
the same lengths to expect), a fresh shallow prompt, the transformer frozen. MTL: the first ``--mtl-steps`` global
batches of the MTL-T row's step (transformer trained, no prompt), the same batches on both sides.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def side_by_side(model: Any, steps: Sequence[tuple[Any, Any]], accelerator: Any, rounds: int) -> dict[str, Any]:
    """Times ``steps`` [(whole, split)] on ``model``: seconds per side summed over the last ``rounds - 1`` rounds
    (the first warms up; at least one round counts), the largest relative loss difference and the largest
    ||split - whole|| / ||whole|| of the trained tensors' gradients, over every call."""
    trained = [p for p in model.parameters() if p.requires_grad]
    seconds = {"whole": 0.0, "split": 0.0}
    loss_diff = grad_diff = 0.0
    for r in range(max(rounds, 1)):
        for whole, split in steps:
            results = {}
            for side, step in (("whole", whole), ("split", split))[:: 1 if r % 2 == 0 else -1]:
                model.zero_grad(set_to_none=True)
                holder: dict[str, Any] = {}
                elapsed = _timed(lambda step=step, holder=holder: holder.update(step(model, accelerator)))
                if r > 0 or rounds == 1:
                    seconds[side] += elapsed
                results[side] = (holder["loss"], [p.grad.detach().float().clone() for p in trained])
            (loss_w, grads_w), (loss_s, grads_s) = results["whole"], results["split"]
            loss_diff = max(loss_diff, abs(loss_s - loss_w) / max(abs(loss_w), 1e-30))
            # Over all trained tensors at once: a per-tensor ratio lets a tensor with a tiny gradient (bf16 rounding of a
            # sum that nearly cancels) read as a large difference.
            diff = sum(float((a - b).pow(2).sum()) for a, b in zip(grads_s, grads_w, strict=True))
            norm = sum(float(b.pow(2).sum()) for b in grads_w)
            grad_diff = max(grad_diff, (diff / max(norm, 1e-30)) ** 0.5)
    model.zero_grad(set_to_none=True)
    return {**seconds, "speedup": seconds["whole"] / max(seconds["split"], 1e-12), "loss_diff": loss_diff,
            "grad_diff": grad_diff}  # fmt: skip


def fewshot_steps(data: Path, model: Any, templates: Sequence[str], budget: int, scale: Any) -> list[tuple[Any, Any]]:
    from promptability.data.batching import TRAIN_COLUMNS, collate
    from promptability.data.readers import read_examples
    from promptability.data.tokenize import tokenize_records
    from promptability.train.steps.fixed_batch import FixedBatchStep

    records = read_examples(data, tasks=list(templates))
    out = []
    for template in templates:
        shots = [r for r in records if r["task"] == template][:16]
        tokenized = tokenize_records(shots, model.tokenizer, max_source_len=scale.max_source_len,
                                     max_target_len=scale.max_target_len, use_cache=False, progress=False,
                                     continuation=model.is_causal).dataset  # fmt: skip
        batch = collate(tokenized.select_columns(TRAIN_COLUMNS)[: len(shots)], model.pad_token_id)
        out.append((FixedBatchStep(batch), FixedBatchStep(batch, micro_batch_tokens=budget)))
    return out


def mtl_steps(model: Any, config: Any, accelerator: Any, steps: int, micro: int) -> list[tuple[Any, Any]]:
    from dataclasses import replace

    from promptability.train.pretrain import load_pretraining_data
    from promptability.train.steps.mtl import MTLStep, mtl_step_options

    dataset, _ = load_pretraining_data(config, model.tokenizer, accelerator, model.is_causal, False)
    whole = MTLStep(
        dataset, **mtl_step_options(model, replace(config, micro_batch_size=config.batch_size), accelerator)
    )
    split = MTLStep(dataset, **mtl_step_options(model, replace(config, micro_batch_size=micro), accelerator))
    # One seed, one sampler order: called in turn, both sides draw the same global batch each time.
    return [(whole, split)] * steps


def main(argv: list[str] | None = None) -> int:
    from promptability.cli.common import positive_int
    from promptability.model import load_model
    from promptability.studies.real import StudyScale, _train_config, fewshot_templates
    from promptability.train.distributed import make_accelerator, resolve_precision

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the study's data folder (runs/study-real/data)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="rounds of every step on both sides; the first warms up (odd: the order balances)",
    )
    parser.add_argument("--mtl-steps", type=int, default=8)
    args = parser.parse_args(argv)

    scale = StudyScale(precision=resolve_precision(args.precision))
    accelerator = make_accelerator(scale.precision, cpu=True)
    manifest = json.loads((args.data / "study.json").read_text())
    print(f"{args.model}, {scale.precision}, {torch.get_num_threads()} threads, {args.rounds} rounds (first: warm-up)")

    model = load_model(args.model, prompt="shallow", prompt_length=scale.prompt_length)
    model.freeze("prompt-only")
    templates = fewshot_templates(manifest, scale.fewshot_templates_per_dataset)
    few = side_by_side(model, fewshot_steps(args.data, model, templates, scale.fewshot_micro_batch_tokens, scale),
                       accelerator, args.rounds)  # fmt: skip
    _print(f"few-shot step, {len(templates)} templates x 16 shots, one batch vs micro-batches of "
           f"<= {scale.fewshot_micro_batch_tokens} tokens", few)  # fmt: skip

    model = load_model(args.model)
    model.freeze("all")
    config = _train_config(scale, "mtl-t", "none", args.model, args.data, list(manifest["train"]))
    mtl = side_by_side(model, mtl_steps(model, config, accelerator, args.mtl_steps, scale.micro_batch_size),
                       accelerator, args.rounds)  # fmt: skip
    _print(f"MTL-T step, {args.mtl_steps} batches of {scale.batch_size}, one batch vs micro-batches of "
           f"{scale.micro_batch_size}", mtl)  # fmt: skip
    # Float order only: bf16 autocast rounds each side's activations differently; fp32 agrees far closer.
    tolerance = 5e-2 if scale.precision == "bf16" else 1e-4
    agree = all(r["loss_diff"] <= tolerance and r["grad_diff"] <= tolerance for r in (few, mtl))
    print(f"agreement within {tolerance:g} (relative loss, gradient norm): {'yes' if agree else 'NO'}")
    return 0 if agree else 1


def _print(what: str, r: dict[str, Any]) -> None:
    print(
        f"{what}: {r['whole']:.1f} s vs {r['split']:.1f} s, speed-up {r['speedup']:.2f}x; largest relative "
        f"difference: loss {r['loss_diff']:.1e}, gradient {r['grad_diff']:.1e}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
