"""Pair 2: the project's multi-task (MTL-TP, shallow prompt) training step vs plain transformers + PEFT.

Ours: ``MTLStep`` run as the shared training loop runs it (the step's forward
and backward, then gradient-norm clipping, Adafactor step, zero_grad). The
baseline is the usual Hugging Face way: ``peft.get_peft_model`` with a
``PromptTuningConfig`` on ``T5ForConditionalGeneration`` (transformer
unfrozen), the model's own mean-token loss, the same Adafactor and clipping.
Both start from the same weights and prompt and see the same batches in the
same order (the baseline draws them from an identical length-grouped sampler),
so their first-step losses must agree. Target: at least as many tokens/s.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import PAD_ID, Settings, Stat, build_model, make_accelerator, synthetic_dataset, time_pair
from benchmarks.report import Row, fmt_stat

LR, CLIP = 1e-3, 1.0


def peft_baseline(model, settings: Settings):
    """A PEFT prompt-tuning model with ``model``'s transformer weights and prompt, everything trainable."""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import T5ForConditionalGeneration

    base = T5ForConditionalGeneration(model.transformer.config)
    base.load_state_dict(model.transformer.state_dict())
    config = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=model.prompt_length,
                                num_transformer_submodules=1)  # fmt: skip
    with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5; not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(base, config)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(model.prompt.weight)
    for p in peft_model.parameters():
        p.requires_grad_(True)
    return peft_model.to(settings.device).train()


def model_counts(model) -> dict[str, int]:
    """What the FLOP count needs: all parameters, encoder weights, decoder weights + LM head (no embeddings)."""
    t = model.transformer
    embedding = {id(p) for p in t.get_input_embeddings().parameters()}
    enc = sum(p.numel() for p in t.get_encoder().parameters() if id(p) not in embedding)
    dec = sum(p.numel() for p in t.get_decoder().parameters() if id(p) not in embedding)
    head = sum(p.numel() for p in t.lm_head.parameters())  # untied in T5 v1.1; a tied head still does the matmul
    return {"params": sum(p.numel() for p in model.parameters()), "encoder": enc, "decoder": dec + head,
            "prompt_length": model.prompt_length}  # fmt: skip


class _Batches:
    """The index batches an ``MTLStep`` with the same sampler settings draws, epoch after epoch."""

    def __init__(self, dataset, batch_size: int, seed: int) -> None:
        from promptability.data.batching import TRAIN_COLUMNS, LengthGroupedBatchSampler, lengths_of

        self.sampler = LengthGroupedBatchSampler(lengths_of(dataset), batch_size, seed=seed)
        self.view = dataset.select_columns(TRAIN_COLUMNS)
        self._it = iter(self.sampler)

    def restart(self) -> None:
        self.sampler.set_epoch(0)
        self._it = iter(self.sampler)

    def next(self) -> dict[str, torch.Tensor]:
        from promptability.data.batching import collate

        try:
            idx = next(self._it)
        except StopIteration:
            self._it = iter(self.sampler)
            idx = next(self._it)
        return collate(self.view[idx], PAD_ID)


def _peft_steps(baseline, data, settings: Settings) -> Callable[[], tuple[float, list[float]]]:
    """One rep of the baseline: the same batches through transformers + PEFT, its own loss, the same clipping and
    Adafactor; returns (tokens, losses)."""
    from promptability.train.loop import build_optimizer

    size = settings.size
    params = [p for p in baseline.parameters() if p.requires_grad]
    opt = build_optimizer(params, LR)
    batches = _Batches(data, size.batch_size, settings.seed)

    def hf_peft() -> tuple[float, list[float]]:
        batches.restart()
        tokens, losses = 0.0, []
        for _ in range(size.steps_per_rep):
            batch = {k: v.to(settings.device) for k, v in batches.next().items()}
            labels = batch["labels"].masked_fill(batch["decoder_attention_mask"] == 0, -100)
            with settings.autocast():
                out = baseline(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                               decoder_attention_mask=batch["decoder_attention_mask"])  # fmt: skip
            out.loss.backward()
            float(torch.nn.utils.clip_grad_norm_(params, CLIP))
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += float(batch["attention_mask"].sum() + batch["decoder_attention_mask"].sum())
            losses.append(float(out.loss.detach()))
        return tokens, losses

    return hf_peft


def run(settings: Settings, context: dict[str, Any]) -> list[Row]:
    from promptability.train.loop import build_optimizer
    from promptability.train.steps.mtl import MTLStep

    size = settings.size
    try:
        import peft  # noqa: F401
    except ImportError:
        return [Row("mtl_tokens_per_s", "2 MTL step", "MTL-TP step: tokens/s", "", "",
                    check="skipped: peft is not installed (pip install peft)")]  # fmt: skip
    data = synthetic_dataset(size.train_examples, size.source_len, size.target_len, size.vocab_size, seed=settings.seed)
    model = build_model(settings)
    baseline = peft_baseline(model, settings)  # before any step: same weights, same prompt
    accelerator = make_accelerator(settings)
    model.freeze("mtl-tp")
    step = MTLStep(
        data, pad_id=PAD_ID, batch_size=size.batch_size, micro_batch_size=size.batch_size, seed=settings.seed
    )
    wrapped = step.prepare(model, accelerator)
    wrapped.train()
    ours_params = [p for p in model.parameters() if p.requires_grad]
    ours_opt = build_optimizer(ours_params, LR)
    hf_peft = _peft_steps(baseline, data, settings)

    targets: list[float] = []

    # Every rep (both sides) takes the same first batches of the epoch, so reps are the same work.
    restart = {"sampler": {"epoch": 0, "batch_index": 0, "seed": settings.seed}}

    def ours() -> tuple[float, list[float]]:
        step.load_state_dict(restart)
        tokens, losses = 0.0, []
        for _ in range(size.steps_per_rep):
            metrics = step(wrapped, accelerator)
            float(torch.nn.utils.clip_grad_norm_(ours_params, CLIP))  # the loop reads the norm (a sync)
            ours_opt.step()
            ours_opt.zero_grad(set_to_none=True)
            tokens += metrics["tokens"]
            targets.append(metrics["target_tokens"])
            losses.append(metrics["loss"])
        return tokens, losses

    timing = time_pair(ours, hf_peft, settings, "MTL-TP step")
    (ours_tokens, ours_losses), (base_tokens, base_losses) = timing.first
    same_tokens = ours_tokens == base_tokens
    rel = abs(ours_losses[0] - base_losses[0]) / max(abs(base_losses[0]), 1e-12)
    tolerance = 2e-2 if settings.bf16 else 1e-4
    ok = same_tokens and rel <= tolerance
    ratio = Stat.of(timing.ratios())
    per_step = Stat.of([t / size.steps_per_rep for t in timing.ours])
    context["mtl_step_s"] = per_step
    context["mtl_tokens_per_step"] = ours_tokens / size.steps_per_rep
    context["mtl_target_tokens_per_step"] = sum(targets[: size.steps_per_rep]) / size.steps_per_rep
    context["mtl_model"] = model_counts(model)
    tok_ours = Stat.of([ours_tokens / t for t in timing.ours])
    tok_base = Stat.of([base_tokens / t for t in timing.baseline])
    return [Row(
        key="mtl_tokens_per_s",
        pair="2 MTL step",
        name=f"MTL-TP step, shallow prompt {size.prompt_length} (batch {size.batch_size}, source ~{size.source_len} / "
             f"target ~{size.target_len} tokens, {size.steps_per_rep} steps per rep) vs HF + PEFT PromptTuning: tokens/s",
        ours=fmt_stat(tok_ours, "tok/s"),
        baseline=fmt_stat(tok_base, "tok/s"),
        ratio=ratio,
        ratio_note="speed-up",
        target=">= 1.0x",
        met=round(ratio.median, 2) >= 1.0,
        check=f"same batches: {'yes' if same_tokens else 'NO'}; first-step loss {ours_losses[0]:.5f} vs "
              f"{base_losses[0]:.5f} (rel. diff {rel:.1e})",
        check_ok=ok,
    )]  # fmt: skip


if __name__ == "__main__":  # python -m benchmarks.mtl
    from benchmarks.runner import pair_main

    raise SystemExit(pair_main(["mtl", "padding"]))
