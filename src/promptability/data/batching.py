"""Mixing, length-grouped batching, collation and per-task views of tokenized data.

Works on the datasets that ``promptability.data.tokenize.tokenize_records``
produces (columns ``task``, ``index``, ``input_ids``, ``labels``,
``choice_ids``, ``label``, ``source_len``, ``target_len``).

* ``mix``: caps every task (template), or every dataset (``data.caps``), at ``cap``
  examples (a seeded random subset) and shuffles the union: examples-proportional mixing as in T0.
* ``LengthGroupedBatchSampler`` (``data/sampler.py``, importable from here):
  shuffled global batches, "iid" slices of the mixture sorted by length inside
  the step, or "length_bands"; resumable, and split across ranks in lockstep.
* ``collate`` / ``collate_eval``: dynamic padding to the longest in the batch;
  ``split_batch``: a batch as micro-batches of similar lengths under a token budget.
  (Meta-learning's episodes are ``promptability.data.episodes``.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets

# Re-exported: the sampler was born here and callers import it from here.
from promptability.data.sampler import STEP_COMPOSITIONS as STEP_COMPOSITIONS
from promptability.data.sampler import LengthGroupedBatchSampler as LengthGroupedBatchSampler

DEFAULT_CAP = 500_000
TRAIN_COLUMNS = ["input_ids", "labels"]
EVAL_COLUMNS = ["task", "index", "input_ids", "choice_ids", "label"]


def task_indices(dataset: Dataset) -> dict[str, np.ndarray]:
    """Row indices of each task, in row order, tasks sorted by name."""
    tasks = np.asarray(dataset.with_format("arrow")["task"].to_numpy(), dtype=object)
    names, inverse = np.unique(tasks.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(names)))[:-1]
    return {str(n): idx for n, idx in zip(names, np.split(order, bounds), strict=True)}


def lengths_of(dataset: Dataset) -> np.ndarray:
    """[n, 2] array of (source_len, target_len)."""
    table = dataset.select_columns(["source_len", "target_len"]).with_format("arrow")[:]  # skip the id lists
    return np.stack([table["source_len"].to_numpy(), table["target_len"].to_numpy()], axis=1).astype(np.int64)


@dataclass
class Mixture:
    dataset: Dataset  # the capped union, shuffled (an index mapping over the memory-mapped data)
    counts: dict[str, int]  # examples per task in the mixture
    original_counts: dict[str, int]


def mix(datasets: Dataset | Sequence[Dataset], *, cap: int | None = DEFAULT_CAP, seed: int = 0,
        dataset_of: Mapping[str, str] | None = None) -> Mixture:  # fmt: skip
    """Caps each task at ``cap`` examples (seeded random subset) and shuffles the union.

    Proportions are those of the capped sizes; one pass over the result is one epoch of the mixture.
    ``cap=None`` keeps everything. With ``dataset_of`` (task -> dataset) a dataset's tasks share ``cap``.
    """
    from promptability.data.caps import template_caps

    if cap is not None and cap < 1:
        raise ValueError(f"cap must be a positive number of examples per task or None, got {cap!r}")
    dataset = datasets if isinstance(datasets, Dataset) else concatenate_datasets(list(datasets))
    rng = np.random.default_rng(seed)
    groups = task_indices(dataset)
    caps = template_caps(groups, cap, "template" if dataset_of is None else "dataset", dataset_of)
    kept, counts = [], {}
    for task, idx in groups.items():  # sorted by name, so the draw does not depend on row order
        if (limit := caps[task]) is not None and len(idx) > limit:
            idx = np.sort(rng.choice(idx, size=limit, replace=False))
        kept.append(idx)
        counts[task] = len(idx)
    order = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    order = order[rng.permutation(len(order))]
    return Mixture(dataset.select(order.tolist()), counts, {t: len(i) for t, i in groups.items()})


def _as_rows(rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> list[Mapping[str, Any]]:
    if isinstance(rows, Mapping):  # a batched HF slice: {column: [values]}
        return [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
    return list(rows)


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def collate(rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads sources and targets to the longest in the batch.

    ``labels`` are padded with ``pad_id`` (mask them with
    ``decoder_attention_mask``, e.g. set to -100, before a cross-entropy loss).
    """
    rows = _as_rows(rows)
    input_ids, attention_mask = _pad([r["input_ids"] for r in rows], pad_id)
    labels, decoder_attention_mask = _pad([r["labels"] for r in rows], pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "decoder_attention_mask": decoder_attention_mask,
    }


def length_groups(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Row indices in micro-batches of at most ``max_tokens`` padded tokens (rows x the longest row), longest first.

    Greedy over the rows sorted by length (stable): a group takes the next row while it stays within the budget; a
    row longer than the budget is a group of its own. Every row is in exactly one group.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def split_batch(batch: Mapping[str, torch.Tensor], max_tokens: int) -> list[dict[str, torch.Tensor]]:
    """A right-padded ``collate`` batch as ``length_groups`` micro-batches, each cut to its own longest source and
    target: the same rows, less padding. A row's length is its source plus its target tokens: what a decoder-only
    model runs (``model.causal.pack_rows``); for an encoder-decoder, a proxy of its cost."""
    masks = {"input_ids": batch["attention_mask"], "labels": batch["decoder_attention_mask"]}
    for name, mask in masks.items():
        lengths = mask.sum(1, keepdim=True)
        if not torch.equal(mask.bool(), torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths):
            raise ValueError(f"split_batch needs right-padded rows; {name}' mask has padding before real tokens")
    source, target = masks["input_ids"].sum(1), masks["labels"].sum(1)
    out = []
    for rows in length_groups((source + target).tolist(), max_tokens):
        at = torch.tensor(rows, device=source.device)
        # At least one column, as in the whole batch, so that an all-empty side still has a shape to pad.
        width = {"input_ids": max(int(source[at].max()), 1), "labels": max(int(target[at].max()), 1)}
        width["attention_mask"], width["decoder_attention_mask"] = width["input_ids"], width["labels"]
        out.append({k: v[at, : width[k]] for k, v in batch.items()})
    return out


def collate_eval(rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]], pad_id: int) -> dict[str, Any]:
    """Rank-classification batch: sources [B, S], choices [B, C_max, T_max] with masks.

    Also ``num_choices`` [B], ``label`` [B], ``index`` [B] (position in the
    task, when the rows have it) and ``task`` (list of str).
    """
    rows = _as_rows(rows)
    input_ids, attention_mask = _pad([r["input_ids"] for r in rows], pad_id)
    n_choices = [len(r["choice_ids"]) for r in rows]
    c_max = max(n_choices, default=0) or 1
    t_max = max((len(c) for r in rows for c in r["choice_ids"]), default=0) or 1
    choice_ids = torch.full((len(rows), c_max, t_max), pad_id, dtype=torch.long)
    choice_mask = torch.zeros((len(rows), c_max, t_max), dtype=torch.long)
    for i, r in enumerate(rows):
        for j, c in enumerate(r["choice_ids"]):
            choice_ids[i, j, : len(c)] = torch.as_tensor(c, dtype=torch.long)
            choice_mask[i, j, : len(c)] = 1
    out: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "choice_ids": choice_ids,
        "choice_mask": choice_mask,
        "num_choices": torch.tensor(n_choices, dtype=torch.long),
        "label": torch.tensor([int(r.get("label", -1)) for r in rows], dtype=torch.long),
    }
    if rows and "index" in rows[0]:
        out["index"] = torch.tensor([int(r["index"]) for r in rows], dtype=torch.long)
    if rows and "task" in rows[0]:
        out["task"] = [r["task"] for r in rows]
    return out


def _task_rows(dataset: Dataset, task: str) -> np.ndarray:
    groups = task_indices(dataset)
    if task not in groups:
        raise KeyError(f"task '{task}' is not in the dataset (has {sorted(groups)[:10]}...)")
    return groups[task]


def eval_batches(
    dataset: Dataset, batch_size: int, pad_id: int, *, task: str | None = None
) -> Iterator[dict[str, Any]]:
    """``collate_eval`` batches, longest sources first (less padding, OOM shows early).

    Use each batch's ``index`` (and ``task``) to put scores back in order.
    """
    rows = _task_rows(dataset, task) if task is not None else np.arange(len(dataset))
    lengths = np.asarray(dataset.with_format("arrow")["source_len"].to_numpy())[rows]
    order = rows[np.argsort(-lengths, kind="stable")]
    view = dataset.select_columns(EVAL_COLUMNS)
    for start in range(0, len(order), batch_size):
        yield collate_eval(view[order[start : start + batch_size].tolist()], pad_id)
