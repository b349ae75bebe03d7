"""Texts in, texts out: sources tokenized as scoring tokenizes them, ``PromptedModel.generate`` in batches, decoded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from tqdm.auto import tqdm

from promptability.data.continuation import special_prefix
from promptability.data.tokenize import MAX_SOURCE_LEN, continuation_source_ids, finish_ids, source_ids_without_eos
from promptability.model.prompted import DEFAULT_MAX_NEW_TOKENS, PromptedModel

DEFAULT_BATCH_SIZE = 8


def source_ids(
    model: PromptedModel, texts: Sequence[str], max_source_len: int, source_eos: bool = True
) -> list[list[int]]:
    """Each text's ids in the layout ``tokenize_records`` gives sources, so a prompt meets the inputs it was tuned on:
    seq2seq ends with EOS (none with ``source_eos=False``); a decoder-only source has none, starts with the special
    ids the tokenizer puts first (its BOS, if any) and keeps its end."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ValueError("generating from text needs the model's tokenizer; this model has none")
    eos = tokenizer.eos_token_id
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    if model.is_causal:
        prefix = special_prefix(tokenizer)
        return [continuation_source_ids(ids, max_source_len, eos, prefix)[0] for ids in encoded]
    finish = finish_ids if source_eos else source_ids_without_eos
    return [finish(ids, max_source_len, eos)[0] for ids in encoded]


def generate_texts(
    model: PromptedModel,
    texts: Sequence[str],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_source_len: int = MAX_SOURCE_LEN,
    source_eos: bool = True,
    progress: bool = False,
) -> list[str]:
    """The greedy continuation of each text, in input order, cut at the model's EOS and decoded without special tokens.

    Sources are batched longest first (padding never changes a result, so the order only saves work).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ids = source_ids(model, texts, max_source_len, source_eos)
    assert model.tokenizer is not None  # source_ids raised otherwise
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    device = next(model.parameters()).device
    stops = _stop_ids(model)
    out: list[str] = [""] * len(ids)
    bar = tqdm(total=len(ids), desc="generating", unit="text", disable=not progress)
    was_training = model.training
    model.eval()  # dropout would make greedy decoding random
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch, mask = _right_padded([ids[i] for i in rows], model.pad_token_id)
            new = model.generate(batch.to(device), mask.to(device), max_new_tokens=max_new_tokens).tolist()
            for i, tokens in zip(rows, new, strict=True):
                end = next((k for k, t in enumerate(tokens) if t in stops), len(tokens))
                # decode is typed str | list[str]; one id list gives one str
                out[i] = cast(str, model.tokenizer.decode(tokens[:end], skip_special_tokens=True)).strip()
            bar.update(len(rows))
    finally:
        model.train(was_training)
        bar.close()
    return out


def _right_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return ids, mask


def _stop_ids(model: PromptedModel) -> set[int]:
    """The ids generation ends at (the generation config's EOS, one or several, else the tokenizer's)."""
    eos = model.transformer.generation_config.eos_token_id
    if eos is None and model.tokenizer is not None:
        eos = model.tokenizer.eos_token_id
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, list) else [eos])}
