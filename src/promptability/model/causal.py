"""PromptedCausalLM: a Hugging Face decoder-only LM (Llama-, GPT-2-style) plus an optional soft prompt.

Same public surface as :class:`~promptability.model.prompted.PromptedSeq2SeqLM`: parameter groups
``transformer`` and ``prompt``, the same freeze presets, the same save format (``promptability.json``
records ``"architecture": "causal"``), and a ``forward`` with the seq2seq meaning: ``input_ids`` is the
source, ``labels`` the target. Internally each row becomes ``source tokens + target tokens`` (padding
moved to the end), the loss covers target tokens only, and ``.logits`` is (batch, target length, vocab):
the logits that predict each target token.

- ``shallow``: ``prompt_length`` vectors prepended to the input embeddings (positions 0..L-1 of the
  sequence, as PEFT's prompt tuning does), initialised from random token embeddings among the first 5,000.
- ``deep``: per-layer key/value prefixes (with the model's number of key/value heads, so GQA works)
  in every self-attention layer, entering through the seam in :mod:`promptability.model.prompts.deep`. The
  prefix is added inside the attention function, after rotary embeddings: real tokens keep their
  positions, prefix keys carry no position. A fresh prefix starts N(0, 1) (``deep_init="normal"``) or, with
  ``deep_init="tokens"``, as each layer's own keys and values of random tokens (the key/value cache of a
  forward pass over them).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from promptability.model.prompted import PRESETS, PromptedModel, move_padding
from promptability.model.prompts.deep import AttentionLayout, Site

__all__ = ["PRESETS", "PromptedCausalLM", "at_targets", "lm_head", "pack_rows", "self_attention_modules"]


class PromptedCausalLM(PromptedModel):
    is_causal = True
    architecture = "causal"

    def adapt(self, transformer: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> None:
        if transformer.config.is_encoder_decoder:
            raise ValueError("PromptedCausalLM wraps decoder-only models; use PromptedSeq2SeqLM for encoder-decoders")
        if transformer.config.pad_token_id is None and tokenizer is not None and tokenizer.pad_token_id is not None:
            transformer.config.pad_token_id = tokenizer.pad_token_id

    def attention_layout(self) -> AttentionLayout:
        modules = self_attention_modules(self.transformer)
        sites = [Site("decoder_self", i) for i in range(len(modules))]
        first = modules[0]
        kv_heads = self.transformer.config.num_attention_heads // getattr(first, "num_key_value_groups", 1)
        return AttentionLayout(sites, modules, kv_heads, first.head_dim)  # type: ignore[arg-type]  # nn.Module.__getattr__ types dynamic attributes as Tensor | Module

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "architecture": self.architecture}

    def _check_sources(self, src_len: torch.Tensor) -> None:
        if self.prepended == 0 and bool((src_len == 0).any()):
            raise ValueError(
                "every source needs at least one token: a causal LM cannot predict the first target token from nothing"
            )

    def generation_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        """The prompted input embeddings, left-padded: generation continues every row from its last column.

        Padding goes left of the shallow prompt too, so a row's positions (counted from its mask, as ``generate``
        does) are those of ``forward``: prompt 0..L-1, then the source.
        """
        self._check_sources(attention_mask.sum(-1))
        embeds, mask = self.embed(input_ids, attention_mask)
        embeds, mask = move_padding(mask, embeds, side="left")
        return {"inputs_embeds": embeds, "attention_mask": mask}

    # ----- forward ----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> CausalLMOutputWithPast:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if labels is None:
            raise ValueError("labels are required: PromptedCausalLM is scored and trained teacher-forced")
        target_mask = (labels != -100).long() if decoder_attention_mask is None else decoder_attention_mask.long()
        target_ids = labels.masked_fill(labels == -100, self.pad_token_id)
        target_mask = target_mask * (labels != -100)
        src_len = attention_mask.long().sum(-1)
        self._check_sources(src_len)
        ids, mask = pack_rows(input_ids, attention_mask.long(), target_ids, target_mask, self.pad_token_id)
        embeds, mask = self.embed(ids, mask)
        # The LM head runs only where a target token is predicted: over every position it would cost about a
        # fifth of a 135M model's forward and backward (vocabulary 49152) and hold (batch, length, vocab) logits.
        states = self.transformer.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        target_logits = lm_head(self.transformer, at_targets(states.last_hidden_state, self.prepended, src_len,
                                                            labels.shape[1]))  # fmt: skip
        loss = None
        if return_loss:
            loss_labels = target_ids.masked_fill(target_mask == 0, -100)
            loss = nn.functional.cross_entropy(
                target_logits.float().reshape(-1, target_logits.shape[-1]), loss_labels.reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=target_logits)


def at_targets(x: torch.Tensor, prepended: int, src_len: torch.Tensor, targets: int) -> torch.Tensor:
    """[B, targets, ...] of ``x`` ([B, length, ...] over ``pack_rows``' rows): the positions predicting each row's
    target tokens, token j of row i at (shallow prompt length ``prepended`` + source length + j - 1)."""
    at = prepended + src_len[:, None] - 1 + torch.arange(targets, device=x.device)[None, :]
    at = at.clamp(max=x.shape[1] - 1)
    return x.gather(1, at.reshape(*at.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def lm_head(lm: PreTrainedModel, states: torch.Tensor) -> torch.Tensor:
    """The model's logits for hidden states ``states``: its output embedding, and a final soft cap where it has one."""
    logits = lm.get_output_embeddings()(states)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    return logits if cap is None else torch.tanh(logits / cap) * cap


def pack_rows(
    source: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's real source tokens then its real target tokens, right-padded (either side may be padded anywhere)."""
    rows = []
    for i in range(source.shape[0]):
        rows.append(torch.cat([source[i][source_mask[i].bool()], target[i][target_mask[i].bool()]]))
    width = max(1, max(len(r) for r in rows))
    ids = source.new_full((len(rows), width), pad_id)
    mask = source.new_zeros((len(rows), width))
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def self_attention_modules(transformer: PreTrainedModel) -> list[nn.Module]:
    """The causal self-attention module of every layer, in layer order (Llama ``self_attn``, GPT-2 ``attn``)."""
    found = [
        m
        for m in transformer.modules()
        if getattr(m, "is_causal", False) is True and isinstance(getattr(m, "layer_idx", None), int)
    ]
    found.sort(key=lambda m: cast(int, m.layer_idx))  # an int: filtered above
    layers = transformer.config.num_hidden_layers
    if len(found) != layers or [m.layer_idx for m in found] != list(range(layers)):
        raise ValueError(
            f"expected one causal self-attention module per layer ({layers}) in {type(transformer).__name__}, "
            f"found {len(found)}; deep prompts do not support this architecture"
        )
    return found
