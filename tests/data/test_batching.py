"""Tokenize/cache/mix/batch: real numbers on tiny data and on the real P3 samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks.padding import padding_fraction
from datasets import Dataset, load_from_disk
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils.data import DataLoader
from transformers import ByT5Tokenizer, T5TokenizerFast

from promptability.data import batching as B
from promptability.data import tokenize as T

P3_SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "p3" / "samples"
EOS = 1
PAD = 0


@pytest.fixture(scope="module")
def byt5() -> ByT5Tokenizer:
    return ByT5Tokenizer()


def word_tokenizer(words: str = "the a cat dog sat on mat yes no") -> T5TokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words.split():
        vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return T5TokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def task_counts(dataset: Dataset) -> dict[str, int]:
    return {task: len(idx) for task, idx in B.task_indices(dataset).items()}


def iterate_batches(dataset: Dataset, batches, pad_id: int):
    """Collated training batches for index batches (e.g. from a sampler), without a DataLoader."""
    view = dataset.select_columns(B.TRAIN_COLUMNS)
    for idx in batches:
        yield B.collate(view[list(idx)], pad_id)


def rec(task: str, source: str, target: str, choices=None, label=-1) -> dict:
    return {"task": task, "source": source, "target": target, "choices": choices or [], "label": label}


def sized_records(sizes: dict[str, int]) -> list[dict]:
    """Unique sources of varied length (ByT5: one id per byte)."""
    out = []
    for t, n in sizes.items():
        for i in range(n):
            out.append(rec(t, f"{t} example {i} " + "x" * ((i * 7) % 40), "yes" if i % 2 else "no"))
    return out


def p3_records() -> list[dict]:
    if not P3_SAMPLES.is_dir():
        pytest.skip(f"P3 samples not found at {P3_SAMPLES}")
    out = []
    for folder in sorted(p for p in P3_SAMPLES.iterdir() if p.is_dir()):
        splits = load_from_disk(str(folder))
        for split in sorted(splits):
            for row in splits[split]:
                out.append(rec(folder.name, row["inputs_pretokenized"], row["targets_pretokenized"].strip()))
    return out


# --- tokenization -----------------------------------------------------------------------------------


def test_tokenize_counts_truncation_and_single_eos(byt5, tmp_path):
    records = [
        rec("a", "x" * 3, "yes", ["yes", "no", "z" * 9], 0),  # 4 ids: fits 10
        rec("a", "x" * 9, "y" * 4),  # 10 ids with EOS: fits exactly
        rec("a", "x" * 10, "y" * 5),  # 11: truncated; target 6 > 5: truncated
        rec("b", "abc</s>", "d</s></s>"),  # literal EOS text must not double the EOS
        rec("b", "x" * 8 + "</s>" + "x", "ok"),  # the cut lands right after an in-text EOS
    ]
    out = T.tokenize_records(records, byt5, max_source_len=10, max_target_len=5, cache_dir=tmp_path)
    ds, st = out.dataset, out.stats
    assert ds.num_rows == 5 and st.per_task == {"a": 3, "b": 2}
    assert task_counts(ds) == {"a": 3, "b": 2}
    assert (st.sources_truncated, st.targets_truncated) == (2, 1)
    assert (st.num_choices, st.choices_truncated) == (3, 1)
    assert ds["index"] == [0, 1, 2, 0, 1] and ds["label"] == [0, -1, -1, -1, -1]
    assert ds["source_len"] == [4, 10, 10, 4, 9]
    assert ds[0]["input_ids"] == [ord("x") + 3] * 3 + [EOS]
    assert ds[0]["choice_ids"] == [
        [ord(c) + 3 for c in "yes"] + [EOS],
        [ord(c) + 3 for c in "no"] + [EOS],
        [ord("z") + 3] * 4 + [EOS],
    ]
    assert ds[3]["input_ids"] == [ord(c) + 3 for c in "abc"] + [EOS]
    assert ds[3]["labels"] == [ord("d") + 3, EOS]
    assert ds[1]["choice_ids"] == []
    for row in ds:
        for ids in [row["input_ids"], row["labels"], *row["choice_ids"]]:
            assert ids[-1] == EOS and (len(ids) == 1 or ids[-2] != EOS)
        assert len(row["input_ids"]) <= 10 and len(row["labels"]) <= 5
    assert "2 sources truncated to 10 tokens" in st.summary()


def test_no_progress_silences_datasets_bars_too(byt5, tmp_path, capfd):
    import datasets

    records = [rec("a", f"source {i}", "t") for i in range(5)]
    for progress, folder in ((True, "shown"), (False, "quiet")):
        T.tokenize_records(records, byt5, cache_dir=tmp_path / folder, progress=progress)
        T.tokenize_records(records, byt5, cache_dir=tmp_path / folder, progress=progress)  # a cache hit
        err = capfd.readouterr().err
        assert ("Generating train split" in err) is progress, err  # the build's bar, only with progress
    assert not datasets.are_progress_bars_disabled()  # the switch is restored after the block


def test_continuation_layout_for_decoder_only_models(byt5, tmp_path):
    """No EOS anywhere, sources cut from the left, answers with a leading space; its own cache entry."""
    records = [
        rec("a", "x" * 8 + "ab", "yes", ["yes", "no"], 0),  # 10 ids: cut to the last 6
        rec("a", "abc</s>", " d</s>"),  # a literal trailing EOS goes
        rec("a", "abc ", " d"),  # the source's space moves to the answer: " " + " d", not doubled by the layout
    ]
    out = T.tokenize_records(records, byt5, max_source_len=6, max_target_len=3, cache_dir=tmp_path,
                             continuation=True)  # fmt: skip
    ds, st = out.dataset, out.stats
    ids = lambda text: [ord(c) + 3 for c in text]  # noqa: E731
    assert ds[0]["input_ids"] == ids("xxxxab") and st.sources_truncated == 1
    assert ds[0]["labels"] == ids(" ye") and st.targets_truncated == 1  # the first 3 ids of " yes"
    assert ds[0]["choice_ids"] == [ids(" ye"), ids(" no")]
    # The answer's ids are those it has in the joined text, where ByT5 drops the space after a literal "</s>".
    assert ds[1]["input_ids"] == ids("abc") and ds[1]["labels"] == ids("d")
    assert ds[2]["input_ids"] == ids("abc") and ds[2]["labels"] == ids("  d")
    earlier = T.tokenize_records(records, byt5, max_source_len=6, max_target_len=3, use_cache=False, continuation=True,
                                 joined=False)  # fmt: skip
    assert earlier.key != out.key and earlier.dataset[2]["input_ids"] == ids("abc ")  # the earlier rule kept it
    seq2seq = T.tokenize_records(records, byt5, max_source_len=6, max_target_len=3, cache_dir=tmp_path)
    assert seq2seq.key != out.key and seq2seq.dataset[1]["input_ids"] == ids("abc") + [EOS]


def test_source_without_eos(byt5, tmp_path):
    """source_eos=False: the source keeps up to max_source_len text ids and no EOS; targets and choices keep theirs."""
    records = [
        rec("a", "x" * 3, "yes", ["yes", "no"], 0),
        rec("a", "x" * 12, "y"),  # 12 ids: cut to 10, with no room kept for an EOS
        rec("b", "abc</s>", "d"),  # a literal trailing EOS goes too
        rec("b", "x" * 9 + "</s>" + "x", "d"),  # the cut lands right after an in-text EOS: dropped
    ]
    ids = lambda text: [ord(c) + 3 for c in text]  # noqa: E731
    out = T.tokenize_records(records, byt5, max_source_len=10, max_target_len=5, cache_dir=tmp_path, source_eos=False)
    ds = out.dataset
    assert ds["input_ids"] == [ids("xxx"), ids("x" * 10), ids("abc"), ids("x" * 9)]
    assert ds["source_len"] == [3, 10, 3, 9] and out.stats.sources_truncated == 2
    assert ds[0]["labels"] == ids("yes") + [EOS] and ds[0]["choice_ids"] == [ids("yes") + [EOS], ids("no") + [EOS]]
    with_eos = T.tokenize_records(records, byt5, max_source_len=10, max_target_len=5, cache_dir=tmp_path)
    assert with_eos.key != out.key and with_eos.dataset["input_ids"][:3] == [
        ids("xxx") + [EOS], ids("x" * 9) + [EOS], ids("abc") + [EOS]]  # fmt: skip
    assert with_eos.dataset["labels"] == ds["labels"] and with_eos.dataset["choice_ids"] == ds["choice_ids"]
    # The key of the default layout is unchanged, so that existing caches stay valid.
    assert T.cache_key("d", {}, 10, 5) == T.cache_key("d", {}, 10, 5, source_eos=True) != T.cache_key(
        "d", {}, 10, 5, source_eos=False)  # fmt: skip


def test_tokenize_rejects_bad_input(byt5, tmp_path):
    with pytest.raises(ValueError, match="max_source_len"):
        T.tokenize_records([rec("a", "x", "y")], byt5, max_source_len=1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="row 1.*'source'"):
        T.tokenize_records([rec("a", "x", "y"), {"task": "a", "target": "y"}], byt5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no records"):
        T.tokenize_records([], byt5, cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []


def test_cache_hit_does_not_retokenize(byt5, tmp_path, monkeypatch):
    calls = []
    original = ByT5Tokenizer.__call__

    def counting(self, *args, **kwargs):
        calls.append(len(args[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ByT5Tokenizer, "__call__", counting)
    records = sized_records({"a": 25, "b": 5})
    first = T.tokenize_records(records, byt5, cache_dir=tmp_path, chunk_size=10)
    assert not first.from_cache
    assert len(calls) == 6 and sum(calls) == 60  # 3 chunks x (sources, targets); no choices
    calls.clear()
    second = T.tokenize_records(records, byt5, cache_dir=tmp_path, chunk_size=10)
    assert second.from_cache and calls == [] and second.key == first.key
    assert second.dataset[:] == first.dataset[:]
    assert second.stats == first.stats
    assert sorted(os.listdir(tmp_path)) == [first.key]


def test_cache_key_changes_with_lengths_tokenizer_and_data(byt5, tmp_path):
    records = sized_records({"a": 3})
    base = T.tokenize_records(records, byt5, cache_dir=tmp_path).key
    assert T.tokenize_records(records, byt5, cache_dir=tmp_path, max_source_len=512).key != base
    assert T.tokenize_records(records, byt5, cache_dir=tmp_path, max_target_len=64).key != base
    assert T.tokenize_records(records, ByT5Tokenizer(extra_ids=10), cache_dir=tmp_path).key != base
    changed = [dict(r) for r in records]
    changed[2]["target"] += "!"
    assert T.tokenize_records(changed, byt5, cache_dir=tmp_path).key != base
    words = T.tokenize_records(records, word_tokenizer(), cache_dir=tmp_path).key
    assert words != base
    assert T.tokenize_records(records, word_tokenizer("the a cat dog"), cache_dir=tmp_path).key != words
    assert T.tokenize_records(records, byt5, cache_dir=tmp_path).key == base
    assert len(os.listdir(tmp_path)) == 7


def test_files_key_reads_records_only_on_miss(byt5, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("placeholder\n")
    reads = []

    def read():
        reads.append(1)
        return sized_records({"a": 4})

    cache = tmp_path / "cache"
    first = T.tokenize_records(read, byt5, files=[data], cache_dir=cache)
    second = T.tokenize_records(read, byt5, files=[data], cache_dir=cache)
    assert len(reads) == 1 and second.from_cache and second.dataset.num_rows == 4
    stat = data.stat()
    data.write_text("placeholdeR\n")  # same size and mtime, other content: changed data
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = T.tokenize_records(read, byt5, files=[data], cache_dir=cache)
    assert len(reads) == 2 and third.key != first.key and not third.from_cache
    os.utime(data, ns=(1, 1))  # only touched: the same data
    assert T.tokenize_records(read, byt5, files=[data], cache_dir=cache).key == third.key
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        T.tokenize_records(read, byt5, files=[tmp_path / "missing.jsonl"], cache_dir=cache)


def test_cache_write_is_atomic(byt5, tmp_path, monkeypatch):
    records = sized_records({"a": 6})
    original = Dataset.save_to_disk

    def half_then_fail(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)
        raise KeyboardInterrupt("simulated interruption after the data, before meta.json")

    monkeypatch.setattr(Dataset, "save_to_disk", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        T.tokenize_records(records, byt5, cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []  # neither the entry nor the tmp dir survives
    monkeypatch.setattr(Dataset, "save_to_disk", original)

    # A killed run (no chance to clean up) leaves <key>.tmp-<dead pid>: never trusted, removed.
    key = T.tokenize_records(records, byt5, use_cache=False).key
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{key}.tmp-{int(dead.stdout)}"
    (stale / "data").mkdir(parents=True)
    (stale / "meta.json").write_text("{broken")
    out = T.tokenize_records(records, byt5, cache_dir=tmp_path)
    assert not out.from_cache and out.dataset.num_rows == 6
    assert sorted(os.listdir(tmp_path)) == [key]

    # An entry without meta.json (not written by us) is rebuilt, not trusted.
    (tmp_path / key / "meta.json").unlink()
    again = T.tokenize_records(records, byt5, cache_dir=tmp_path)
    assert not again.from_cache and (tmp_path / key / "meta.json").is_file()


def test_cache_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTABILITY_CACHE", str(tmp_path / "c"))
    assert T.cache_root() == tmp_path / "c"
    monkeypatch.delenv("PROMPTABILITY_CACHE")
    assert T.cache_root() == Path.home() / ".cache" / "promptability"


# --- mixing -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_data(byt5, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return T.tokenize_records(sized_records({"a": 30, "b": 10, "c": 5}), byt5, cache_dir=cache).dataset


def test_mix_caps_and_proportions(mixed_data):
    m = B.mix(mixed_data, cap=8, seed=0)
    assert m.original_counts == {"a": 30, "b": 10, "c": 5}
    assert m.counts == {"a": 8, "b": 8, "c": 5}
    assert task_counts(m.dataset) == m.counts and m.dataset.num_rows == 21
    fractions = {t: n / 21 for t, n in task_counts(m.dataset).items()}
    assert fractions == pytest.approx({"a": 8 / 21, "b": 8 / 21, "c": 5 / 21})
    keys = list(zip(m.dataset["task"], m.dataset["index"], strict=True))
    assert len(set(keys)) == 21  # a subset, without repeats
    assert {i for t, i in keys if t == "c"} == set(range(5))
    again = B.mix(mixed_data, cap=8, seed=0)
    assert again.dataset["index"] == m.dataset["index"] and again.dataset["task"] == m.dataset["task"]
    other = B.mix(mixed_data, cap=8, seed=1)
    assert other.counts == m.counts
    assert list(zip(other.dataset["task"], other.dataset["index"], strict=True)) != keys
    assert m.dataset["task"][:10] != sorted(m.dataset["task"][:10]) or m.dataset["task"] != sorted(m.dataset["task"])
    full = B.mix([mixed_data, mixed_data.select(range(5))], cap=None, seed=0)
    assert full.counts == {"a": 35, "b": 10, "c": 5}
    with pytest.raises(ValueError, match="cap"):
        B.mix(mixed_data, cap=0)


def test_mix_caps_per_dataset(mixed_data):
    """A dataset's templates share the cap (cap // n each); the draw equals per-template capping at that size."""
    per_dataset = B.mix(mixed_data, cap=12, seed=3, dataset_of={"a": "D", "b": "D"})  # c: its own dataset
    assert per_dataset.counts == {"a": 6, "b": 6, "c": 5}
    naive = B.mix(mixed_data, cap=6, seed=3)  # the same limits, template by template
    assert per_dataset.dataset[:] == naive.dataset[:]
    assert B.mix(mixed_data, cap=12, seed=3).counts == {"a": 12, "b": 10, "c": 5}  # per template: the reference's
    assert B.mix(mixed_data, cap=12, seed=3, dataset_of=dict.fromkeys("abc", "D")).counts == {"a": 4, "b": 4, "c": 4}
    assert B.mix(mixed_data, cap=2, seed=3, dataset_of=dict.fromkeys("abc", "D")).counts == {"a": 1, "b": 1, "c": 1}


def test_template_datasets_and_caps_of_the_t0_mixture(tmp_path):
    from promptability.data import registry
    from promptability.data.caps import template_caps, template_datasets

    train = registry.train_templates()
    datasets = template_datasets(train)
    assert datasets["adversarial_qa_dbert_based_on"] == "adversarial_qa/dbert"
    assert datasets["adversarial_qa_dbidaf_based_on"] == "adversarial_qa/dbidaf"  # a subset is a dataset, as in T0
    sizes = {d: list(datasets.values()).count(d) for d in set(datasets.values())}
    assert len(sizes) == 38 and sizes["trec"] == 18 and sizes["adversarial_qa/dbert"] == 5  # T0's 38 datasets
    caps = template_caps(train, 500_000, "dataset", datasets)
    assert caps["trec_what_category_best_describe"] == 500_000 // 18 == 27_777
    assert {d: sum(caps[t] for t in train if datasets[t] == d) for d in sizes} == {
        d: 500_000 // n * n for d, n in sizes.items()}  # fmt: skip
    assert template_caps(train, 500_000, "template", datasets) == dict.fromkeys(train, 500_000)
    assert template_caps(["x"], None, "dataset") == {"x": None}
    with pytest.raises(ValueError, match="cap_per must be one of template, dataset, got 'task'"):
        template_caps(train, 10, "task")
    # A suite's templates name their dataset in suite.json; any other template is its own dataset.
    meta = {"format": "promptability-suite/1", "templates": {t: {"dataset": "reviews"} for t in ("s_1", "s_2")}}
    (tmp_path / "suite.json").write_text(json.dumps(meta))
    assert template_datasets(["s_1", "s_2", "mine"], tmp_path) == {"s_1": "suite:reviews", "s_2": "suite:reviews",
                                                                   "mine": "mine"}  # fmt: skip


# --- sampler ----------------------------------------------------------------------------------------


def test_sampler_deterministic_covers_epoch_and_resumes():
    lengths = np.random.default_rng(0).integers(1, 100, size=(103, 2))
    run = B.LengthGroupedBatchSampler(lengths, 8, seed=3, megabatch_mult=4)
    assert len(run) == 13
    epoch0, epoch1 = list(run), list(run)
    assert len(epoch0) == 13 and [len(b) for b in epoch0[:-1]] == [8] * 12 and len(epoch0[-1]) == 7
    assert sorted(i for b in epoch0 for i in b) == list(range(103))
    assert epoch0 != epoch1 and run.state_dict() == {"epoch": 2, "batch_index": 0, "seed": 3}
    assert list(B.LengthGroupedBatchSampler(lengths, 8, seed=3, megabatch_mult=4)) == epoch0
    assert list(B.LengthGroupedBatchSampler(lengths, 8, seed=4, megabatch_mult=4)) != epoch0
    # Each 32-example chunk is sorted longest first before being cut into batches.
    for b in epoch0:
        assert list(lengths[b, 0]) == sorted(lengths[b, 0], reverse=True)

    first = B.LengthGroupedBatchSampler(lengths, 8, seed=3, megabatch_mult=4)
    it = iter(first)
    seen = [next(it) for _ in range(5)]
    state = first.state_dict()
    assert state == {"epoch": 0, "batch_index": 5, "seed": 3}
    resumed = B.LengthGroupedBatchSampler(lengths, 8, seed=99, megabatch_mult=4)
    resumed.load_state_dict(state)
    assert seen + list(resumed) == epoch0 and list(resumed) == epoch1
    assert first.state_dict(batch_index=2)["batch_index"] == 2


def test_sampler_replicas_slice_global_batches():
    lengths = np.arange(50)
    single = list(B.LengthGroupedBatchSampler(lengths, 8, seed=1, megabatch_mult=2))
    ranks = [
        list(B.LengthGroupedBatchSampler(lengths, 8, seed=1, megabatch_mult=2, num_replicas=4, rank=r))
        for r in range(4)
    ]
    assert all(len(r) == len(single) == 7 for r in ranks)
    for i, batch in enumerate(single[:-1]):
        assert [len(r[i]) for r in ranks] == [2, 2, 2, 2]
        assert sum((r[i] for r in ranks), []) == batch
    # The last global batch (2 examples) is topped up to 4 so that every rank gets one.
    assert [len(r[-1]) for r in ranks] == [1, 1, 1, 1] and sum((r[-1] for r in ranks), [])[:2] == single[-1]
    with pytest.raises(ValueError, match="divisible"):
        B.LengthGroupedBatchSampler(lengths, 6, num_replicas=4, rank=0)
    with pytest.raises(ValueError, match="rank"):
        B.LengthGroupedBatchSampler(lengths, 8, num_replicas=2, rank=2)


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[i : i + batch_size].tolist() for i in range(0, n, batch_size)]


def test_length_grouping_pads_less(mixed_data):
    sampler = B.LengthGroupedBatchSampler(B.lengths_of(mixed_data), 5, seed=0)
    grouped = padding_fraction(iterate_batches(mixed_data, sampler, PAD))
    rand = padding_fraction(iterate_batches(mixed_data, random_batches(45, 5), PAD))
    assert grouped < 0.5 * rand
    # The documented DataLoader use gives the same batches (HF datasets fetch rows via __getitems__).
    loader = DataLoader(
        mixed_data,
        batch_sampler=B.LengthGroupedBatchSampler(B.lengths_of(mixed_data), 5, seed=0),
        collate_fn=partial(B.collate, pad_id=PAD),
    )
    direct = list(iterate_batches(mixed_data, B.LengthGroupedBatchSampler(B.lengths_of(mixed_data), 5), PAD))
    assert len(direct) == 9
    assert all(torch.equal(x["labels"], y["labels"]) for x, y in zip(loader, direct, strict=True))


def test_length_grouping_pads_less_on_p3_samples(byt5, tmp_path):
    records = p3_records()
    out = T.tokenize_records(records, byt5, cache_dir=tmp_path)
    ds = out.dataset
    assert ds.num_rows == len(records) == sum(out.stats.per_task.values())
    assert out.stats.per_task == {
        "adversarial_qa_dbert_based_on": 56,
        "hellaswag_complete_first_then_score_eval": 84,
        "hellaswag_if_begins_how_continues_score_eval": 84,
        "openbookqa_main_choices": 56,
        "story_cloze_2016_Story_Continuation_and_Options_score_eval": 56,
    }
    assert out.stats.sources_truncated == 56  # ByT5 counts bytes: long contexts exceed 768
    assert out.stats.sources_truncated == sum(len(r["source"].encode()) + 1 > 768 for r in records)
    assert out.stats.targets_truncated == sum(len(r["target"].encode()) + 1 > 192 for r in records)
    assert all(r["input_ids"][-1] == EOS and r["input_ids"][-2] != EOS for r in ds)
    sampler = B.LengthGroupedBatchSampler(B.lengths_of(ds), 16, seed=0)
    grouped = padding_fraction(iterate_batches(ds, sampler, PAD))
    rand = padding_fraction(iterate_batches(ds, random_batches(ds.num_rows, 16), PAD))
    assert grouped < 0.5 * rand, (grouped, rand)


# --- collation --------------------------------------------------------------------------------------


def test_collate_shapes_and_padding():
    rows = [{"input_ids": [5, 6, 1], "labels": [7, 1]}, {"input_ids": [5, 1], "labels": [8, 9, 10, 1]}]
    b = B.collate(rows, pad_id=PAD)
    assert b["input_ids"].tolist() == [[5, 6, 1], [5, 1, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["labels"].tolist() == [[7, 1, 0, 0], [8, 9, 10, 1]]
    assert b["decoder_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert all(t.dtype == torch.long for t in b.values())
    as_columns = B.collate({"input_ids": [[5, 6, 1], [5, 1]], "labels": [[7, 1], [8, 9, 10, 1]]}, pad_id=PAD)
    assert all(torch.equal(as_columns[k], b[k]) for k in b)
    assert padding_fraction([b]) == pytest.approx(3 / 14)


def test_collate_eval_and_sorted_eval_batches(byt5, tmp_path):
    rows = [
        {"task": "t", "index": 0, "input_ids": [5, 1], "choice_ids": [[7, 1], [8, 9, 1]], "label": 1},
        {
            "task": "t",
            "index": 1,
            "input_ids": [5, 6, 7, 1],
            "choice_ids": [[7, 1], [8, 1], [9, 9, 9, 9, 1]],
            "label": 2,
        },
    ]
    b = B.collate_eval(rows, pad_id=PAD)
    assert b["input_ids"].shape == (2, 4) and b["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert b["choice_ids"].shape == (2, 3, 5) and b["choice_mask"].shape == (2, 3, 5)
    assert b["choice_ids"][0].tolist() == [[7, 1, 0, 0, 0], [8, 9, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert b["choice_mask"][1].sum(-1).tolist() == [2, 2, 5] and b["choice_mask"][0].sum(-1).tolist() == [2, 3, 0]
    assert b["num_choices"].tolist() == [2, 3] and b["label"].tolist() == [1, 2] and b["index"].tolist() == [0, 1]

    records = [rec("q", "s" * (i * 3 % 11 + 1), "a", ["a", "bb", "ccc"][: 2 + i % 2], 1) for i in range(10)]
    records += [rec("other", "zz", "a", ["a", "b"], 0)]
    ds = T.tokenize_records(records, byt5, cache_dir=tmp_path).dataset
    batches = list(B.eval_batches(ds, 4, PAD, task="q"))
    assert [len(x["index"]) for x in batches] == [4, 4, 2]
    order = torch.cat([x["index"] for x in batches]).tolist()
    assert sorted(order) == list(range(10))
    src_lens = [len(records[i]["source"]) for i in order]
    assert src_lens == sorted(src_lens, reverse=True)
    for x in batches:
        for j, i in enumerate(x["index"].tolist()):
            assert x["num_choices"][j] == 2 + i % 2 and x["attention_mask"][j].sum() == len(records[i]["source"]) + 1
    assert sum(len(x["index"]) for x in B.eval_batches(ds, 4, PAD)) == 11
    with pytest.raises(KeyError, match="nope"):
        next(B.eval_batches(ds, 4, PAD, task="nope"))


# --- per-task views ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_data(byt5, tmp_path_factory):
    cache = tmp_path_factory.mktemp("tasks")
    return T.tokenize_records(sized_records({"big": 60, "small": 20}), byt5, cache_dir=cache).dataset


def rows_of(batch) -> list[tuple[int, ...]]:
    return [tuple(r[m.bool()].tolist()) for r, m in zip(batch["input_ids"], batch["attention_mask"], strict=True)]


def test_fewshot_batch_is_fixed(task_data):
    from benchmarks.fewshot import fewshot_batch  # the few-shot benchmark's fixed batch

    a = fewshot_batch(task_data, "small", 4, pad_id=PAD, seed=0)
    b = fewshot_batch(task_data, "small", 4, pad_id=PAD, seed=0)
    c = fewshot_batch(task_data, "small", 4, pad_id=PAD, seed=1)
    assert a["input_ids"].shape[0] == 4 and torch.equal(a["input_ids"], b["input_ids"])
    assert rows_of(a) != rows_of(c)
    assert all(bytes(i - 3 for i in r[:5]) == b"small" for r in rows_of(a))
    with pytest.raises(ValueError, match="has 20"):
        fewshot_batch(task_data, "small", 21, pad_id=PAD)


def test_length_groups_fill_a_token_budget_longest_first():
    # Sorted by length: rows 1, 4 (30), 3 (12), 2 (10), 0 (5), 5 (2); a third 30 would pad to 90 > 64.
    assert B.length_groups([5, 30, 10, 12, 30, 2], 64) == [[1, 4], [3, 2, 0, 5]]
    assert B.length_groups([100, 3], 50) == [[0], [1]]  # a row over the budget runs alone
    assert B.length_groups([], 8) == []
    with pytest.raises(ValueError, match="max_tokens"):
        B.length_groups([1], 0)


def test_split_batch_keeps_every_row_and_cuts_each_micro_batch_to_its_own_longest():
    rows = [{"input_ids": list(range(1, 1 + n)), "labels": list(range(1, 1 + t))} for n, t in
            [(2, 1), (9, 3), (3, 2), (8, 1), (1, 1)]]  # fmt: skip
    batch = B.collate(rows, pad_id=0)
    micro = B.split_batch(batch, 24)
    assert [len(m["input_ids"]) for m in micro] == [2, 3]  # lengths 12 and 9; then 5, 3 and 2 (3 x 5 = 15)
    seen = []
    for m in micro:
        assert m["input_ids"].shape[1] == int(m["attention_mask"].sum(1).max())
        assert m["labels"].shape[1] == int(m["decoder_attention_mask"].sum(1).max())
        for ids, mask, labels, lmask in zip(
            m["input_ids"], m["attention_mask"], m["labels"], m["decoder_attention_mask"]
        ):
            seen.append((ids[mask.bool()].tolist(), labels[lmask.bool()].tolist()))
    assert sorted(seen) == sorted((r["input_ids"], r["labels"]) for r in rows)
    with pytest.raises(ValueError, match="right-padded"):  # left padding would lose real tokens to the cut
        B.split_batch({**batch, "attention_mask": batch["attention_mask"].flip(1)}, 24)
