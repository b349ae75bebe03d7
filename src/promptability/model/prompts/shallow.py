"""The shallow prompt (prompt tuning, Lester et al. 2021): a (length, d_model) matrix before the input embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from promptability.model.prompts.base import Prompt, init_token_ids

if TYPE_CHECKING:
    from promptability.model.prompted import PromptedModel


class ShallowPrompt(Prompt):
    prepends = True

    def __init__(self, length: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(length, d_model))

    @classmethod
    def build(cls, model: PromptedModel, length: int) -> ShallowPrompt:
        return cls(length, _input_embeddings(model).embedding_dim)

    @property
    def length(self) -> int:
        return self.weight.shape[0]

    def initialize(self, model: PromptedModel, generator: torch.Generator) -> None:
        self.init_from_embeddings(_input_embeddings(model), generator)

    @torch.no_grad()
    def init_from_embeddings(self, embeddings: nn.Embedding, generator: torch.Generator) -> None:
        """The embeddings of random tokens among the first 5000 of the vocabulary."""
        ids = init_token_ids(embeddings.num_embeddings, self.length, generator)
        self.weight.copy_(embeddings.weight[ids.to(embeddings.weight.device)])

    def prepend(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepends the prompt. A (batch, length, d_model) weight (swapped in with ``functional_call``)
        gives each example its own prompt, which lets several prompts be tuned in one batch."""
        batch = inputs_embeds.shape[0]
        prompt = self.weight.to(inputs_embeds.dtype)
        prompt = prompt.unsqueeze(0).expand(batch, -1, -1) if prompt.dim() == 2 else prompt
        ones = attention_mask.new_ones(batch, prompt.shape[1])
        return torch.cat([prompt, inputs_embeds], dim=1), torch.cat([ones, attention_mask], dim=1)

    @property
    def prepended(self) -> int:
        # The second-to-last dimension: a per-example (batch, length, d_model) weight has the batch in front.
        return self.weight.shape[-2]


def _input_embeddings(model: PromptedModel) -> nn.Embedding:
    # transformers types get_input_embeddings() as nn.Module; T5 and decoder-only LMs return an nn.Embedding
    return cast(nn.Embedding, model.transformer.get_input_embeddings())
