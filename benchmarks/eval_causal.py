"""Pair 7: causal rank classification (``eval/rank_causal.py``) against two baselines, same batches, same scores.

Ours runs a batch's sources in one left-padded call without the LM head, gathers their key/value cache per
choice, runs all choices in a second call, and applies the LM head only where a choice token is predicted.

- vs one full forward per (source, choice): the plain way a user writes it, and the way lm-evaluation-harness
  scores a multiple-choice request: source + choice as one sequence through ``model(...)``, the LM head over
  every position (the project's own ``PromptedCausalLM.forward``, batched like ours). Target: 3x on 4 choices,
  or 90% of the FLOP limit where the target exceeds it.
- vs one source at a time: the first implementation of ``eval/rank_causal.py`` (each source alone, unpadded,
  with a cache its own choices share, the LM head over every position).

The model is a random Llama of SmolLM2-135M's shape (30 layers, d 576, GQA 9/3, vocabulary 49152; no download);
at size ``tiny`` with a short workload (one batch of 16), at ``minuscule`` (tests) a 2-layer one.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from benchmarks.common import PAD_ID, Settings, Stat, score_per_pair, synthetic_dataset, time_pair, to_device
from benchmarks.flops import capped_target, counted_once, flop_limit
from benchmarks.report import Row, fmt_stat

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3)  # fmt: skip
SMOLLM2_VOCAB = 49152
# Llama shapes by benchmark size; every size but minuscule uses SmolLM2-135M's.
SHAPES = {
    "minuscule": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2),
}  # fmt: skip
# At size tiny: about three minutes on two cores (a 135M-parameter model's 64 full forwards are the slow side).
# One batch of 16 (the real study's evaluation batch) with ~100-token sources (P3's held-out sources are mostly
# 50-200 tokens). The first workload, 4 sources of ~40 tokens in a batch of 4, ran matmuls of 80-240 rows that
# two threads share badly: 2.52x at 2 threads but 3.79x at 1 on it (quiet machine), 4.47x at 2 threads on this one.
SHORT = dict(eval_examples=16, eval_batch_size=16, eval_source_len=100, eval_choice_len=6)
MAX_REPS_SHORT = 3
TARGET_FULL = 3.0


def build_causal(settings: Settings):
    from transformers import LlamaConfig, LlamaForCausalLM

    from promptability.model.causal import PromptedCausalLM

    shape = SHAPES.get(settings.size.name, SMOLLM2_135M)
    vocab = settings.size.vocab_size if settings.size.name in SHAPES else SMOLLM2_VOCAB
    torch.manual_seed(settings.seed)
    config = LlamaConfig(vocab_size=vocab, pad_token_id=PAD_ID, **shape)
    lm = LlamaForCausalLM(config).eval()
    model = PromptedCausalLM(lm, None, "shallow", settings.size.prompt_length, seed=settings.seed, base_model="bench")
    return model.to(settings.device), shape


def score_one_source_at_a_time(model, batch: dict) -> torch.Tensor:
    """Scores [B, C_max]: each source alone with ``use_cache``; its choices share its cache."""
    device = next(model.parameters()).device
    choice_ids, choice_mask = batch["choice_ids"].to(device), batch["choice_mask"].to(device)
    ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    b, c_max, _ = choice_ids.shape
    scores = torch.full((b, c_max), float("-inf"), device=device)
    for i in range(b):
        c = int(batch["num_choices"][i])
        source = ids[i][attention[i].bool()][None]
        width = int(choice_mask[i, :c].sum(-1).max())
        choices, mask = choice_ids[i, :c, :width], choice_mask[i, :c, :width]
        embeds, source_mask = model.embed(source, torch.ones_like(source))
        out = model.transformer(inputs_embeds=embeds, attention_mask=source_mask, use_cache=True)
        logits = out.logits[:, -1:].expand(c, -1, -1)
        if width > 1:
            out.cache.batch_repeat_interleave(c)
            rest_mask = torch.cat([source_mask.expand(c, -1), mask[:, :-1]], dim=1)
            rest = model.transformer(
                input_ids=choices[:, :-1], attention_mask=rest_mask, cache=out.cache, use_cache=True
            )
            logits = torch.cat([logits, rest.logits], dim=1)
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, choices.unsqueeze(-1)).squeeze(-1) * mask
        scores[i, :c] = logp.sum(-1) / mask.sum(-1).clamp(min=1)
    return scores


def score_full_forward(model, batch: dict) -> torch.Tensor:
    """Scores [B, C_max]: one full forward over source + choice per (source, choice), the LM head at every position
    (the Hugging Face model's own ``logits``; ``PromptedCausalLM.forward`` applies it to target positions only)."""
    from promptability.model.causal import at_targets, pack_rows

    def logits_of(ids, attention, labels, mask):
        rows, rows_mask = pack_rows(ids, attention.long(), labels, mask.long(), model.pad_token_id)
        embeds, rows_mask = model.embed(rows, rows_mask)
        logits = model.transformer(inputs_embeds=embeds, attention_mask=rows_mask, use_cache=False).logits
        return at_targets(logits, model.prepended, attention.long().sum(-1), labels.shape[1])

    return score_per_pair(batch, next(model.parameters()).device, logits_of)


def run(settings: Settings) -> list[Row]:
    from promptability.data.batching import eval_batches
    from promptability.eval.rank import score_choices

    if settings.size.name == "tiny":
        size = replace(settings.size, **SHORT)
        settings = replace(settings, size=size, reps=min(settings.reps, MAX_REPS_SHORT))
    size = settings.size
    model, shape = build_causal(settings)
    data = synthetic_dataset(size.eval_examples, size.eval_source_len, size.eval_choice_len, size.vocab_size,
                             num_choices=4, seed=settings.seed + 7)  # fmt: skip
    batches = [to_device(b, settings.device) for b in eval_batches(data, size.eval_batch_size, pad_id=PAD_ID)]

    def side(score):
        def scores():
            with torch.inference_mode(), settings.autocast():
                return [score(model, b) for b in batches]

        return counted_once(scores)

    layers, hidden = shape["num_hidden_layers"], shape["hidden_size"]
    what = (f"(Llama {layers}x{hidden}, GQA {shape['num_attention_heads']}/{shape['num_key_value_heads']}, vocabulary "
            f"{model.transformer.config.vocab_size}; {size.eval_examples} examples, batch {size.eval_batch_size}): examples/s")  # fmt: skip
    rows = []
    for key, name, baseline, target in (
        ("eval_causal_full_4choices", "vs a full forward per (source, choice)", score_full_forward, TARGET_FULL),
        ("eval_causal_4choices", "vs one source at a time", score_one_source_at_a_time, None),
    ):
        (ours, ours_flop), (base, base_flop) = side(score_choices), side(baseline)
        timing = time_pair(ours, base, settings, f"causal evaluation, 4 choices, {name}")
        rows.append(_row(key, f"causal rank classification {name}, 4 choices {what}", timing, size.eval_examples,
                         flop_limit(ours_flop, base_flop), target))  # fmt: skip
    return rows


def _row(key: str, name: str, timing, n: int, limit: float, target: float | None) -> Row:
    ours_scores, base_scores = timing.first
    same = bool(
        torch.equal(torch.cat([s.argmax(-1) for s in ours_scores]), torch.cat([s.argmax(-1) for s in base_scores]))
    )
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(ours_scores, base_scores, strict=True))
    ratio = Stat.of(timing.ratios())
    goal = None if target is None else capped_target(target, limit)
    return Row(
        key=key,
        pair="7 causal evaluation",
        name=name,
        ours=fmt_stat(Stat.of([n / t for t in timing.ours]), "ex/s"),
        baseline=fmt_stat(Stat.of([n / t for t in timing.baseline]), "ex/s"),
        ratio=ratio,
        ratio_note="speed-up",
        target=""
        if goal is None
        else f">= {goal:g}x" + (f" (90% of the limit; {target:g}x asked)" if goal < target else ""),
        met=None if goal is None else round(ratio.median, 2) >= goal,
        check=f"predictions {'identical' if same else 'DIFFER'} (max score difference {diff:.1e})",
        check_ok=same,
        limit=limit,
    )


if __name__ == "__main__":  # python -m benchmarks.eval_causal
    from benchmarks.runner import pair_main

    raise SystemExit(pair_main(["eval-causal"]))
