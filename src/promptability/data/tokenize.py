"""Tokenize records once into a memory-mapped Arrow cache.

``tokenize_records`` turns prompted records (see ``schema.py``) into a Hugging
Face ``datasets.Dataset`` with the columns

* ``task`` (str), ``index`` (int: position of the record within its task, in
  input order; evaluation uses it to put scores back after length sorting),
* ``input_ids`` (source ids, at most ``max_source_len`` including the EOS; no EOS with ``source_eos=False``),
* ``labels`` (target ids, at most ``max_target_len`` including the EOS),
* ``choice_ids`` (one id list per choice, each ending with EOS and truncated to
  ``max_target_len``; ``[]`` for training-only records),
* ``label`` (int, -1 without choices),
* ``source_len`` / ``target_len`` (ints, so samplers need not read the id lists).

Every id list ends with exactly one ``tokenizer.eos_token_id``: we tokenize
without special tokens, strip any trailing EOS the text itself produced,
truncate to ``max_len - 1`` and append the EOS ourselves, so truncation can
never cut the EOS off (T5 tokenizers would append it on ``add_special_tokens``).
``source_eos=False`` leaves the source without it (up to ``max_source_len`` text ids): the layout
official T0 checkpoints were trained with, while the paper's code, and ours, append it.

``continuation=True`` is the decoder-only layout, where the target continues the
source in one sequence (as lm-evaluation-harness scores): no id list gets an EOS
(an end-of-text token between question and answer makes the answer wildly
unlikely, and one after a short answer mid-text dominates its mean score), the
source is cut from the left (the question sits at the end), and each target or
choice is tokenized as the continuation of the text before it, with the tokenizer's own BOS (if it adds
one) in front of the source: the rules of ``data.continuation`` (``joined=False``: the earlier ones).

The result is cached under ``cache_root()/tokenized/<key>`` where the key
hashes the data (record content, or the given files' paths and contents), the
tokenizer (class, name, size, hash of its serialized vocabulary) and the
lengths. A cache entry is written to ``<key>.tmp-<pid>`` and only renamed to
``<key>`` once complete (``os.replace``), so an interrupted run leaves nothing
a later run trusts; tmp directories of gone processes are removed (``io.remove_stale``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from datasets import Dataset, Features, List, Value, load_from_disk
from datasets.exceptions import DatasetGenerationError
from tqdm.auto import tqdm

from promptability.data.continuation import encode_pairs, encode_texts, regroup, special_prefix
from promptability.data.fingerprint import files_fingerprint, records_fingerprint, sha256_hex, tokenizer_fingerprint
from promptability.data.schema import DataError, Example, validate_all
from promptability.io import remove_stale

logger = logging.getLogger(__name__)

# Bump when the columns or the tokenization rule change: old caches become misses.
FORMAT_VERSION = 1
MAX_SOURCE_LEN = 768
MAX_TARGET_LEN = 192

FEATURES = Features({
    "task": Value("string"), "index": Value("int64"), "input_ids": List(Value("int32")), "labels": List(Value("int32")),
    "choice_ids": List(List(Value("int32"))), "label": Value("int64"), "source_len": Value("int32"),
    "target_len": Value("int32"),
})  # fmt: skip

Records = Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]]


@dataclass
class TokenizeStats:
    num_examples: int = 0
    per_task: dict[str, int] = field(default_factory=dict)
    sources_truncated: int = 0
    targets_truncated: int = 0
    num_choices: int = 0
    choices_truncated: int = 0
    max_source_len: int = MAX_SOURCE_LEN
    max_target_len: int = MAX_TARGET_LEN

    def summary(self) -> str:
        return (
            f"{self.num_examples} examples in {len(self.per_task)} tasks: "
            f"{self.sources_truncated} sources truncated to {self.max_source_len} tokens, "
            f"{self.targets_truncated} targets truncated to {self.max_target_len} tokens, "
            f"{self.choices_truncated}/{self.num_choices} choices truncated"
        )


@dataclass
class Tokenized:
    dataset: Dataset
    stats: TokenizeStats
    key: str
    path: Path | None  # the cache entry; None when caching is off
    from_cache: bool


def cache_root() -> Path:
    """``$PROMPTABILITY_CACHE`` or ``~/.cache/promptability``."""
    return Path(os.environ.get("PROMPTABILITY_CACHE") or "~/.cache/promptability").expanduser()


def cache_key(
    data_fp: str,
    tokenizer_fp: dict[str, Any],
    max_source_len: int,
    max_target_len: int,
    continuation: bool = False,
    source_eos: bool = True,
    joined: bool = True,
) -> str:
    payload = {
        "format": FORMAT_VERSION,
        "data": data_fp,
        "tokenizer": tokenizer_fp,
        "max_source_len": max_source_len,
        "max_target_len": max_target_len,
    }
    if continuation:  # only when set, so that the seq2seq keys of existing caches stay valid
        payload["continuation"] = "joined" if joined else True  # True: the rule before data.continuation
    if not source_eos:  # likewise
        payload["source_eos"] = False
    return sha256_hex(json.dumps(payload, sort_keys=True))[:32]


def _text_end(ids: list[int], eos_id: int) -> int:
    """The length of ``ids`` without its trailing EOS ids."""
    end = len(ids)
    while end and ids[end - 1] == eos_id:
        end -= 1
    return end


def source_ids_without_eos(ids: list[int], max_len: int, eos_id: int) -> tuple[list[int], bool]:
    """Seq2seq source ids with no final EOS: trailing EOS stripped, the first ``max_len`` ids kept."""
    # The first max_len ids, trailing EOS stripped (also where the cut lands just after an EOS inside the text).
    return list(ids[: _text_end(ids[:max_len], eos_id)]), _text_end(ids, eos_id) > max_len


def finish_ids(ids: list[int], max_len: int, eos_id: int) -> tuple[list[int], bool]:
    """Truncates to ``max_len`` including one final EOS; returns (ids, was_truncated)."""
    kept, truncated = source_ids_without_eos(ids, max_len - 1, eos_id)
    return kept + [eos_id], truncated


def continuation_ids(ids: list[int], max_len: int, eos_id: int, keep_end: bool) -> tuple[list[int], bool]:
    """Decoder-only ids: trailing EOS stripped and none added; the last (sources) or first ``max_len`` ids kept.

    An answer that is all EOS (or empty) stays one EOS, so that every target has a token to score.
    """
    end = _text_end(ids, eos_id)
    if end == 0:
        return [eos_id], False
    kept = ids[max(0, end - max_len) : end] if keep_end else ids[: min(end, max_len)]
    return list(kept), end > max_len


def continuation_source_ids(ids: list[int], max_len: int, eos_id: int, prefix: list[int]) -> tuple[list[int], bool]:
    """A decoder-only source: ``prefix`` (the tokenizer's BOS, ``special_prefix``) first however long the
    source, then its last ids within ``max_len`` in all; the one layout training, scoring and generation share."""
    kept, cut = continuation_ids(ids, max_len - len(prefix), eos_id, keep_end=True)
    return prefix + kept, cut


def _rows(
    records: Iterable[Mapping[str, Any]],
    tokenizer: Any,
    stats: TokenizeStats,
    chunk_size: int,
    progress: bool = True,
    continuation: bool = False,
    source_eos: bool = True,
    joined: bool = True,
) -> Iterator[dict[str, Any]]:
    eos = tokenizer.eos_token_id
    prefix = special_prefix(tokenizer) if continuation and joined else []

    def finish(ids: list[int], max_len: int, is_source: bool = False) -> tuple[list[int], bool]:
        if continuation and is_source:
            return continuation_source_ids(ids, max_len, eos, prefix)
        if continuation:
            return continuation_ids(ids, max_len, eos, keep_end=False)
        if is_source and not source_eos:
            return source_ids_without_eos(ids, max_len, eos)
        return finish_ids(ids, max_len, eos)

    positions: Counter[str] = Counter()
    total = len(cast(Sized, records)) if hasattr(records, "__len__") else None
    bar = tqdm(validate_all(records), total=total, desc="tokenizing", unit="ex", mininterval=2.0, disable=not progress)

    def flush(chunk: list[Example]) -> Iterator[dict[str, Any]]:
        answers = [[r["target"], *r["choices"]] for r in chunk]  # each record's target, then its choices
        if continuation:
            sources, answer_ids = encode_pairs(tokenizer, [r["source"] for r in chunk], answers, joined)
        else:
            sources = encode_texts(tokenizer, [r["source"] for r in chunk])
            answer_ids = regroup(encode_texts(tokenizer, [a for group in answers for a in group]), answers)
        for record, src, (tgt, *choices) in zip(chunk, sources, answer_ids, strict=True):
            input_ids, cut_src = finish(src, stats.max_source_len, is_source=True)
            labels, cut_tgt = finish(tgt, stats.max_target_len)
            finished = [finish(ids, stats.max_target_len) for ids in choices]
            choice_ids = [ids for ids, _ in finished]
            stats.choices_truncated += sum(cut for _, cut in finished)
            stats.num_choices += len(choice_ids)
            stats.sources_truncated += cut_src
            stats.targets_truncated += cut_tgt
            task = record["task"]
            yield {
                "task": task,
                "index": positions[task],
                "input_ids": input_ids,
                "labels": labels,
                "choice_ids": choice_ids,
                "label": record["label"],
                "source_len": len(input_ids),
                "target_len": len(labels),
            }
            positions[task] += 1
            stats.num_examples += 1

    validated = iter(bar)
    while chunk := list(itertools.islice(validated, chunk_size)):
        yield from flush(chunk)
    stats.per_task = dict(sorted(positions.items()))


def _read_entry(path: Path, *, from_cache: bool) -> Tokenized | None:
    """The cache entry ``path`` (named by its key) when whole (its meta.json is written last), else None."""
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    return Tokenized(load_from_disk(str(path / "data")), TokenizeStats(**meta["stats"]), path.name, path, from_cache)


def _write_entry(
    final: Path,
    rows: Callable[[], Iterator[dict[str, Any]]],
    stats: TokenizeStats,
    data_fp: str,
    tokenizer: Any,
    files: Any,
) -> None:
    """Builds the cache entry ``final`` in ``<key>.tmp-<pid>`` and renames it into place once complete."""
    key = final.name
    tmp = final.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        try:
            built = Dataset.from_generator(rows, features=FEATURES, cache_dir=str(tmp / "build"), fingerprint=key)
        except DatasetGenerationError as err:
            if isinstance(err.__cause__, DataError):  # the reader's error names the file and row: show it
                raise err.__cause__ from None
            raise
        except ValueError:
            if stats.num_examples == 0:  # datasets refuses an empty split with an obscure message
                raise ValueError(f"no records to tokenize (files={files!r})") from None
            raise
        built.save_to_disk(str(tmp / "data"))
        del built
        shutil.rmtree(tmp / "build", ignore_errors=True)
        meta = {"key": key, "format": FORMAT_VERSION, "data": data_fp, "stats": asdict(stats),
                "tokenizer": tokenizer_fingerprint(tokenizer)}  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:
            if _read_entry(final, from_cache=False) is None:
                raise
            # Another process finished the same entry first: theirs is as good as ours.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def tokenize_records(
    records: Records,
    tokenizer: Any,
    *,
    max_source_len: int = MAX_SOURCE_LEN,
    max_target_len: int = MAX_TARGET_LEN,
    cache_dir: str | os.PathLike | None = None,
    files: Sequence[str | os.PathLike] | None = None,
    use_cache: bool = True,
    chunk_size: int = 1000,
    progress: bool = True,
    continuation: bool = False,
    source_eos: bool = True,
    joined: bool = True,
) -> Tokenized:
    """Tokenizes records (or reads them from the cache); see the module docstring.

    ``records`` is an iterable of records or a zero-argument callable returning
    one. With ``files`` the cache key uses those files' paths and contents
    and ``records`` is only consumed on a cache miss (pass a callable
    to read lazily); otherwise the records' content is hashed. ``continuation``: the
    decoder-only layout (see the module docstring); pass ``model.is_causal``. ``source_eos=False``: no EOS
    after the source (seq2seq only; the decoder-only layout has none anyway). ``joined=False``: the
    decoder-only layout's earlier tokenization rule (``data.continuation``), to reproduce earlier numbers.
    """
    if getattr(tokenizer, "eos_token_id", None) is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no eos_token_id; T5-family tokenizers define '</s>'"
        )
    for name, value in (("max_source_len", max_source_len), ("max_target_len", max_target_len)):
        if not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2 (room for one token and the EOS), got {value!r}")

    stats = TokenizeStats(max_source_len=max_source_len, max_target_len=max_target_len)
    get_records: Callable[[], Iterable[Mapping[str, Any]]]
    if files is not None:
        data_fp = "files:" + files_fingerprint(files)
        get_records = records if callable(records) else (lambda: records)
    else:
        materialised = list(records() if callable(records) else records)
        data_fp = "records:" + records_fingerprint(materialised)
        get_records = lambda: materialised  # noqa: E731
    key = cache_key(data_fp, tokenizer_fingerprint(tokenizer), max_source_len, max_target_len, continuation, source_eos,
                    joined)  # fmt: skip

    def rows() -> Iterator[dict[str, Any]]:
        return _rows(get_records(), tokenizer, stats, chunk_size, progress, continuation, source_eos, joined)

    if not use_cache:
        dataset = Dataset.from_list(list(rows()), features=FEATURES)
        logger.info("tokenized %s", stats.summary())
        return Tokenized(dataset, stats, key, None, False)

    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "tokenized"
    root.mkdir(parents=True, exist_ok=True)
    with _datasets_bars(progress):
        return _cached(root / key, rows, stats, data_fp, tokenizer, files)


@contextmanager
def _datasets_bars(show: bool) -> Iterator[None]:
    """datasets' own bars (building, saving and loading a cache entry) follow ``progress`` inside the block."""
    import datasets

    if show or datasets.are_progress_bars_disabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


def _cached(final: Path, rows: Callable[[], Iterator[dict[str, Any]]], stats: TokenizeStats, data_fp: str,
            tokenizer: Any, files: Any) -> Tokenized:  # fmt: skip
    """The cache entry ``final`` (named by its key) when whole, else built from ``rows`` first."""
    for stale in remove_stale(final.parent.glob("*.tmp-*")):  # what killed runs left, whatever their key
        logger.info("removed stale partial cache %s", stale)
    if final.exists():
        entry = _read_entry(final, from_cache=True)
        if entry is not None:
            logger.info("tokenized cache hit %s: %s", final, entry.stats.summary())
            return entry
        logger.warning("cache entry %s is incomplete (no meta.json); rebuilding it", final)
        shutil.rmtree(final)

    _write_entry(final, rows, stats, data_fp, tokenizer, files)
    entry = _read_entry(final, from_cache=False)
    assert entry is not None
    logger.info("tokenized %s (cached at %s)", entry.stats.summary(), final)
    return entry
