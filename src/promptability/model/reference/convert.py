"""The reference's parameter names and deep-prompt layout, mapped to ours; ``import_reference`` puts it together.

Names (the reference wraps T5 at ``transformer.model.``; a meta-learner adds ``model.`` in front):

- shallow: ``shared.embed.weight`` is T5's embedding (also saved as ``encoder.embed_tokens.embed.weight`` and
  ``decoder.embed_tokens.embed.weight``) and ``shared.new_embed.weight`` the (P, d_model) prompt. The reference
  looks input ids up in ``cat(embed[:tokenizer vocab], new_embed)`` and puts the prompt's ids before the source:
  the same as prepending the prompt vectors, which is what our shallow prompt does. The embedding rows past the
  tokenizer's vocabulary are kept as they are: no tokenizer id reaches them, and the LM head (its own matrix in
  LM-adapted T5, the shared one where tied) still scores every one of the model's output ids.
- deep: ``encoder.prefix_embed.weight``, ``decoder.prefix_embed.weight`` and ``decoder.prefix_embed_cross.weight``,
  each (P, L * 2 * H * d_kv) with L the layers of its stack; row p viewed as (L, 2, H, d_kv) holds layer l's key
  at [l, 0] and value at [l, 1]. Our DeepPrompt keeps one (H, P, d_kv) key and value per attention site.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from promptability.io import BadFileError
from promptability.model.reference.read import (
    ReferenceCheckpointError,
    extract_checkpoint,
    is_archive,
    read_state_dict,
    sha256_file,
)

ROOT = "transformer.model."  # where the reference's LightningModule keeps the Hugging Face T5
META_PREFIX = "model."  # a meta-learner wraps the whole model once more
SHALLOW_EMBEDDING = "shared.embed.weight"
SHALLOW_PROMPT = "shared.new_embed.weight"
# The reference's input-embedding module is registered under three names; these are the two copies of SHALLOW_*.
SHALLOW_ALIASES = {
    "encoder.embed_tokens.embed.weight": SHALLOW_EMBEDDING,
    "decoder.embed_tokens.embed.weight": SHALLOW_EMBEDDING,
    "encoder.embed_tokens.new_embed.weight": SHALLOW_PROMPT,
    "decoder.embed_tokens.new_embed.weight": SHALLOW_PROMPT,
}
# Our DeepPrompt's site kind -> the reference table holding its prefixes (the encoder's spans the encoder's layers,
# the two decoder tables the decoder's).
DEEP_TABLES = {
    "encoder": "encoder.prefix_embed.weight",
    "decoder_self": "decoder.prefix_embed.weight",
    "decoder_cross": "decoder.prefix_embed_cross.weight",
}
# A T5 checkpoint may hold this key from older transformers; no T5 uses it.
IGNORED = {"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"}
SOURCE_FORMAT = "allenai/better-promptability PyTorch Lightning checkpoint"


def strip_names(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Hugging Face T5 names: without the meta-learner's ``model.`` and the wrapper's ``transformer.model.``."""
    if state and all(k.startswith(META_PREFIX + ROOT) for k in state):
        state = {k[len(META_PREFIX) :]: v for k, v in state.items()}
    foreign = [k for k in state if not k.startswith(ROOT)]
    if foreign or not state:
        raise ReferenceCheckpointError(
            f"{path}: not a checkpoint of the paper's code: its parameters are not under {ROOT!r} "
            f"(e.g. {foreign[:3] or 'none at all'})"
        )
    names = {k[len(ROOT) :]: v for k, v in state.items()}
    reparam = sorted(k for k in names if re.search(r"prefix_embed(_cross)?\.\d+\.", k))
    if reparam:
        raise ReferenceCheckpointError(
            f"{path}: reparameterised deep prompts (reparam=true: {ROOT}{reparam[0]}, ...) are not supported; "
            "the paper and its released models use plain prefix tables"
        )
    return names


def split_shallow(
    names: dict[str, torch.Tensor], path: str | os.PathLike
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(T5 state with the plain embedding names, the (P, d_model) prompt) from a shallow checkpoint's tensors."""
    names = dict(names)
    if SHALLOW_PROMPT not in names:
        deep = [k for k in DEEP_TABLES.values() if k in names]
        hint = "; it holds deep prompt tables: use --prompt deep" if deep else ""
        raise ReferenceCheckpointError(f"{path}: no shallow prompt {ROOT}{SHALLOW_PROMPT}{hint}")
    _require(names, SHALLOW_EMBEDDING, path)
    for alias, original in SHALLOW_ALIASES.items():
        if alias in names:
            copy = names.pop(alias)
            if copy.shape != names[original].shape or not torch.equal(copy, names[original]):
                raise ReferenceCheckpointError(f"{path}: {ROOT}{alias} differs from {ROOT}{original}, its own copy")
    prompt = names.pop(SHALLOW_PROMPT)
    if prompt.dim() != 2 or prompt.shape[1] != names[SHALLOW_EMBEDDING].shape[1]:
        raise ReferenceCheckpointError(
            f"{path}: {ROOT}{SHALLOW_PROMPT} has shape {list(prompt.shape)}, expected [prompt length, "
            f"{names[SHALLOW_EMBEDDING].shape[1]}] (the embedding's width)"
        )
    names["shared.weight"] = names.pop(SHALLOW_EMBEDDING)
    return names, prompt


def split_deep(
    names: dict[str, torch.Tensor], path: str | os.PathLike, config: Any
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(T5 state, site kind -> its prefix table) from a deep checkpoint; every table's shape checked against ``config``."""
    if SHALLOW_PROMPT in names:
        raise ReferenceCheckpointError(
            f"{path}: it holds a shallow prompt ({ROOT}{SHALLOW_PROMPT}): use --prompt shallow"
        )
    tables = {kind: _require(names, key, path) for kind, key in DEEP_TABLES.items()}
    names = {k: v for k, v in names.items() if k not in DEEP_TABLES.values()}
    length = tables["encoder"].shape[0]
    width = 2 * config.num_heads * config.d_kv
    for kind, table in tables.items():
        layers = config.num_layers if kind == "encoder" else config.num_decoder_layers
        if table.shape != (length, layers * width):
            raise ReferenceCheckpointError(
                f"{path}: {ROOT}{DEEP_TABLES[kind]} has shape {list(table.shape)}, expected [{length}, {layers * width}] "
                f"(prompt length x {layers} layers * 2 * {config.num_heads} heads * d_kv {config.d_kv})"
            )
    return names, tables


def _require(names: Mapping[str, torch.Tensor], key: str, path: str | os.PathLike) -> torch.Tensor:
    if key not in names:
        raise ReferenceCheckpointError(f"{path}: the checkpoint lacks {ROOT}{key}")
    return names[key]


def build_transformer(config: Any, state: dict[str, torch.Tensor], path: str | os.PathLike, base: str) -> Any:
    """A T5ForConditionalGeneration of ``config`` holding ``state``'s tensors (not copied: an mmap stays an mmap).

    Built on the meta device, so no random initialisation of billions of parameters is paid for. Every key and
    shape is checked first; the LM head is tied to the embedding only when the checkpoint's two are equal, as
    Hugging Face's own loading does (LM-adapted T5 has a head of its own).
    """
    from transformers import T5ForConditionalGeneration

    with torch.device("meta"):
        transformer = T5ForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in transformer.state_dict().items()}
    state = {k: v for k, v in state.items() if k not in IGNORED}
    if "shared.weight" in state:  # T5's stacks read the shared embedding; a checkpoint need not repeat it
        for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            state.setdefault(alias, state["shared.weight"])
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"lacks {ROOT}{missing[0]}" if missing else f"holds {ROOT}{unexpected[0]}, which the base lacks"
        count = len(missing) + len(unexpected) - 1
        raise ReferenceCheckpointError(
            f"{path}: the checkpoint {what}{f' ({count} more keys differ)' if count else ''}; "
            f"is it a checkpoint of {base}?"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ReferenceCheckpointError(
                f"{path}: {ROOT}{key} has shape {list(state[key].shape)}, but {base} has {list(shape)}; "
                "is it a checkpoint of that model?"
            )
    transformer.load_state_dict(state, strict=True, assign=True)
    transformer.tie_weights(missing_keys=set(), recompute_mapping=False)
    tensors = [
        *transformer.named_parameters(remove_duplicate=False),
        *transformer.named_buffers(remove_duplicate=False),
    ]
    left = [name for name, tensor in tensors if tensor.is_meta]
    if left:
        raise RuntimeError(f"importing left {left[:3]} unset: this transformers version builds T5 differently")
    return transformer.eval()


def import_reference(checkpoint: str | os.PathLike, base: str, prompt: str, out: str | os.PathLike) -> Path:
    """Converts a released checkpoint (``.ckpt``, or the Hub's ``.tgz`` holding one) into a model folder at ``out``.

    ``base``: the LM-adapted T5 it was trained from (Hub id or folder); only its config and tokenizer are read.
    The folder is what ``pretrain`` saves (safetensors + JSON, written atomically); its ``promptability.json``
    records ``imported_from``: the file, its sha256 (for an archive also the member and the member's sha256).
    """
    from promptability.model.loading import base_name, model_size
    from promptability.model.prompted import CONFIG_FILE, PromptedSeq2SeqLM
    from promptability.model.prompts.deep import DeepPrompt

    if prompt not in ("shallow", "deep"):
        raise ValueError(f"prompt must be 'shallow' or 'deep', got {prompt!r}")
    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_file():
        raise FileNotFoundError(errno.ENOENT, "checkpoint file not found", str(checkpoint))
    if out.exists() and not (out / CONFIG_FILE).is_file() and (not out.is_dir() or any(out.iterdir())):
        # the save replaces --out whole: never a folder that holds something other than a model
        raise FileExistsError(errno.EEXIST, "--out exists and is not a model folder; pick another", str(out))
    config, tokenizer = _base_files(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the archive's checkpoint is extracted on the same disk as the output
    with tempfile.TemporaryDirectory(
        prefix=f".{out.name}.import-", dir=out.parent, ignore_cleanup_errors=True
    ) as scratch:
        if is_archive(checkpoint):
            path, provenance = extract_checkpoint(checkpoint, scratch)
        else:
            path, provenance = checkpoint, {"file": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint)}
        names = strip_names(read_state_dict(path), checkpoint)
        if prompt == "shallow":
            state, weight = split_shallow(names, checkpoint)
            length = weight.shape[0]
        else:
            state, tables = split_deep(names, checkpoint, config)
            length = tables["encoder"].shape[0]
        transformer = build_transformer(config, state, checkpoint, base)
        model = PromptedSeq2SeqLM(transformer, tokenizer, prompt, length, seed=0, base_model=base_name(base))
        if isinstance(model.prompt, DeepPrompt):
            model.prompt.copy_tables(tables)
        else:
            assert model.prompt is not None  # a shallow or deep prompt was asked for
            model.prompt.load_state_dict({"weight": weight}, strict=True)
        extra = {"imported_from": {**provenance, "format": SOURCE_FORMAT}, "method": "mtl-tp",
                 "model_size": model_size(base)}  # fmt: skip
        model.save(out, extra=extra)
    return out


def _base_files(base: str) -> tuple[Any, Any]:
    """The base model's config and tokenizer (its weights are not needed: the checkpoint has them all)."""
    from transformers import AutoConfig, AutoTokenizer

    from promptability.model.loading import fail_fast_offline

    if not Path(base).exists():
        if base.startswith((".", "/", "~")):
            raise FileNotFoundError(errno.ENOENT, "base model folder not found", base)
        fail_fast_offline(base)
    try:
        config = AutoConfig.from_pretrained(base)
        tokenizer = AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as err:
        raise BadFileError(f"--base {base}: cannot read its config and tokenizer ({err})") from None
    if getattr(config, "model_type", None) != "t5":
        raise BadFileError(
            f"--base {base} is a {config.model_type} model; the paper's checkpoints are T5 (t5-*-lm-adapt)"
        )
    return config, tokenizer
