"""Pair 7: causal rank classification, a batch's sources together (left-padded, one cache) vs one source at a time.

The baseline is the first implementation of ``eval/rank_causal.py``: each source runs alone, unpadded, with a
key/value cache that its own choices then share. Ours runs the batch's sources in one call and all their
choices in a second. Same batches (``eval_batches``), same scores (mean token log-probability, EOS included).
The model is a random Llama of SmolLM2-135M's shape at sizes base/large (GQA, 30 layers), a 2-layer one at tiny.
"""

from __future__ import annotations

import torch

from benchmarks.common import PAD_ID, Settings, Stat, synthetic_dataset, time_pair, to_device
from benchmarks.report import Row, fmt_stat

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3)  # fmt: skip
# Llama shapes by benchmark size; small/base/large all use SmolLM2-135M's.
SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "minuscule": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2),
}  # fmt: skip


def build_causal(settings: Settings):
    from transformers import LlamaConfig, LlamaForCausalLM

    from promptability.model.causal import PromptedCausalLM

    shape = SHAPES.get(settings.size.name, SMOLLM2_135M)
    torch.manual_seed(settings.seed)
    config = LlamaConfig(vocab_size=settings.size.vocab_size, pad_token_id=PAD_ID, **shape)
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


def run(settings: Settings) -> list[Row]:
    from promptability.data.batching import eval_batches
    from promptability.eval.rank import score_choices

    size = settings.size
    model, shape = build_causal(settings)
    data = synthetic_dataset(size.eval_examples, size.eval_source_len, size.eval_choice_len, size.vocab_size,
                             num_choices=4, seed=settings.seed + 7)  # fmt: skip
    batches = [to_device(b, settings.device) for b in eval_batches(data, size.eval_batch_size, pad_id=PAD_ID)]

    def batched():
        with torch.inference_mode(), settings.autocast():
            return [score_choices(model, b) for b in batches]

    def one_by_one():
        with torch.inference_mode(), settings.autocast():
            return [score_one_source_at_a_time(model, b) for b in batches]

    timing = time_pair(batched, one_by_one, settings, "causal evaluation, 4 choices")
    ours_scores, base_scores = timing.first
    same = bool(
        torch.equal(torch.cat([s.argmax(-1) for s in ours_scores]), torch.cat([s.argmax(-1) for s in base_scores]))
    )
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(ours_scores, base_scores, strict=True))
    n = size.eval_examples
    layers, hidden = shape["num_hidden_layers"], shape["hidden_size"]
    return [Row(
        key="eval_causal_4choices",
        pair="7 causal evaluation",
        name=f"causal rank classification, 4 choices (Llama {layers}x{hidden}, GQA {shape['num_attention_heads']}/"
             f"{shape['num_key_value_heads']}; {n} examples, batch {size.eval_batch_size}): examples/s",
        ours=fmt_stat(Stat.of([n / t for t in timing.ours]), "ex/s"),
        baseline=fmt_stat(Stat.of([n / t for t in timing.baseline]), "ex/s"),
        ratio=Stat.of(timing.ratios()),
        ratio_note="speed-up",
        check=f"predictions {'identical' if same else 'DIFFER'} (max score difference {diff:.1e})",
        check_ok=same,
    )]  # fmt: skip


if __name__ == "__main__":  # python -m benchmarks.eval_causal
    from benchmarks.runner import pair_main

    raise SystemExit(pair_main(["eval-causal"]))
