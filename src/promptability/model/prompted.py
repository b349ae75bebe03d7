"""PromptedSeq2SeqLM: a Hugging Face T5 plus an optional soft prompt.

Parameter groups are ``transformer`` and ``prompt``; freeze presets are named
after the paper's configurations. A saved model is a directory:

    config.json, model.safetensors, tokenizer files   the Hugging Face model (save_pretrained)
    prompt.safetensors                                 the prompt tensors (absent for "none")
    promptability.json                                 {"prompt", "prompt_length", "base_model", "deep_init"...}

A prompt-only save (few-shot results) holds just the last two files, with
``base_model`` naming the directory or Hub id of the model it tunes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from promptability.io import atomic_dir
from promptability.model.prompts import NO_PROMPT, PROMPT_KINDS, Prompt, prompt_names
from promptability.model.prompts.deep import DEEP_INITS, DEFAULT_DEEP_INIT, AttentionLayout, Site

CONFIG_FILE = "promptability.json"
PROMPT_FILE = "prompt.safetensors"
# A model folder that also holds a run (pretrain's --out) is replaced file by file from STAGING; while
# STAGING holds STAGING_COMPLETE the move is unfinished and the folder is not loadable.
STAGING = ".final-model"
STAGING_COMPLETE = "complete.json"
# How many tokens ``generate`` (and ``promptability generate``) adds when not told.
DEFAULT_MAX_NEW_TOKENS = 32

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
    """What every prompted model shares: its settings, prompt, parameter groups, freeze presets and save format.

    Subclasses say where their attention modules are (``attention_layout``, for deep prompts) and define
    ``forward``; the prompt itself is built, initialised and attached by its kind (``model.prompts``).
    """

    is_causal: bool = False  # decoder-only: the token layout and scoring of promptability.data.tokenize / eval.rank
    # forward(..., row_nll=True) gives each row's summed target NLL without full logits (train.losses.row_nll)
    computes_row_nll: bool = False

    transformer: PreTrainedModel

    def __init__(
        self,
        transformer: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        prompt: str = NO_PROMPT,
        prompt_length: int = 20,
        seed: int = 0,
        base_model: str | None = None,
        deep_init: str = DEFAULT_DEEP_INIT,
    ) -> None:
        super().__init__()
        self.adapt(transformer, tokenizer)
        if prompt not in prompt_names():
            raise ValueError(f"prompt must be one of {prompt_names()}, got {prompt!r}")
        if deep_init not in DEEP_INITS:
            raise ValueError(f"deep_init must be one of {DEEP_INITS}, got {deep_init!r}")
        if prompt != NO_PROMPT and prompt_length < 1:
            raise ValueError(f"prompt_length must be at least 1, got {prompt_length}")
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.prompt_kind = prompt
        self.prompt_length = prompt_length if prompt != NO_PROMPT else 0
        self.base_model = base_model
        self.deep_init = deep_init  # how a fresh deep prompt starts (here and in init_prompt)
        self.prompt: Prompt | None = None
        if prompt != NO_PROMPT:
            self.prompt = PROMPT_KINDS[prompt].build(self, prompt_length)
            self.init_prompt(seed)
            self.prompt.attach(self)

    def adapt(self, transformer: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> None:
        """Checks or adjusts ``transformer`` for this kind of model, before anything is built on it."""

    @torch.no_grad()
    def init_prompt(self, seed: int) -> None:
        """(Re)initialises the prompt exactly as the constructor does with ``seed`` (few-shot tuning's fresh prompt)."""
        if self.prompt is not None:
            self.prompt.initialize(self, torch.Generator().manual_seed(seed))

    def attention_layout(self) -> AttentionLayout:
        """The attention modules a deep prompt extends, one site each, and their key/value shape."""
        raise NotImplementedError(f"{type(self).__name__} does not support deep prompts")

    @property
    def prepended(self) -> int:
        """Positions the prompt adds in front of the input (a deep prompt adds none)."""
        return 0 if self.prompt is None else self.prompt.prepended

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings and mask, with the prompt's input positions prepended."""
        embeds = self.transformer.get_input_embeddings()(input_ids)
        if self.prompt is not None:
            embeds, attention_mask = self.prompt.prepend(embeds, attention_mask)
        return embeds, attention_mask

    # ----- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        **kwargs: Any,
    ) -> Any:
        """Continues each source through Transformers' own ``generate`` (KV cache on), greedy unless ``kwargs`` say
        otherwise (they reach ``generate`` unchanged: ``num_beams``, ``eos_token_id``, ``return_dict_in_generate``...).

        Returns the new tokens only, (batch, at most ``max_new_tokens``), rows that ended early padded with
        ``pad_token_id``; with ``return_dict_in_generate=True`` the output object, its ``sequences`` trimmed so.
        Sources may be padded on either side. The prompt enters as in ``forward``: a shallow one in the input
        embeddings, a deep one inside attention, so each cached step equals a full prompted forward.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        options = {"do_sample": False, "use_cache": True, "pad_token_id": self.pad_token_id, **kwargs}
        out = self.transformer.generate(  # type: ignore[operator]  # PreTrainedModel types generate loosely
            **self.generation_inputs(input_ids, attention_mask.long()), max_new_tokens=max_new_tokens, **options
        )
        # An encoder-decoder's sequences start with the decoder start token; a decoder-only LM given
        # inputs_embeds returns only what it generated.
        skip = 1 if self.transformer.config.is_encoder_decoder else 0
        if isinstance(out, torch.Tensor):
            return out[:, skip:]
        out.sequences = out.sequences[:, skip:]
        return out

    def generation_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        """The prompted inputs ``transformer.generate`` starts from (its keyword arguments)."""
        raise NotImplementedError(f"{type(self).__name__} does not support generation")

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
        out = {"prompt": self.prompt_kind, "prompt_length": self.prompt_length, "base_model": self.base_model}
        if self.prompt is not None and self.prompt.takes_deep_init:
            out["deep_init"] = self.deep_init
        return out

    def prompt_state(self) -> dict[str, torch.Tensor]:
        if self.prompt is None:
            return {}
        return {k: v.detach().cpu().contiguous() for k, v in self.prompt.state_dict().items()}

    @property
    def pad_token_id(self) -> int:
        """The id batches are padded with (the one place that decides): the tokenizer's, else the config's, else 0.

        Padded positions are masked everywhere, so the choice never changes a number.
        """
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None else None
        if pad is None:
            pad = self.transformer.config.pad_token_id
        return 0 if pad is None else int(pad)

    def save_transformer(self, folder: Path) -> None:
        """Writes the Hugging Face model and its tokenizer to ``folder``, a plain Transformers folder."""
        # Transformers does not write the attention implementation into config.json, so our prefix seam does not travel.
        self.transformer.save_pretrained(folder, safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)

    def save(
        self, directory: str | os.PathLike, prompt_only: bool = False, extra: dict[str, Any] | None = None
    ) -> Path:
        """Writes the model (or just its prompt) to ``directory`` atomically: a temp dir renamed into place."""
        directory = Path(directory)
        if prompt_only and self.prompt is None:
            raise ValueError("prompt_only save of a model without a prompt has nothing to save")
        if prompt_only and self.base_model is None:
            raise ValueError("prompt_only save needs base_model (the directory or Hub id the prompt belongs to)")
        with atomic_dir(directory) as tmp:
            if not prompt_only:
                self.save_transformer(tmp)
            if self.prompt is not None:
                save_file(self.prompt_state(), str(tmp / PROMPT_FILE))
            settings = {**self.settings(), "prompt_only": prompt_only, **(extra or {})}
            (tmp / CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        return directory


class PromptedSeq2SeqLM(PromptedModel):
    transformer: T5ForConditionalGeneration
    computes_row_nll = True

    def adapt(self, transformer: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> None:
        fuse_gelu(transformer)

    def attention_layout(self) -> AttentionLayout:
        sites, modules = attention_sites(self.transformer)
        config = self.transformer.config
        return AttentionLayout(sites, modules, config.num_heads, config.d_kv)

    def generation_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        """The prompted encoder's states: every decoding step cross-attends to them (and, with a deep prompt,
        to its cross-attention prefixes; the decoder's self-attention prefixes join the cached keys at each step)."""
        # Left padding would sit between a shallow prompt and the source and shift their relative positions.
        input_ids, attention_mask = move_padding(attention_mask, input_ids, side="right")
        hidden, mask = self.encode(input_ids, attention_mask)
        return {"encoder_outputs": BaseModelOutput(last_hidden_state=hidden), "attention_mask": mask}

    # ----- forward ----------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states and the mask the decoder must use (extended by a shallow prompt)."""
        embeds, attention_mask = self.embed(input_ids, attention_mask)
        encoder = self.transformer.get_encoder()
        hidden = encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        return hidden, attention_mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
        row_nll: bool = False,
    ) -> Seq2SeqLMOutput:
        """Teacher-forced decoder pass over ``labels`` (padded positions ignored by the loss).

        ``return_loss=False`` skips Hugging Face's mean loss, for callers that reduce the logits themselves.
        ``row_nll=True`` makes no logits: ``loss`` is each row's summed target-token NLL, fp32, shape (batch,)
        (what ``train.losses.token_nll_per_row`` computes from the logits), the training steps' fast path.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if labels is None:
            raise ValueError("labels are required: PromptedSeq2SeqLM is scored and trained teacher-forced")
        hidden, mask = self.encode(input_ids, attention_mask)
        loss_labels = (
            labels if decoder_attention_mask is None else labels.masked_fill(decoder_attention_mask == 0, -100)
        )
        decoder_input_ids = self.transformer.prepare_decoder_input_ids_from_labels(labels=loss_labels)
        if row_nll:
            return Seq2SeqLMOutput(
                loss=self._row_nll(hidden, mask, decoder_input_ids, decoder_attention_mask, loss_labels)
            )
        return self.transformer(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            labels=loss_labels if return_loss else None,
        )

    def _row_nll(
        self, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor, decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor | None, loss_labels: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """Each row's summed target-token NLL (fp32), with the LM head and softmax run on the real target tokens only.

        The full forward's logits cover every padded position and the whole vocabulary, and Hugging Face's T5
        builds a decoding cache even in training; per token the numbers are those of ``logits`` (the head's
        output scale included), and the rows are summed over the same (row, position) layout as
        ``token_nll_per_row`` sums, so only the matmul's blocking can differ in the last bits.
        """
        t5 = self.transformer
        keep = loss_labels != -100
        states = t5.get_decoder()(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask, encoder_hidden_states=encoder_hidden,
            encoder_attention_mask=encoder_mask, use_cache=False,
        ).last_hidden_state  # fmt: skip
        picked = states[keep]
        # transformers 5 names it scale_decoder_outputs; earlier versions scale when the head is tied
        if getattr(t5.config, "scale_decoder_outputs", getattr(t5.config, "tie_word_embeddings", True)):
            picked = picked * (t5.model_dim**-0.5)
        nll = F.cross_entropy(t5.lm_head(picked).float(), loss_labels[keep], reduction="none")
        return nll.new_zeros(keep.shape).masked_scatter(keep, nll).sum(1)


def fuse_gelu(transformer: nn.Module) -> None:
    """Runs T5 1.1's gated GELU ("gelu_new") as PyTorch's one-kernel tanh GELU, the same formula.

    transformers' ``NewGELUActivation`` spells 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in eight
    elementwise tensors, and autograd keeps them for backward: a fifth of the tiny model's training step on CPU
    (benchmarks/mtl.py). ``nn.GELU(approximate="tanh")`` computes it in one pass each way; the module has no
    parameters, so saved models and the config are unchanged (tests/train/test_row_nll.py checks the numbers).
    """
    from transformers.activations import NewGELUActivation

    for module in transformer.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = nn.GELU(approximate="tanh")


def move_padding(mask: torch.Tensor, values: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` (batch, length, ...) and ``mask`` with each row's padded columns moved to ``side``, the rest in order."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    order = torch.argsort(mask if side == "left" else 1 - mask, dim=1, stable=True)
    index = order.view(*order.shape, *[1] * (values.dim() - 2)).expand_as(values)
    return values.gather(1, index), mask.gather(1, order)


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
    return sites, modules
