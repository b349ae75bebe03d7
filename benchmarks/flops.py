"""Pair 5: achieved FLOP/s of the MTL-TP training step as a fraction of the machine's matmul FLOP/s.

Achieved = 6 x parameters x tokens per step / step time (tokens: the step's
non-padding source and target tokens; the step time from pair 2). The machine's
rate is a large square ``torch.matmul`` (2 n^3 FLOP) in the same dtype as the
step (float32, or bfloat16 with --bf16), median over reps after warm-up.

6 x N x tokens is the usual decoder-only estimate; in an encoder-decoder each
token passes through one stack only, so it counts roughly twice the weight
FLOPs actually done. The check column gives the stack-aware count too:
6 x (encoder params x (source + prompt tokens) + (decoder params + LM head) x target tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter

from benchmarks.common import Settings, Stat, synchronize, timed
from benchmarks.report import Row, fmt_num

SMALL_TARGET = 0.5  # stack-aware FLOP/s of the T5-small step over matmul FLOP/s (the target)


def matmul_flops(settings: Settings) -> Stat:
    n = settings.size.matmul_n
    dtype = torch.bfloat16 if settings.bf16 else torch.float32
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(settings.device, dtype)
    b = torch.randn(n, n, generator=gen).to(settings.device, dtype)
    inner = 1
    dt, _ = timed(lambda: torch.matmul(a, b), settings.device)
    while dt * inner < 0.2 and inner < 1024:  # each rep at least ~0.2 s, so timer and launch overheads vanish
        inner *= 2

    def many():
        for _ in range(inner):
            torch.matmul(a, b)

    values = []
    for rep in range(settings.warmup + settings.reps):
        dt, _ = timed(many, settings.device)
        if rep >= settings.warmup:
            values.append(2 * n**3 * inner / dt)
    synchronize(settings.device)
    return Stat.of(values)


def stack_aware_flop(context: dict[str, Any], batch_size: int, key: str = "mtl") -> float:
    """FLOP of one MTL-TP step counted per stack, from what pair 2 left in ``context`` (``key``: its workload).

    6 x (encoder weights x (source + prompt tokens) + (decoder weights + LM head) x target tokens): forward
    (2) and backward (4) of each weight matrix, for the tokens that pass through it; attention's score
    and value products and the padding are not counted (the usual MFU convention counts useful weight FLOPs).
    """
    counts = context[f"{key}_model"]
    tokens = context[f"{key}_tokens_per_step"]
    target_tokens = context.get(f"{key}_target_tokens_per_step", 0.0)
    source_tokens = tokens - target_tokens + counts["prompt_length"] * batch_size
    return 6.0 * (counts["encoder"] * source_tokens + counts["decoder"] * target_tokens)


# ----- FLOP limits of a pair: the ratio of the two sides' FLOP counts for the same work ---------------
# torch's FlopCounterMode counts matrix products (mm, bmm, addmm, attention), not elementwise work; its table has no
# entry for the CPU flash-attention kernel that scaled_dot_product_attention runs on CPU, so attention would count 0.
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_SDPA not in flop_counter.flop_registry and _CPU_SDPA.default not in flop_counter.flop_registry:

    @flop_counter.register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flop(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()``'s result and the FLOP of the matrix products it ran (torch's ``FlopCounterMode``)."""
    with flop_counter.FlopCounterMode(display=False) as counter:
        out = fn()
    return out, int(counter.get_total_flops())


def counted_once(fn: Callable[[], Any]) -> tuple[Callable[[], Any], dict[str, int]]:
    """``fn`` whose first call (a pair's warm-up) also counts its FLOP into the returned dict's ``"flop"``."""
    box: dict[str, int] = {}

    def run() -> Any:
        if "flop" in box:
            return fn()
        out, box["flop"] = count_flop(fn)
        return out

    return run, box


def flop_limit(ours: dict[str, int], baseline: dict[str, int]) -> float:
    """Baseline FLOP / our FLOP for the same work: the speed-up the arithmetic allows at equal FLOP/s."""
    return baseline["flop"] / ours["flop"] if ours.get("flop") else float("nan")


def capped_target(target: float, limit: float) -> float:
    """A pair's target, or 90% of its FLOP limit where the target asks for more than the arithmetic allows.

    A target within the limit stays as asked, even when it is above 90% of the limit (issue 16's rule)."""
    return round(0.9 * limit, 2) if limit == limit and target > limit else target


def run(settings: Settings, context: dict[str, Any]) -> list[Row]:
    dtype = "bfloat16" if settings.bf16 else "float32"
    peak = matmul_flops(settings)
    context["matmul_flops"] = peak  # the GPU check reads it (benchmarks.gpu_check)
    n = settings.size.matmul_n
    rows = [Row(key="matmul_flops", pair="5 FLOP/s", name=f"machine: torch.matmul {n}x{n} {dtype}",
                ours=f"{fmt_num(peak.median / 1e9)} GFLOP/s [{fmt_num(peak.min / 1e9)}–{fmt_num(peak.max / 1e9)}]",
                baseline="")]  # fmt: skip
    if "mtl_step_s" not in context:
        rows.append(Row(key="mtl_flops_fraction", pair="5 FLOP/s", name="MTL-TP step achieved FLOP/s", ours="", baseline="",
                        check="skipped: pair 2 did not run"))  # fmt: skip
        return rows
    rows.append(_step_row(context, peak, "mtl", "", settings.size.batch_size, None))
    if "mtl_small_step_s" in context:  # pair 2's T5-small workload: the issue's target is >= 50% stack-aware
        rows.append(_step_row(context, peak, "mtl_small", " at the T5-small shape", context["mtl_small_batch_size"],
                              SMALL_TARGET))  # fmt: skip
    return rows


def _step_row(context: dict[str, Any], peak: Stat, key: str, where: str, batch_size: int, target: float | None) -> Row:
    counts = context[f"{key}_model"]
    step_s: Stat = context[f"{key}_step_s"]
    tokens = context[f"{key}_tokens_per_step"]
    params = counts["params"]
    flop = 6 * params * tokens
    rate = Stat(flop / step_s.median, flop / step_s.max, flop / step_s.min, step_s.n)  # slowest step: lowest rate
    fraction = Stat(rate.median / peak.median, rate.min / peak.median, rate.max / peak.median, rate.n)
    aware = stack_aware_flop(context, batch_size, key) / step_s.median / peak.median
    return Row(
        key=f"{key}_flops_fraction", pair="5 FLOP/s",
        name=f"MTL-TP step{where} achieved FLOP/s, 6 x {params / 1e6:.1f}M params x {tokens:.0f} tokens per step",
        ours=f"{fmt_num(rate.median / 1e9)} GFLOP/s [{fmt_num(rate.min / 1e9)}–{fmt_num(rate.max / 1e9)}]",
        baseline=f"{fmt_num(peak.median / 1e9)} GFLOP/s (matmul)",
        ratio=fraction, ratio_note="of matmul FLOP/s",
        target="" if target is None else f"stack-aware >= {target:.0%}",
        met=None if target is None else round(aware, 2) >= target,
        check=f"stack-aware count: {aware:.1%} of matmul FLOP/s",
    )  # fmt: skip


if __name__ == "__main__":  # python -m benchmarks.flops
    from benchmarks.runner import pair_main

    raise SystemExit(pair_main(["flops"]))
