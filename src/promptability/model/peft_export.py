"""Export a model's soft prompt as a PEFT adapter, for PEFT and what is built on it (lm-evaluation-harness, TRL).

- A shallow prompt becomes a prompt-tuning adapter: ``prompt_embeddings`` is the (length, d_model) prompt. For a T5
  the config says ``num_transformer_submodules=1``: PEFT then prepends the prompt to the encoder input only, as ours
  does (its seq2seq default, 2, keeps a second table of ``length`` rows for the decoder that its prompt-tuning
  forward never reads).
- A decoder-only model's deep prompt becomes a prefix-tuning adapter (``prefix_projection=False``): row ``p`` of
  ``prompt_embeddings`` is (layers, 2, kv_heads, head_dim) flattened, ``[l, 0]`` layer l's key, ``[l, 1]`` its value.
  PEFT hands the prefix to the model as a key/value cache, so the real tokens sit at positions ``length``... where
  ours keep 0...; with rotary positions only the difference of query and key positions matters, so each prefix key
  is exported rotated by ``length`` positions and every attention score is the same. Models with absolute position
  embeddings (GPT-2) cannot be expressed and raise ``PeftExportError``.
- A T5 deep prompt cannot be expressed (PEFT's prefix tuning gives T5's decoder self-attention a prefix, but not its
  encoder or its cross-attention) and raises ``PeftExportError``.

A model folder saved in full (continued pretraining trains the transformer: MTL-T, MTL-TP, meta-learning) is exported
as ``DIR/base`` (a plain Transformers folder with its tokenizer) plus the adapter in ``DIR``, whose
``base_model_name_or_path`` names ``DIR/base``; a prompt-only save (few-shot tuning) names its base model.
PEFT is imported here only, so the rest of the package runs without it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import nn

from promptability.io import atomic_dir, read_json_file
from promptability.model.causal import PromptedCausalLM
from promptability.model.loading import base_name, load_model, resolve_named, saved_base
from promptability.model.prompted import CONFIG_FILE, PromptedModel
from promptability.model.prompts import DeepPrompt, ShallowPrompt

if TYPE_CHECKING:
    from peft import PeftConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_FOLDER = "base"  # where a full model's transformer goes, inside the export folder
WEIGHTS_KEY = "prompt_embeddings"  # the one tensor PEFT saves and loads for prompt-learning adapters
# Rotary variants whose angles depend on the sequence length: rotating a prefix key by a fixed offset is then wrong.
_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "BASE_FOLDER", "PeftExportError", "export_peft", "peft_adapter"]


class PeftExportError(ValueError):
    """The model's prompt cannot be written as a PEFT adapter, or the output folder is taken; the message says why."""


def _import_peft() -> Any:
    try:
        import peft
    except ImportError:
        raise PeftExportError(
            "exporting a PEFT adapter needs the peft package (pip install 'promptability[test]' or pip install peft)"
        ) from None
    return peft


def peft_adapter(model: PromptedModel, base_model_name_or_path: str) -> tuple[PeftConfig, torch.Tensor]:
    """The PEFT config and ``prompt_embeddings`` tensor equivalent to ``model``'s prompt on its own transformer."""
    peft = _import_peft()
    prompt = model.prompt
    common = dict(
        base_model_name_or_path=base_model_name_or_path,
        num_virtual_tokens=model.prompt_length,
        inference_mode=True,
    )
    if isinstance(prompt, ShallowPrompt):
        task = peft.TaskType.CAUSAL_LM if model.is_causal else peft.TaskType.SEQ_2_SEQ_LM
        config = peft.PromptTuningConfig(
            task_type=task, token_dim=prompt.weight.shape[-1], num_transformer_submodules=1, **common
        )
        return config, prompt.weight.detach().float().cpu().contiguous()
    if isinstance(prompt, DeepPrompt):
        if not isinstance(model, PromptedCausalLM):
            raise PeftExportError(
                "a T5 deep prompt cannot be exported to PEFT: PEFT's prefix tuning reaches only T5's decoder "
                "self-attention, not its encoder self-attention or its cross-attention, which our deep prompt "
                "prefixes too; export a shallow prompt, or use the model through promptability.load_model"
            )
        table, kv_heads, head_dim = _prefix_table(model, prompt)
        config = peft.PrefixTuningConfig(
            task_type=peft.TaskType.CAUSAL_LM,
            num_layers=len(prompt.sites),
            token_dim=kv_heads * head_dim,
            num_attention_heads=kv_heads,
            prefix_projection=False,
            **common,
        )
        return config, table
    raise PeftExportError(f"prompt kind {model.prompt_kind!r} has no PEFT counterpart")


@torch.no_grad()
def _prefix_table(model: PromptedCausalLM, prompt: DeepPrompt) -> tuple[torch.Tensor, int, int]:
    """PEFT's (length, layers * 2 * kv_heads * head_dim) table, each key rotated by ``length`` positions."""
    modules = model.attention_layout().modules
    rotate = _rotation(model.transformer, modules[0], prompt.length)
    rows = []
    for i in range(len(prompt.sites)):  # sites are the layers in order (causal.self_attention_modules)
        keys, values = prompt.kv(i)  # (kv_heads, length, head_dim)
        keys = rotate(keys.detach().float().cpu())
        rows.append(torch.stack([keys.transpose(0, 1), values.detach().float().cpu().transpose(0, 1)], dim=1))
    kv_heads, length, head_dim = prompt.keys[0].shape
    table = torch.stack(rows, dim=1).reshape(length, -1).contiguous()  # (length, layers, 2, heads, head_dim) flat
    return table, kv_heads, head_dim


def _rotation(transformer: nn.Module, attention: nn.Module, offset: int):
    """The model's own rotary embedding by ``offset`` positions, as a function of (heads, length, head_dim) keys.

    The rotation alone: a variant's attention scaling (YaRN) multiplies queries and keys alike, and our prefix keys
    never receive it, so the exported keys must not either.
    """
    rotary = next((m for m in transformer.modules() if type(m).__name__.endswith("RotaryEmbedding")), None)
    apply = getattr(sys.modules[type(attention).__module__], "apply_rotary_pos_emb", None)
    if rotary is None or apply is None:
        raise PeftExportError(
            f"a deep prompt of {type(transformer).__name__} cannot be exported to PEFT: PEFT's prefix tuning moves the "
            "real tokens to positions after the prefix, which only rotary position embeddings (Llama-style) allow "
            "us to compensate; this model has absolute position embeddings"
        )
    rope_type = getattr(rotary, "rope_type", "default")
    if rope_type in _LENGTH_DEPENDENT_ROPE:
        raise PeftExportError(
            f"a deep prompt cannot be exported to PEFT with rope_type {rope_type!r}: its rotation angles depend on the "
            "sequence length, so no fixed rotation of the prefix keys gives the same scores"
        )
    device = next(transformer.parameters()).device
    cos, sin = rotary(torch.zeros(1, device=device), torch.tensor([[offset]], device=device))
    scale = float(getattr(rotary, "attention_scaling", 1.0))
    cos, sin = cos.float().cpu() / scale, sin.float().cpu() / scale

    def rotate(keys: torch.Tensor) -> torch.Tensor:
        rotated, _ = apply(keys[None], keys[None], cos, sin)
        return rotated[0]

    return rotate


def export_peft(model_path: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> Path:
    """Writes the prompt of the model at ``model_path`` as a PEFT adapter folder ``out``; returns ``out``.

    ``out`` is written whole or not at all (a temp folder beside it, renamed into place); a non-empty ``out`` is
    replaced only with ``force``. A full model folder (or a prompt on the offline "tiny" model, which exists on no
    disk) also gets its transformer as ``out/base``.
    """
    peft = _import_peft()
    path, target = Path(model_path), Path(out).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise PeftExportError(f"{target} exists and is not empty; pass --force (force=True) to replace it")
    settings = read_json_file(path / CONFIG_FILE, "model settings") if (path / CONFIG_FILE).is_file() else {}
    model = load_model(model_path)
    if model.prompt is None:
        raise PeftExportError(
            f"{model_path} has no prompt (prompt='none'): a PEFT adapter holds a prompt, and a model without one is "
            "already a plain Transformers model"
        )
    with_base = not settings.get("prompt_only") or settings.get("base_model") == "tiny"
    # a prompt-only save's adapter names its base as load_model finds it: a folder as an absolute path, a Hub id as is
    base = str(target / BASE_FOLDER) if with_base else base_name(resolve_named(saved_base(path, settings)))
    config, weights = peft_adapter(model, base)
    with atomic_dir(target) as tmp:
        if with_base:
            model.save_transformer(tmp / BASE_FOLDER)
        config.save_pretrained(str(tmp))
        save_file({WEIGHTS_KEY: weights}, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        provenance = {"exported_from": str(path.absolute()), "prompt": model.prompt_kind, "peft": peft.__version__}
        (tmp / "promptability-export.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return target
