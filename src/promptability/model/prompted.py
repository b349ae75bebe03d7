"""PromptedSeq2SeqLM: a Hugging Face T5 plus an optional soft prompt.

Parameter groups are ``transformer`` and ``prompt``; freeze presets are named
after the paper's configurations. A saved model is a directory:

    config.json, model.safetensors, tokenizer files   the Hugging Face model (save_pretrained)
    prompt.safetensors                                 the prompt tensors (absent for "none")
    promptability.json                                 {"prompt", "prompt_length", "base_model", ...}

A prompt-only save (few-shot results) holds just the last two files, with
``base_model`` naming the directory or Hub id of the model it tunes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedTokenizerBase, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from promptability.model.prompts import PREFIX_ATTENTION, SITES, DeepPrompt, ShallowPrompt, Site, attach

PROMPT_KINDS = ("none", "shallow", "deep")
CONFIG_FILE = "promptability.json"
PROMPT_FILE = "prompt.safetensors"

# Which groups each preset trains. "prompt-only" is few-shot tuning: same groups as mtl-p, but it names the intent.
PRESETS: dict[str, tuple[str, ...]] = {
    "mtl-t": ("transformer",),
    "mtl-p": ("prompt",),
    "mtl-tp": ("transformer", "prompt"),
    "prompt-only": ("prompt",),
    "all": ("transformer", "prompt"),
}


class PromptSettingsError(ValueError):
    """A checkpoint's prompt kind or length differs from what was asked for."""


class PromptedModel(nn.Module):
    """What every prompted model shares: its settings, parameter groups, freeze presets and save format.

    Subclasses build ``self.prompt`` for their architecture and define ``forward``.
    """

    def __init__(
        self,
        transformer: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None,
        prompt: str,
        prompt_length: int,
        base_model: str | None,
    ) -> None:
        super().__init__()
        if prompt not in PROMPT_KINDS:
            raise ValueError(f"prompt must be one of {PROMPT_KINDS}, got {prompt!r}")
        if prompt != "none" and prompt_length < 1:
            raise ValueError(f"prompt_length must be at least 1, got {prompt_length}")
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.prompt_kind = prompt
        self.prompt_length = prompt_length if prompt != "none" else 0
        self.base_model = base_model
        self.prompt: nn.Module | None = None

    def _attach_deep(self, modules: list[nn.Module], sites: list[Site]) -> str:
        """Points ``modules`` at the deep prompt; returns the attention implementation the seam hands over to."""
        base = self.transformer.config._attn_implementation or "eager"
        if base == PREFIX_ATTENTION:
            base = "eager"
        attach(modules, sites, self.prompt, base)
        return base

    # ----- parameter groups and freezing -------------------------------------------------------
    def prompt_parameters(self) -> list[nn.Parameter]:
        """The prompt tensors: for shallow exactly one (prompt_length, d_model) tensor."""
        return [] if self.prompt is None else list(self.prompt.parameters())

    def transformer_parameters(self) -> list[nn.Parameter]:
        return list(self.transformer.parameters())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"transformer": self.transformer_parameters(), "prompt": self.prompt_parameters()}

    def freeze(self, preset: str) -> list[nn.Parameter]:
        """Sets requires_grad by a preset name and returns the trainable parameters (for the optimizer)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown freeze preset {preset!r}; choose from {sorted(PRESETS)}")
        trained = PRESETS[preset]
        if "prompt" in trained and self.prompt is None and preset != "all":
            raise ValueError(f"preset {preset!r} trains a prompt, but this model has prompt='none'")
        for group, params in self.parameter_groups().items():
            for p in params:
                p.requires_grad_(group in trained)
        return [p for p in self.parameters() if p.requires_grad]

    # ----- save / load ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"prompt": self.prompt_kind, "prompt_length": self.prompt_length, "base_model": self.base_model}

    def prompt_state(self) -> dict[str, torch.Tensor]:
        return {} if self.prompt is None else {k: v.detach().cpu().contiguous() for k, v in self.prompt.state_dict().items()}

    def save(self, directory: str | os.PathLike, prompt_only: bool = False, extra: dict[str, Any] | None = None) -> Path:
        """Writes the model (or just its prompt) to ``directory`` atomically: a temp dir renamed into place."""
        directory = Path(directory)
        if prompt_only and self.prompt is None:
            raise ValueError("prompt_only save of a model without a prompt has nothing to save")
        if prompt_only and self.base_model is None:
            raise ValueError("prompt_only save needs base_model (the directory or Hub id the prompt belongs to)")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            if not prompt_only:
                self.transformer.save_pretrained(tmp, safe_serialization=True)
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(tmp)
            if self.prompt is not None:
                save_file(self.prompt_state(), str(tmp / PROMPT_FILE))
            settings = {**self.settings(), "prompt_only": prompt_only, **(extra or {})}
            (tmp / CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old)
            else:
                os.replace(tmp, directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return directory


class PromptedSeq2SeqLM(PromptedModel):
    def __init__(
        self,
        transformer: T5ForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase | None = None,
        prompt: str = "none",
        prompt_length: int = 20,
        seed: int = 0,
        base_model: str | None = None,
    ) -> None:
        super().__init__(transformer, tokenizer, prompt, prompt_length, base_model)
        generator = torch.Generator().manual_seed(seed)
        config = transformer.config
        if prompt == "shallow":
            self.prompt = ShallowPrompt(prompt_length, config.d_model)
            self.prompt.init_from_embeddings(transformer.get_input_embeddings(), generator)
        elif prompt == "deep":
            sites, modules = attention_sites(transformer)
            self.prompt = DeepPrompt(sites, prompt_length, config.num_heads, config.d_kv)
            self.prompt.init_from_projections(modules, transformer.get_input_embeddings(), generator)
            self._attach_deep(modules, sites)
            transformer.set_attn_implementation(PREFIX_ATTENTION)

    # ----- forward ----------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states and the mask the decoder must use (extended by a shallow prompt)."""
        embeds = self.transformer.get_input_embeddings()(input_ids)
        if isinstance(self.prompt, ShallowPrompt):
            embeds, attention_mask = self.prompt.prepend(embeds, attention_mask)
        encoder = self.transformer.get_encoder()
        hidden = encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        return hidden, attention_mask

    def decode(
        self,
        encoder_hidden: torch.Tensor,
        encoder_mask: torch.Tensor,
        labels: torch.Tensor,
        decoder_attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> Seq2SeqLMOutput:
        """Teacher-forced decoder pass over ``labels`` (padded positions ignored by the loss)."""
        loss_labels = labels if decoder_attention_mask is None else labels.masked_fill(decoder_attention_mask == 0, -100)
        return self.transformer(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
            attention_mask=encoder_mask,
            decoder_input_ids=self.transformer.prepare_decoder_input_ids_from_labels(labels=loss_labels),
            decoder_attention_mask=decoder_attention_mask,
            labels=loss_labels if return_loss else None,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> Seq2SeqLMOutput:
        """``return_loss=False`` skips Hugging Face's mean loss, for callers that reduce the logits themselves."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if labels is None:
            raise ValueError("labels are required: PromptedSeq2SeqLM is scored and trained teacher-forced")
        hidden, mask = self.encode(input_ids, attention_mask)
        return self.decode(hidden, mask, labels, decoder_attention_mask, return_loss=return_loss)


def attention_sites(transformer: T5ForConditionalGeneration) -> tuple[list[Site], list[nn.Module]]:
    """Every attention module of a T5: encoder self, decoder self and decoder cross, layer by layer."""
    sites: list[Site] = []
    modules: list[nn.Module] = []
    for i, block in enumerate(transformer.get_encoder().block):
        sites.append(Site("encoder", i))
        modules.append(block.layer[0].SelfAttention)
    for i, block in enumerate(transformer.get_decoder().block):
        sites.append(Site("decoder_self", i))
        modules.append(block.layer[0].SelfAttention)
        sites.append(Site("decoder_cross", i))
        modules.append(block.layer[1].EncDecAttention)
    assert all(s.kind in SITES for s in sites)
    return sites, modules
