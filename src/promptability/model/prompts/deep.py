"""The deep prompt (prefix tuning, Li & Liang 2021) and the one seam where it enters attention.

``DeepPrompt`` holds, for every attention *site* (each encoder self-attention,
decoder self-attention and decoder cross-attention layer of a T5; each
self-attention layer of a decoder-only LM), ``length`` key and value vectors
that are prepended to that layer's keys and values. The relative position bias
toward prefix positions is zero and prefix positions are never masked. In a
decoder-only LM the prefix is added after rotary embeddings: real tokens keep
their positions, prefix keys carry no position.

The seam: transformers (>= 5) routes every attention call through its public
``AttentionInterface`` registry, passing the calling module. We register one
function, ``PREFIX_ATTENTION``, that looks up the module's prefix, extends
keys, values, mask and bias, and hands over to the model's original attention
implementation (eager, sdpa, ...). No Hugging Face attention code is copied; a
model without a prefix attached runs exactly as before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from promptability.model.prompts.base import Prompt, init_token_ids

if TYPE_CHECKING:
    from promptability.model.prompted import PromptedModel

PREFIX_ATTENTION = "promptability_prefix"
_SLOT = "_promptability_prefix"  # attribute on an attention module: a _PrefixSlot (not an nn.Module)

SITES = ("encoder", "decoder_self", "decoder_cross")
# How a fresh deep prompt starts (PromptedModel's ``deep_init``, TrainConfig/FewShotConfig ``deep_init``):
# "normal": N(0, 1) tables, as the reference's nn.Embedding prefix tables start (T5's own init leaves them alone);
# "tokens": each site's keys and values of random tokens (ours before issue 12).
DEEP_INITS = ("normal", "tokens")
DEFAULT_DEEP_INIT = "normal"


@dataclass(frozen=True)
class Site:
    """One attention module that receives a prefix: which stack role and which layer."""

    kind: str  # one of SITES
    layer: int


@dataclass(frozen=True)
class AttentionLayout:
    """What a model tells a deep prompt: its attention modules (one site each) and their key/value shape."""

    sites: list[Site]
    modules: list[nn.Module]
    kv_heads: int
    head_dim: int


class DeepPrompt(Prompt):
    """Per-site key/value prefixes, stored flat: ``keys[i]``/``values[i]`` is (heads, length, d_kv) for site i."""

    takes_deep_init = True

    def __init__(self, sites: list[Site], length: int, num_heads: int, d_kv: int) -> None:
        super().__init__()
        self.sites = list(sites)
        self.length = length
        self.keys = nn.ParameterList(nn.Parameter(torch.zeros(num_heads, length, d_kv)) for _ in self.sites)
        self.values = nn.ParameterList(nn.Parameter(torch.zeros(num_heads, length, d_kv)) for _ in self.sites)
        self.base_attention: str | None = None  # the implementation the seam hands over to, once attached

    @classmethod
    def build(cls, model: PromptedModel, length: int) -> DeepPrompt:
        layout = model.attention_layout()
        return cls(layout.sites, length, layout.kv_heads, layout.head_dim)

    def initialize(self, model: PromptedModel, generator: torch.Generator) -> None:
        """Starts the prefixes as ``model.deep_init`` says (``DEEP_INITS``).

        "tokens" keeps every prefix at the scale that site's keys and values
        naturally have, which a fixed-variance random init does not: a T5 site
        projects the tokens' embeddings; a decoder-only layer gets its key/value
        cache of a forward pass over the tokens.
        """
        init = model.deep_init
        if init not in DEEP_INITS:
            raise ValueError(f"deep_init must be one of {DEEP_INITS}, got {init!r}")
        if init == "normal":
            self.init_normal(generator)
        elif model.is_causal:
            keys, values = _layer_kv_of_random_tokens(model.transformer, self.length, generator, self.base_attention)
            with torch.no_grad():
                for i in range(len(self.sites)):
                    self.keys[i].copy_(keys[i])
                    self.values[i].copy_(values[i])
        else:
            modules = model.attention_layout().modules
            embeddings = cast(nn.Embedding, model.transformer.get_input_embeddings())  # typed nn.Module upstream
            self.init_from_projections(modules, embeddings, generator)

    def init_normal(self, generator: torch.Generator) -> None:
        """N(0, 1) draws laid out as the reference's tables (``copy_tables``), one per site kind in ``SITES`` order.

        So a reference-shaped table drawn from the same generator state holds exactly these numbers.
        """
        heads, _, d_kv = self.keys[0].shape if self.sites else (0, 0, 0)
        tables = {}
        for kind in SITES:
            layers = sum(site.kind == kind for site in self.sites)
            if layers:
                tables[kind] = torch.randn(self.length, layers * 2 * heads * d_kv, generator=generator)
        self.copy_tables(tables)

    @torch.no_grad()
    def copy_tables(self, tables: Mapping[str, torch.Tensor]) -> None:
        """Sets every prefix from the reference's tables: one (length, layers * 2 * heads * d_kv) table per site
        kind, row p viewed as (layers, 2, heads, d_kv) with [l, 0] layer l's key and [l, 1] its value."""
        for i, site in enumerate(self.sites):
            heads, _, d_kv = self.keys[i].shape
            view = tables[site.kind].reshape(self.length, -1, 2, heads, d_kv)
            self.keys[i].copy_(view[:, site.layer, 0].transpose(0, 1))
            self.values[i].copy_(view[:, site.layer, 1].transpose(0, 1))

    @torch.no_grad()
    def init_from_projections(
        self, modules: list[nn.Module], embeddings: nn.Embedding, generator: torch.Generator
    ) -> None:
        """Each site's prefix starts as its own k/v projection of randomly chosen token embeddings."""
        for i, module in enumerate(modules):
            ids = init_token_ids(embeddings.num_embeddings, self.length, generator)
            hidden = embeddings.weight[ids.to(embeddings.weight.device)]
            heads, _, d_kv = self.keys[i].shape
            # T5Attention.k/.v are nn.Linear; nn.Module.__getattr__ types them as Tensor | Module
            self.keys[i].copy_(module.k(hidden).view(self.length, heads, d_kv).transpose(0, 1))  # type: ignore[operator]
            self.values[i].copy_(module.v(hidden).view(self.length, heads, d_kv).transpose(0, 1))  # type: ignore[operator]

    def attach(self, model: PromptedModel) -> None:
        """Points every attention module at its prefix, then routes the model's attention through the seam."""
        base = model.transformer.config._attn_implementation or "eager"
        if base == PREFIX_ATTENTION:
            base = "eager"
        self.base_attention = base
        modules = model.attention_layout().modules
        for index, (module, site) in enumerate(zip(modules, self.sites, strict=True)):
            setattr(module, _SLOT, _PrefixSlot(self, index, causal=site.kind == "decoder_self", base=base))
        model.transformer.set_attn_implementation(PREFIX_ATTENTION)

    def kv(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[index], self.values[index]


@dataclass(eq=False)  # compared and hashed by identity, as a plain object
class _PrefixSlot:
    """What an attention module carries: where to read its prefix and which attention to hand over to.

    A plain object, not an nn.Module, so the prompt's parameters are not
    registered a second time under the transformer and stay in their own group.
    """

    prompt: DeepPrompt
    index: int
    causal: bool
    base: str


def _base_attention(module: nn.Module, name: str) -> Callable:
    if name in ALL_ATTENTION_FUNCTIONS.valid_keys() and name != PREFIX_ATTENTION:
        return ALL_ATTENTION_FUNCTIONS[name]
    # "eager" is not in the registry: each modeling file defines its own eager_attention_forward.
    return sys.modules[type(module).__module__].eager_attention_forward


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None or mask.dtype != torch.bool:
        return mask if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def prefix_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_bias: torch.Tensor | None = None,
    **kwargs,
):
    """The registered attention function: prepend the module's prefix, then call the original attention."""
    slot: _PrefixSlot | None = getattr(module, _SLOT, None)
    if slot is None:
        raise RuntimeError(
            f"{type(module).__name__} runs with attention '{PREFIX_ATTENTION}' but has no prefix attached; "
            "load the model through promptability.load_model"
        )
    base = _base_attention(module, slot.base)
    key_prefix, value_prefix = slot.prompt.kv(slot.index)
    batch, _, q_len, _ = query.shape
    k_len = key.shape[2]
    dtype = query.dtype

    # One additive bias over the real keys: relative position bias + padding mask + causality.
    bias = torch.zeros(1, 1, q_len, k_len, dtype=dtype, device=query.device)
    if position_bias is not None:
        bias = bias + position_bias.to(dtype)
    mask = _additive(attention_mask, dtype)
    if mask is not None:
        bias = bias + mask[..., -k_len:]
    elif slot.causal and q_len > 1:
        # The base would have used is_causal=True; with a prefix we must spell causality out
        # (bottom-right aligned, which is also right when a cache holds earlier keys).
        future = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).triu(k_len - q_len + 1)
        bias = bias.masked_fill(future, torch.finfo(dtype).min)
    # Prefix positions: always visible, zero position bias.
    bias = nn.functional.pad(bias, (key_prefix.shape[-2], 0), value=0.0)

    # A (heads, length, d_kv) prefix is shared by the batch; a (batch, heads, length, d_kv) one (swapped in
    # with functional_call) gives each example its own, which lets several prompts be tuned in one batch.
    if key_prefix.dim() == 3:
        key_prefix = key_prefix.unsqueeze(0).expand(batch, -1, -1, -1)
        value_prefix = value_prefix.unsqueeze(0).expand(batch, -1, -1, -1)
    key = torch.cat([key_prefix.to(key.dtype), key], dim=2)
    value = torch.cat([value_prefix.to(value.dtype), value], dim=2)
    kwargs["is_causal"] = False
    return base(module, query, key, value, bias, position_bias=None, **kwargs)


AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
# Masks are built per attention implementation; without an entry transformers builds none at all
# (padding would silently be attended). SDPA's masks (boolean, or None when nothing is masked) suit us.
AttentionMaskInterface.register(PREFIX_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@torch.no_grad()
def _layer_kv_of_random_tokens(
    transformer: PreTrainedModel, length: int, generator: torch.Generator, base: str | None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each layer's (kv_heads, length, head_dim) keys and values for ``length`` random tokens, without any prefix.

    ``base``: the attention implementation the model ran before its prefixes were attached (None: not attached).
    """
    embeddings = cast(nn.Embedding, transformer.get_input_embeddings())  # typed nn.Module upstream
    ids = init_token_ids(embeddings.num_embeddings, length, generator).to(embeddings.weight.device)
    was_training = transformer.training
    attached = transformer.config._attn_implementation == PREFIX_ATTENTION
    transformer.eval()
    try:
        if attached:  # the model's own keys and values: run it as it was before the prefixes were attached
            transformer.set_attn_implementation(base or "eager")
        cache = transformer(input_ids=ids[None], use_cache=True).cache
    finally:
        transformer.train(was_training)
        if attached:
            transformer.set_attn_implementation(PREFIX_ATTENTION)
    keys = [layer.keys[0].detach().clone() for layer in cache.layers]
    values = [layer.values[0].detach().clone() for layer in cache.layers]
    return keys, values
