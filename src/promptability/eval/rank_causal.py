"""Rank classification for decoder-only models (PromptedCausalLM).

Same scores as :func:`promptability.eval.rank.score_choices` gives a seq2seq model: a choice's score is the
mean (or sum) log-probability of its tokens (the tokenizer's EOS included, as ``tokenize_records`` appends
it) given the prompted source.

Each source runs once (with its shallow prompt, if any) with ``use_cache=True``; its key/value cache is
repeated for its choices, which then run together in one batch. The last source position's logits predict
every choice's first token; choice tokens 0..T-2 predict tokens 1..T-1. Sources are taken one at a time, cut
to their real length, so no padding ever sits inside the cache (choices are right-padded, which only
affects positions after a choice's last real token). Deep prefixes enter each attention call after the cache
update, so the cache holds real keys only and is valid for any number of extra tokens.
"""

from __future__ import annotations

from typing import Any

import torch


def score_choices_causal(model: Any, batch: dict[str, Any], score: str = "mean") -> torch.Tensor:
    """Scores [B, C_max] for a ``collate_eval`` batch; slots past an instance's choices are -inf."""
    device = next(model.parameters()).device
    choice_ids = batch["choice_ids"].to(device)
    choice_mask = batch["choice_mask"].to(device)
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    b, c_max, _ = choice_ids.shape
    scores = torch.full((b, c_max), float("-inf"), device=device)
    for i in range(b):
        c = int(batch["num_choices"][i])
        if c == 0:
            continue
        source = input_ids[i][attention_mask[i].bool()][None]
        scores[i, :c] = _score_one(model, source, choice_ids[i, :c], choice_mask[i, :c], score)
    return scores


def _score_one(model: Any, source: torch.Tensor, choices: torch.Tensor, mask: torch.Tensor, score: str) -> torch.Tensor:
    """Scores [C] of the right-padded ``choices`` [C, T] after one unpadded ``source`` [1, S]."""
    lm = model.transformer
    width = int(mask.sum(-1).max())
    choices, mask = choices[:, :width], mask[:, :width]
    c = choices.shape[0]
    embeds, source_mask = model.embed(source, torch.ones_like(source))
    if embeds.shape[1] == 0:
        raise ValueError("an empty source cannot be scored by a causal LM without a shallow prompt")
    out = lm(inputs_embeds=embeds, attention_mask=source_mask, use_cache=True)
    first = out.logits[:, -1:].expand(c, -1, -1)  # predicts every choice's first token
    if width > 1:
        cache = out.cache
        cache.batch_repeat_interleave(c)
        rest_mask = torch.cat([source_mask.expand(c, -1), mask[:, :-1]], dim=1)
        rest = lm(input_ids=choices[:, :-1], attention_mask=rest_mask, cache=cache, use_cache=True).logits
        logits = torch.cat([first, rest], dim=1)
    else:
        logits = first
    token_logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, choices.unsqueeze(-1)).squeeze(-1) * mask
    totals = token_logp.sum(-1)
    return totals / mask.sum(-1).clamp(min=1) if score == "mean" else totals
