"""Pair 2, data side: padding fraction of length-grouped vs random micro-batches.

With the training defaults (``TrainConfig``: global batch, micro-batch, step
composition and megabatch multiplier), a length-grouped epoch is cut exactly as
``MTLStep`` cuts it (``LengthGroupedBatchSampler`` batches, each rank's share
sliced into micro-batches); the other step composition is measured beside it
("iid": steps are i.i.d. slices sorted inside; "length_bands": one length band
per step); the random epoch is a seeded permutation cut into micro-batches of
the same size. The fraction is padded positions / all positions over sources and
targets, as ``padding_fraction`` counts them on collated batches
(computed here from the lengths alone).

Data: the offline suite's training mixture, tokenized with the tiny model's
tokenizer (trained on the suite's texts, as ``load_model("tiny")`` does), and
the real P3 samples in ``../shared/p3/samples`` with their own T5 token ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Settings
from benchmarks.report import Row


def padding_from_lengths(lengths: np.ndarray, batches: Iterable[np.ndarray]) -> float:
    """Padded / all positions of sources and targets, for batches of row indices into ``lengths`` [n, 2]."""
    padded = total = 0
    for idx in batches:
        lens = lengths[np.asarray(idx)]
        full = lens.max(axis=0) * len(lens)
        total += int(full.sum())
        padded += int((full - lens.sum(axis=0)).sum())
    return padded / total if total else 0.0


def padding_fraction(batches: Iterable[Mapping[str, Any]]) -> float:
    """Padded positions / all positions, over sources and targets of collated batches (``batching.collate``)."""
    padded = total = 0
    for b in batches:
        for mask in (b["attention_mask"], b["decoder_attention_mask"]):
            total += mask.numel()
            padded += int((mask == 0).sum())
    return padded / total if total else 0.0


def _micro(batches: Iterable[np.ndarray], micro: int) -> Iterable[np.ndarray]:
    for b in batches:
        for start in range(0, len(b), micro):
            yield b[start : start + micro]


def grouped_fraction(lengths: np.ndarray, composition: str | None = None, seed: int = 0) -> float:
    """Padding of one epoch cut as ``MTLStep`` cuts it with the training defaults (``composition``: None = theirs)."""
    from promptability.data.batching import LengthGroupedBatchSampler
    from promptability.train.config import TrainConfig

    config = TrainConfig()
    micro = config.micro_batch_size
    sampler = LengthGroupedBatchSampler(
        lengths, config.batch_size, seed=seed, megabatch_mult=config.data.megabatch_mult, micro_batch_size=micro,
        composition=composition or config.data.step_composition,
    )  # fmt: skip
    shares = [share for batch in sampler.global_batches(0) for share in sampler.shares(batch)]
    return padding_from_lengths(lengths, _micro(shares, micro))


def fractions(lengths: np.ndarray, seed: int = 0) -> tuple[float, float, str]:
    """(length-grouped, random, description of the batching) with the training defaults."""
    from promptability.train.config import TrainConfig

    config = TrainConfig()
    batch, micro, mult = config.batch_size, config.micro_batch_size, config.data.megabatch_mult
    perm = np.random.default_rng(seed).permutation(len(lengths))
    random_batches = [perm[i : i + micro] for i in range(0, len(perm), micro)]
    how = f"batch {batch}, micro-batch {micro}, {config.data.step_composition} steps, megabatch x{mult}"
    return grouped_fraction(lengths, seed=seed), padding_from_lengths(lengths, random_batches), how


def suite_lengths(settings: Settings) -> np.ndarray:
    from promptability.data.tokenize import MAX_SOURCE_LEN, MAX_TARGET_LEN
    from promptability.model.tiny import build_tokenizer
    from promptability.suite.generate import generate_suite, tokenizer_texts

    suite = generate_suite(settings.seed, settings.size.suite_size)
    tokenizer = build_tokenizer(tokenizer_texts(suite), vocab_size=settings.size.suite_vocab)
    records = list(suite.iter_records("train", "train"))
    src = tokenizer([r["source"] for r in records], add_special_tokens=True)["input_ids"]
    tgt = tokenizer([r["target"] for r in records], add_special_tokens=True)["input_ids"]
    lengths = [[min(len(s), MAX_SOURCE_LEN), min(len(t), MAX_TARGET_LEN)] for s, t in zip(src, tgt, strict=True)]
    return np.asarray(lengths, dtype=np.int64)


def p3_samples_dir() -> Path | None:
    here = Path(__file__).resolve().parents[1].parent / "shared" / "p3" / "samples"  # beside the repository
    for candidate in (here, Path("../shared/p3/samples")):
        if candidate.is_dir():
            return candidate
    return None


def p3_lengths(root: Path) -> tuple[np.ndarray, int]:
    """(lengths [n, 2] from P3's own T5 token ids plus EOS, number of templates); instances deduplicated."""
    from promptability.data.p3 import p3_format, p3_splits, read_p3_instances
    from promptability.data.tokenize import MAX_SOURCE_LEN, MAX_TARGET_LEN

    seen: set[tuple[str, str]] = set()
    lengths, templates = [], 0
    for folder in sorted(p for p in root.iterdir() if p3_format(p) is not None):
        templates += 1
        for split in p3_splits(folder):
            for inst in read_p3_instances(folder, split):
                key = (folder.name, inst["source"])
                if key in seen:  # the samples repeat instances across splits
                    continue
                seen.add(key)
                scored = inst["choices"] and isinstance(inst["targets"][0], list)  # one id list per choice
                target = inst["targets"][inst["label"]] if scored else inst["targets"]
                src = len(inst["inputs"]) + (not inst["inputs"] or inst["inputs"][-1] != 1)
                tgt = len(target) + (not target or target[-1] != 1)
                lengths.append([min(src, MAX_SOURCE_LEN), min(tgt, MAX_TARGET_LEN)])
    return np.asarray(lengths, dtype=np.int64).reshape(-1, 2), templates


def _row(key: str, what: str, lengths: np.ndarray, settings: Settings) -> Row:
    from promptability.data.batching import STEP_COMPOSITIONS
    from promptability.train.config import TrainConfig

    grouped, random, how = fractions(lengths, settings.seed)
    default = TrainConfig().data.step_composition
    other = next(c for c in STEP_COMPOSITIONS if c != default)
    return Row(
        key=key, pair="2 MTL data", name=f"padding fraction, {what}, {len(lengths)} examples ({how})",
        ours=f"{grouped:.1%} length-grouped ({default})", baseline=f"{random:.1%} random",
        check=f"{grouped_fraction(lengths, other, settings.seed):.1%} with {other} steps; "
              f"source ~{lengths[:, 0].mean():.0f} / target ~{lengths[:, 1].mean():.0f} tokens",
    )  # fmt: skip


def run(settings: Settings) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    if settings.size.suite_size is None:
        notes.append("padding on the offline suite: skipped (this size sets no suite)")
    else:
        settings.log("padding fractions: generating the offline suite")
        lengths = suite_lengths(settings)
        what = f"offline suite ({settings.size.suite_size}) training mixture"
        rows.append(_row("padding_suite", what, lengths, settings))
    root = p3_samples_dir()
    if root is None:
        notes.append("padding on real P3 samples: skipped (../shared/p3/samples is not beside the repository)")
    else:
        lengths, templates = p3_lengths(root)
        if len(lengths):
            rows.append(_row("padding_p3", f"real P3 samples ({templates} templates, T5 token ids)", lengths, settings))
    return rows, notes
