"""Pair 1: rank classification with a shared encoder (``score_choices``) vs per-choice re-encoding.

The baseline is how the paper's implementation scores: every (source, choice)
pair is one full encoder-decoder forward, so a source is encoded once per
choice. It sees exactly the same batches (``eval_batches``: the same sources
per batch, longest first) and scores the same way (mean token log-probability,
EOS included). Target: at least 2x examples/s on 4 choices.
"""

from __future__ import annotations

import torch

from benchmarks.common import PAD_ID, Settings, Stat, build_model, synthetic_dataset, time_pair, to_device
from benchmarks.report import Row, fmt_stat

TARGET_4 = 2.0


def score_per_choice(model, batch: dict) -> torch.Tensor:
    """Scores [B, C_max] like ``score_choices``, but with one full forward per (source, choice) pair."""
    device = next(model.parameters()).device
    choice_ids, choice_mask = batch["choice_ids"].to(device), batch["choice_mask"].to(device)
    num_choices = batch["num_choices"].to(device)
    b, c, _ = choice_ids.shape
    real = torch.arange(c, device=device)[None, :] < num_choices[:, None]
    source_of = torch.arange(b, device=device)[:, None].expand(b, c)[real]
    labels, mask = choice_ids[real], choice_mask[real]
    logits = model(
        input_ids=batch["input_ids"].to(device)[source_of],
        attention_mask=batch["attention_mask"].to(device)[source_of],
        labels=labels,
        decoder_attention_mask=mask,
    ).logits
    token_logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask
    values = token_logp.sum(-1) / mask.sum(-1).clamp(min=1)
    scores = torch.full((b, c), float("-inf"), device=device)
    scores[real] = values
    return scores


def _predictions(scores: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([s.float().cpu().argmax(-1) for s in scores])


def run(settings: Settings) -> list[Row]:
    from promptability.data.batching import eval_batches
    from promptability.eval.rank import score_choices

    size = settings.size
    model = build_model(settings).eval()
    rows: list[Row] = []
    for num_choices in (2, 4):
        data = synthetic_dataset(size.eval_examples, size.eval_source_len, size.eval_choice_len, size.vocab_size,
                                 num_choices=num_choices, seed=settings.seed + num_choices)  # fmt: skip
        batches = [to_device(b, settings.device) for b in eval_batches(data, size.eval_batch_size, pad_id=PAD_ID)]

        def shared(batches=batches):
            with torch.inference_mode(), settings.autocast():
                return [score_choices(model, b) for b in batches]

        def per_choice(batches=batches):
            with torch.inference_mode(), settings.autocast():
                return [score_per_choice(model, b) for b in batches]

        timing = time_pair(shared, per_choice, settings, f"evaluation, {num_choices} choices")
        ours_scores, base_scores = timing.first
        identical = bool(torch.equal(_predictions(ours_scores), _predictions(base_scores)))
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(ours_scores, base_scores, strict=True))
        n = size.eval_examples
        ratio = Stat.of(timing.ratios())
        target = TARGET_4 if num_choices == 4 else None
        src = sum(int(r) for r in data["source_len"]) / n
        tgt = sum(len(c) for cs in data["choice_ids"] for c in cs) / (n * num_choices)
        rows.append(Row(
            key=f"eval_{num_choices}choices",
            pair="1 evaluation",
            name=f"rank classification, {num_choices} choices (source {src:.0f} / choice {tgt:.0f} tokens, "
                 f"{n} examples, batch {size.eval_batch_size}): examples/s",
            ours=fmt_stat(Stat.of([n / t for t in timing.ours]), "ex/s"),
            baseline=fmt_stat(Stat.of([n / t for t in timing.baseline]), "ex/s"),
            ratio=ratio,
            ratio_note="speed-up",
            target=f">= {TARGET_4:g}x" if target else "",
            met=None if target is None else round(ratio.median, 2) >= target,
            check=f"predictions {'identical' if identical else 'DIFFER'} (max score difference {diff:.1e})",
            check_ok=identical,
        ))  # fmt: skip
    return rows


if __name__ == "__main__":  # python -m benchmarks.eval_rank
    from benchmarks.runner import pair_main

    raise SystemExit(pair_main(["eval"]))
