"""Rank classification: score every answer choice by its log-likelihood given the prompted source.

As in the paper's implementation: the source and each choice are tokenized
with EOS appended (``source_eos=False``: none after the source, the layout of
official T0 checkpoints); a choice's score is the mean log-probability of its tokens
(EOS included), or the sum with ``score="sum"``; the prediction is the
highest-scoring choice.

Each source is encoded once; its encoder states are shared by all of its
choices, which are decoded together in one batch. Each decoder layer projects
its cross-attention keys and values once per source (a precomputed
cross-attention cache, indexed per choice), and the LM head runs on the real
choice tokens only. Padded choice slots (an instance with fewer choices than
the batch's widest) are never decoded.

Decoder-only models (``model.is_causal``) are scored by
:mod:`promptability.eval.rank_causal`: each source runs once with a key/value
cache that its choices share.

A long evaluation keeps each task's rows in ``OUT/partial/`` as soon as the task is
scored (``PartialResults``), so an interrupted run resumes with the tasks left; the
finished run files replace them, and a finished result is never replaced by an empty one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, EncoderDecoderCache

from promptability.data.batching import eval_batches
from promptability.data.schema import DataError, Example
from promptability.data.tokenize import MAX_SOURCE_LEN, MAX_TARGET_LEN, tokenize_records
from promptability.eval.runs import ACCURACY_FILE, PREDICTIONS_FILE, RUN_FILE, RunError
from promptability.io import safe_name, settings_folder, write_json_atomic, write_jsonl_atomic, write_text_atomic

SCORES = ("mean", "sum")


def precision_of(autocast: torch.dtype | None) -> str:
    """The precision name run.json records for an ``evaluate(autocast=...)``: "fp32" (none), "bf16", ..."""
    names = {torch.bfloat16: "bf16", torch.float16: "fp16"}
    return "fp32" if autocast is None else names.get(autocast, str(autocast).removeprefix("torch."))


def score_choices(model: Any, batch: dict[str, Any], score: str = "mean") -> torch.Tensor:
    """Scores [B, C_max] for a ``collate_eval`` batch; slots past an instance's choices are -inf."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    device = next(model.parameters()).device
    choice_ids = batch["choice_ids"].to(device)
    choice_mask = batch["choice_mask"].to(device)
    num_choices = batch["num_choices"].to(device)
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    b, c, _ = choice_ids.shape
    real = torch.arange(c, device=device)[None, :] < num_choices[:, None]  # [B, C]
    source_of = torch.arange(b, device=device)[:, None].expand(b, c)[real]  # which source each real choice reads
    labels, mask = choice_ids[real], choice_mask[real]  # [N, T]
    if model.is_causal:
        from promptability.eval.rank_causal import choice_token_logprobs_causal

        width = int(mask.sum(-1).max())  # no choice token is run past the longest real choice
        labels, mask = labels[:, :width], mask[:, :width]
        token_logp = choice_token_logprobs_causal(model, input_ids, attention_mask, source_of, labels, mask)
    else:
        hidden, enc_mask = model.encode(input_ids, attention_mask)
        token_logp = choice_token_logprobs(model, hidden, enc_mask, source_of, labels, mask)
    totals = token_logp.sum(-1)
    values = totals / mask.sum(-1).clamp(min=1) if score == "mean" else totals
    scores = torch.full((b, c), float("-inf"), device=device)
    scores[real] = values
    return scores


def choice_token_logprobs(
    model: Any,
    hidden: torch.Tensor,
    encoder_mask: torch.Tensor,
    source_of: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """[N, T] log-probability of each choice token (0 at padding), teacher-forced, choice i reading source ``source_of[i]``.

    Two things a per-choice forward repeats are done once: each decoder layer's cross-attention keys and
    values are projected from the B sources' encoder states (not from N per-choice copies of them) and handed
    to the decoder as a precomputed cross-attention cache; and the LM head runs on the real target positions
    only (not on padding). A deep prompt's cross-attention prefix enters after the cache, as in any forward.
    """
    t5 = model.transformer
    decoder = t5.get_decoder()
    cache = EncoderDecoderCache(DynamicCache(config=decoder.config), _cross_attention_cache(decoder, hidden, source_of))
    decoder_ids = t5.prepare_decoder_input_ids_from_labels(labels=labels.masked_fill(mask == 0, -100))
    states = decoder(
        input_ids=decoder_ids,
        attention_mask=mask,
        # Read only for its shape and to switch cross-attention on: every layer finds its keys in the cache.
        encoder_hidden_states=hidden[source_of],
        encoder_attention_mask=encoder_mask[source_of],
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    scored = mask.bool()
    picked = states[scored]  # [M, d_model]: the real target positions only
    if t5.config.scale_decoder_outputs:  # T5's own scaling before its (tied) head
        picked = picked * (t5.config.d_model**-0.5)
    logp = torch.log_softmax(t5.lm_head(picked).float(), dim=-1).gather(-1, labels[scored].unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(labels.shape, dtype=logp.dtype, device=logp.device)
    out[scored] = logp
    return out


def _cross_attention_cache(decoder: Any, hidden: torch.Tensor, source_of: torch.Tensor) -> DynamicCache:
    """Each decoder layer's cross-attention keys/values, projected once per source, then indexed per choice."""
    b, s, _ = hidden.shape
    layers = []
    for block in decoder.block:
        attention = block.layer[1].EncDecAttention
        shape = (b, s, attention.n_heads, attention.key_value_proj_dim)
        keys = attention.k(hidden).view(shape).transpose(1, 2)
        values = attention.v(hidden).view(shape).transpose(1, 2)
        layers.append((keys[source_of], values[source_of]))
    return DynamicCache(layers)


# no_grad, not inference_mode: under inference_mode autocast's cast cache is off, so every weight that requires grad
# (a 0-shot model's) was cast again on every call, about a twentieth of a bf16 evaluation of SmolLM2-135M; the cache
# keeps one low-precision copy of those weights for the evaluation. Frozen weights are cast per call either way.
@torch.no_grad()
def evaluate(
    model: Any,
    records: Sequence[Example],
    batch_size: int = 32,
    score: str = "mean",
    max_source_len: int = MAX_SOURCE_LEN,
    max_target_len: int = MAX_TARGET_LEN,
    progress: bool = True,
    autocast: torch.dtype | None = None,
    on_task: Callable[[str, list[dict[str, Any]]], None] | None = None,
    source_eos: bool = True,
) -> list[dict[str, Any]]:
    """Rank-classifies ``records`` (each with choices and label) and returns one row per instance.

    Rows: ``task``, ``index`` (position of the instance in its task, in input order), ``scores``,
    ``prediction``, ``label``; sorted by task, then index. ``on_task(task, rows)`` is called as
    soon as every instance of a task is scored (rows sorted by index), e.g. to keep them on disk.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    records = list(records)
    for i, r in enumerate(records):
        if not r.get("choices"):
            raise DataError(
                f"record {i} of task {r.get('task')!r} has no choices: rank classification needs them "
                "(a training template? name the held-out ones with --tasks)"
            )
    if not records:
        return []
    tokenized = tokenize_records(
        records,
        model.tokenizer,
        max_source_len=max_source_len,
        max_target_len=max_target_len,
        use_cache=False,
        progress=progress,
        continuation=model.is_causal,
        source_eos=source_eos,
    ).dataset
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    cast = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    rows: list[dict[str, Any]] = []
    left = Counter(r["task"] for r in records)
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    bar = tqdm(total=len(records), desc="evaluate", unit="ex", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        with cast:
            for batch in eval_batches(tokenized, batch_size, pad_id=model.pad_token_id):
                scores = score_choices(model, batch, score).float().cpu()
                for i in range(scores.shape[0]):
                    n = int(batch["num_choices"][i])
                    row_scores = scores[i, :n].tolist()
                    task = batch["task"][i]
                    row = {
                        "task": task,
                        "index": int(batch["index"][i]),
                        "scores": row_scores,
                        "prediction": int(max(range(n), key=row_scores.__getitem__)),
                        "label": int(batch["label"][i]),
                    }
                    rows.append(row)
                    if on_task is not None:
                        by_task[task].append(row)
                        left[task] -= 1
                        if not left[task]:
                            on_task(task, sorted(by_task.pop(task), key=lambda r: r["index"]))
                bar.update(scores.shape[0])
                bar.set_postfix(ex_per_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f}")
    finally:
        bar.close()
        model.train(was_training)
    rows.sort(key=lambda r: (r["task"], r["index"]))
    return rows


def accuracies(predictions: Sequence[dict[str, Any]]) -> dict[str, float]:
    hits: dict[str, list[int]] = defaultdict(list)
    for row in predictions:
        hits[row["task"]].append(int(row["prediction"] == row["label"]))
    return {task: sum(h) / len(h) for task, h in sorted(hits.items())}


def summary_text(accuracy: dict[str, float], groups: dict[str, dict[str, Any]] | None = None) -> str:
    """Per-task accuracy, then per-group means (groups from the registry or the data)."""
    lines = [f"{'task':<64} accuracy"]
    lines += [f"{task:<64} {acc * 100:6.2f}" for task, acc in accuracy.items()]
    if groups:
        by_group: dict[str, list[float]] = defaultdict(list)
        for task, acc in accuracy.items():
            by_group[groups.get(task, {}).get("group", "?")].append(acc)
        lines += ["", f"{'group':<24} templates  mean accuracy"]
        lines += [f"{g:<24} {len(v):9d}  {sum(v) / len(v) * 100:6.2f}" for g, v in sorted(by_group.items())]
    return "\n".join(lines) + "\n"


def write_run(out_dir: str | Path, predictions: Sequence[dict[str, Any]], run_info: dict[str, Any]) -> dict[str, float]:
    """Writes predictions.jsonl, accuracy.json, run.json and summary.txt (each atomically); returns accuracies.

    Zero predictions are refused (``RunError``): an empty run is never a result, and must
    not replace a finished one.
    """
    out = Path(out_dir)
    if not predictions:
        finished = [name for name in (PREDICTIONS_FILE, ACCURACY_FILE, RUN_FILE) if (out / name).is_file()]
        kept = f"; the finished result there ({', '.join(finished)}) is kept" if finished else ""
        raise RunError(f"{out}: no predictions to write{kept}")
    out.mkdir(parents=True, exist_ok=True)
    accuracy = accuracies(predictions)
    write_jsonl_atomic(out / "predictions.jsonl", predictions)
    write_json_atomic(out / "accuracy.json", accuracy)
    write_text_atomic(out / "summary.txt", summary_text(accuracy, run_info.get("groups")))
    # run.json last: a run directory with it is complete.
    write_json_atomic(out / "run.json", run_info)
    return accuracy


class PartialResults:
    """Per-task rows of an unfinished evaluation in ``OUT/partial/``, reused only with the same settings.

    ``settings`` is everything the scores depend on (model, data, lengths, score...); a rerun
    with other settings is refused rather than mixed with the old rows.
    """

    def __init__(self, out: str | Path, settings: dict[str, Any]) -> None:
        self.dir = Path(out) / "partial"
        settings_folder(self.dir, settings, RunError, "remove it to start over")
        self.done: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(self.dir.glob("*.jsonl")):
            lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
            self.done[lines[0]["task"]] = lines[1:]

    def save(self, task: str, rows: list[dict[str, Any]]) -> None:
        """Keeps one finished task (a header line with the real name, then its rows)."""
        write_jsonl_atomic(self.dir / f"{safe_name(task)}.jsonl", [{"task": task}, *rows])
        self.done[task] = rows

    def rows(self) -> list[dict[str, Any]]:
        return [row for rows in self.done.values() for row in rows]

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
