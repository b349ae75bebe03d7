"""Rank classification for decoder-only models (PromptedCausalLM).

A choice's score is the mean (or sum) log-probability of its tokens given the prompted source, in the
decoder-only token layout of ``tokenize_records(continuation=True)``: the choice (with a leading space)
continues the source directly, with no EOS between or after them.

The batch's sources run once, together, left-padded (a shallow prompt goes in front of the padding) with
``use_cache=True`` and explicit position ids, so every real token sits at the position it would have
unpadded. The last position predicts every choice's first token. The key/value cache is then
gathered per real choice (padded choice slots are never run) and all choices of the batch run in one call;
choice tokens 0..T-2 predict tokens 1..T-1. Left-padded keys stay masked out, and deep prefixes enter each
attention call after the cache update, so the cache holds real keys only. The transformer runs without
its LM head; the head is applied only where a choice token is predicted (not over the source, not over padding).
"""

from __future__ import annotations

from typing import Any

import torch

from promptability.model.causal import lm_head


def choice_token_logprobs_causal(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    source_of: torch.Tensor,
    labels: torch.Tensor,
    label_mask: torch.Tensor,
) -> torch.Tensor:
    """[N, T] log-probability of each choice token (0 at padding), choice i continuing source ``source_of[i]``.

    The transformer runs without its LM head (``base_model``); the head is applied to the hidden states that
    predict real choice tokens only: the sources' last positions and the choices' real positions but the last,
    never the source tokens or the padding.
    """
    device = input_ids.device
    ids, mask = _left_padded(input_ids, attention_mask, model.pad_token_id)
    embeds, source_mask = model.embed(ids, mask)
    if bool((source_mask.sum(-1) == 0).any()):
        raise ValueError("an empty source cannot be scored by a causal LM without a shallow prompt")
    base = model.transformer.base_model
    positions = (source_mask.cumsum(-1) - 1).clamp(min=0)
    out = base(inputs_embeds=embeds, attention_mask=source_mask, position_ids=positions, use_cache=True)
    states = out.last_hidden_state[:, -1:][source_of]  # [N, 1, d]: predicts every choice's first token
    width = labels.shape[1]
    if width > 1:
        cache = out.cache
        cache.batch_select_indices(source_of)
        after = source_mask.sum(-1)[source_of][:, None] + torch.arange(width - 1, device=device)[None, :]
        rest_mask = torch.cat([source_mask[source_of], label_mask[:, :-1]], dim=1)
        rest = base(input_ids=labels[:, :-1], attention_mask=rest_mask, position_ids=after, cache=cache, use_cache=True)
        states = torch.cat([states, rest.last_hidden_state], dim=1)
    scored = label_mask.bool()
    logits = lm_head(model.transformer, states[scored]).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels[scored].unsqueeze(-1)).squeeze(-1)
    token_logp = torch.zeros(labels.shape, dtype=logp.dtype, device=device)
    token_logp[scored] = logp
    return token_logp


def _left_padded(ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's real tokens moved to the right end, so the last position is every source's last token."""
    width = max(int(mask.long().sum(-1).max()), 1)
    # A stable sort of the mask puts each row's padding first and keeps its real tokens in their order.
    order = torch.sort(mask.long(), dim=-1, stable=True).indices[:, -width:]
    out_mask = mask.gather(1, order)
    return ids.gather(1, order).masked_fill(out_mask == 0, pad_id), out_mask
