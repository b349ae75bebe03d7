"""What every prompt kind provides, and the token sampling their initialisations share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from promptability.model.prompted import PromptedModel


def init_token_ids(vocab_size: int, length: int, generator: torch.Generator, top: int = 5000) -> torch.Tensor:
    """``length`` distinct random token ids among the ``top`` first vocabulary entries (Lester et al.'s
    sampled-vocab init, drawn without replacement as the reference does).

    A prompt longer than the pool (only with a tiny vocabulary) repeats ids only after using every one.
    """
    pool = min(top, vocab_size)
    rounds = -(-length // pool)
    return torch.cat([torch.randperm(pool, generator=generator) for _ in range(rounds)])[:length]


class Prompt(nn.Module, ABC):
    """A soft prompt kind: its tensors, how they start, and how the model reads them.

    The model calls ``build`` (shapes from the model's architecture), then ``initialize``
    with a generator seeded by the model's seed, then ``attach``. Few-shot tuning calls
    ``initialize`` again on an attached prompt (``PromptedModel.init_prompt``), so it must
    give the same tensors whether or not ``attach`` already ran. Its parameters are the
    model's ``prompt`` group and are saved as ``prompt.safetensors`` (their state dict).
    """

    # What code that has only a kind's name (plans, run settings) needs to know of it.
    prepends: ClassVar[bool] = False  # puts ``length`` positions in front of the input (``prepended``)
    takes_deep_init: ClassVar[bool] = False  # starts as the ``deep_init`` setting says (recorded with runs)

    @classmethod
    @abstractmethod
    def build(cls, model: PromptedModel, length: int) -> Prompt:
        """A prompt of ``length`` positions shaped for ``model`` (its tensors not yet initialised)."""

    @abstractmethod
    def initialize(self, model: PromptedModel, generator: torch.Generator) -> None:
        """Sets the tensors' starting values, drawing random numbers from ``generator`` only."""

    def attach(self, model: PromptedModel) -> None:
        """Hooks the prompt into ``model.transformer``; a prompt that only changes the input needs none."""

    def prepend(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input embeddings and mask the transformer receives; a prompt that is not in the input keeps them."""
        return inputs_embeds, attention_mask

    @property
    def prepended(self) -> int:
        """Positions ``prepend`` puts in front of the input."""
        return 0
