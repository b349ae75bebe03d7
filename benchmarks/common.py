"""Shared pieces of the benchmarks: sizes, models, synthetic data, side-by-side timing, memory, machine facts.

Every comparison runs both sides in the same process on the same model
weights and the same batches, interleaved rep by rep (A,B then B,A), so a
load spike on a shared machine hits both; each rep gives one ratio, and we
report the median with min and max over reps after warm-up.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

EOS_ID, PAD_ID = 1, 0
_START = time.perf_counter()


# ----- sizes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSize:
    """Model shape and workload of one benchmark size (all synthetic: random weights, random token ids)."""

    name: str
    model: dict[str, int | str]  # T5Config overrides (v1.1 layout: gated GELU, untied head)
    vocab_size: int
    prompt_length: int = 20
    # rank classification: sources about 10x longer than choices
    eval_examples: int = 64
    eval_batch_size: int = 16
    eval_source_len: int = 100
    eval_choice_len: int = 10
    # multi-task step
    train_examples: int = 512
    batch_size: int = 16
    source_len: int = 100
    target_len: int = 10
    steps_per_rep: int = 2
    # meta-learning
    meta_batch_size: int = 2
    inner_steps: int = 2
    task_batch_size: int = 8
    # few-shot
    shots: int = 16
    # padding fractions: the offline suite's size ("quick"/"default"), None to skip
    suite_size: str | None = "default"
    suite_vocab: int = 4000
    matmul_n: int = 1024


TINY_SHAPE: dict[str, int | str] = {}  # the project's own offline tiny T5 (``model.tiny.TINY_CONFIG``), as it is
# T5 v1.1 shapes (the paper's T5 1.1 LM-adapted models), random weights, the T5 vocabulary size.
T5_SMALL = dict(d_model=512, d_kv=64, num_heads=6, d_ff=1024, num_layers=8, num_decoder_layers=8)
T5_BASE = dict(d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12, num_decoder_layers=12)
T5_LARGE = dict(d_model=1024, d_kv=64, num_heads=16, d_ff=2816, num_layers=24, num_decoder_layers=24)

SIZES: dict[str, BenchSize] = {
    "tiny": BenchSize("tiny", TINY_SHAPE, vocab_size=4000),
    "small": BenchSize("small", T5_SMALL, 32128, eval_examples=256, eval_batch_size=32, eval_source_len=250,
                       eval_choice_len=25, train_examples=2048, batch_size=32, source_len=250, target_len=25,
                       steps_per_rep=4, meta_batch_size=4, inner_steps=3, task_batch_size=16, matmul_n=8192),
    "base": BenchSize("base", T5_BASE, 32128, eval_examples=256, eval_batch_size=32, eval_source_len=250,
                      eval_choice_len=25, train_examples=2048, batch_size=32, source_len=250, target_len=25,
                      steps_per_rep=4, meta_batch_size=4, inner_steps=3, task_batch_size=16, matmul_n=8192),
    "large": BenchSize("large", T5_LARGE, 32128, eval_examples=256, eval_batch_size=32, eval_source_len=250,
                       eval_choice_len=25, train_examples=2048, batch_size=32, source_len=250, target_len=25,
                       steps_per_rep=4, meta_batch_size=4, inner_steps=3, task_batch_size=16, matmul_n=8192),
}  # fmt: skip

# For tests: seconds, not minutes.
MINUSCULE = BenchSize(
    "minuscule", dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2), vocab_size=200,
    prompt_length=4, eval_examples=8, eval_batch_size=4, eval_source_len=30, eval_choice_len=3, train_examples=32,
    batch_size=4, source_len=20, target_len=4, steps_per_rep=1, meta_batch_size=2, inner_steps=1, task_batch_size=2,
    shots=4, suite_size="quick", suite_vocab=300, matmul_n=128,
)  # fmt: skip


def get_size(size: str | BenchSize) -> BenchSize:
    if isinstance(size, BenchSize):
        return size
    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    return SIZES[size]


@dataclass
class Settings:
    """One benchmark run: size, repetitions, device, precision."""

    size: BenchSize
    reps: int = 5
    warmup: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bf16: bool = False
    seed: int = 0
    progress: bool = True

    @property
    def dtype_name(self) -> str:
        return "bf16 autocast" if self.bf16 else "fp32"

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[bench {time.perf_counter() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


# ----- models --------------------------------------------------------------------------------------
def build_transformer(size: BenchSize, seed: int = 0):
    """A randomly initialised T5 of the size's shape (dropout 0, so both sides of a pair compute the same thing)."""
    from promptability.model.tiny import tiny_t5

    return tiny_t5(size.vocab_size, seed=seed, **size.model)


def build_model(settings: Settings, prompt: str = "shallow", transformer=None):
    """A ``PromptedSeq2SeqLM`` on ``settings.device`` (no tokenizer: the benchmarks feed token ids)."""
    from promptability.model.prompted import PromptedSeq2SeqLM

    transformer = transformer if transformer is not None else build_transformer(settings.size, settings.seed)
    model = PromptedSeq2SeqLM(transformer, None, prompt, settings.size.prompt_length, seed=settings.seed,
                              base_model=f"bench-{settings.size.name}")  # fmt: skip
    return model.to(settings.device)


def describe_model(size: BenchSize) -> str:
    from transformers import T5Config

    from promptability.model.tiny import TINY_CONFIG

    c = {**TINY_CONFIG, **size.model}
    tied = T5Config(vocab_size=size.vocab_size, **c).tie_word_embeddings  # transformers 5 ties T5's head always
    return (f"T5 v1.1 layout, d_model {c['d_model']}, d_ff {c['d_ff']}, {c['num_heads']} heads, "
            f"{c['num_layers']}+{c['num_decoder_layers']} layers, vocabulary {size.vocab_size}, "
            f"LM head {'tied to' if tied else 'separate from'} the embeddings, random weights")  # fmt: skip


def make_accelerator(settings: Settings):
    """The training loop's accelerator; resets accelerate's process-wide state if another precision holds it."""
    from promptability.train.loop import make_accelerator as make

    precision = "bf16" if settings.bf16 else "fp32"
    cpu = settings.device.type == "cpu"
    try:
        return make(precision, cpu=cpu)
    except ValueError:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        return make(precision, cpu=cpu)


# ----- synthetic data ------------------------------------------------------------------------------
def _ids(rng: np.random.Generator, mean: int, vocab: int) -> list[int]:
    """Random token ids (never pad/EOS/unk), length uniform in [mean/2, 3*mean/2], then EOS."""
    n = int(rng.integers(max(1, mean // 2), max(2, (3 * mean) // 2 + 1)))
    return rng.integers(3, vocab, size=n).tolist() + [EOS_ID]


def synthetic_rows(
    n: int, source_len: int, target_len: int, vocab: int, *, num_choices: int = 0, tasks: int = 8, seed: int = 0
) -> list[dict[str, Any]]:
    """Rows with the columns of ``tokenize_records`` output; ``num_choices`` > 0 adds choices and a label."""
    rng = np.random.default_rng(seed)
    rows, positions = [], [0] * tasks
    for i in range(n):
        t = i % tasks
        src, tgt = _ids(rng, source_len, vocab), _ids(rng, target_len, vocab)
        choices = [_ids(rng, target_len, vocab) for _ in range(num_choices)]
        rows.append({
            "task": f"bench_task_{t}", "index": positions[t], "input_ids": src, "labels": tgt,
            "choice_ids": choices, "label": int(rng.integers(num_choices)) if num_choices else -1,
            "source_len": len(src), "target_len": len(tgt),
        })  # fmt: skip
        positions[t] += 1
    return rows


def synthetic_dataset(*args, **kwargs):
    """``synthetic_rows`` as a ``datasets.Dataset`` with the tokenized-data features."""
    from datasets import Dataset

    from promptability.data.tokenize import FEATURES

    return Dataset.from_list(synthetic_rows(*args, **kwargs), features=FEATURES)


def score_per_pair(batch: dict[str, Any], device: torch.device, logits_of: Callable[..., torch.Tensor]) -> torch.Tensor:
    """Scores [B, C_max] (mean choice-token log-probability, -inf past an instance's choices) with one row per
    (source, choice): ``logits_of(input_ids, attention_mask, labels, label_mask)`` gives each row's [N, T, vocab]
    logits predicting its choice tokens, from whatever full forward a baseline runs."""
    choice_ids, choice_mask = batch["choice_ids"].to(device), batch["choice_mask"].to(device)
    num_choices = batch["num_choices"].to(device)
    b, c_max, _ = choice_ids.shape
    real = torch.arange(c_max, device=device)[None, :] < num_choices[:, None]
    source_of = torch.arange(b, device=device)[:, None].expand(b, c_max)[real]
    labels, mask = choice_ids[real], choice_mask[real]
    ids, attention = batch["input_ids"].to(device)[source_of], batch["attention_mask"].to(device)[source_of]
    logits = logits_of(ids, attention, labels, mask)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask
    scores = torch.full((b, c_max), float("-inf"), device=device)
    scores[real] = logp.sum(-1) / mask.sum(-1).clamp(min=1)
    return scores


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# ----- statistics and timing -----------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        values = [float(v) for v in values]
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def scaled(self, factor: float) -> Stat:
        lo, hi = sorted((self.min * factor, self.max * factor))
        return replace(self, median=self.median * factor, min=lo, max=hi)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


@dataclass
class PairTiming:
    ours: list[float]  # seconds per rep, after warm-up
    baseline: list[float]
    first: tuple[Any, Any]  # the first (warm-up) outputs of each side, for the checks

    def ratios(self) -> list[float]:
        """baseline time / our time, rep by rep (> 1: ours is faster)."""
        return [b / a for a, b in zip(self.ours, self.baseline, strict=True)]


def time_pair(ours: Callable[[], Any], baseline: Callable[[], Any], settings: Settings, label: str) -> PairTiming:
    """Runs both sides ``warmup + reps`` times, interleaved and alternating which goes first."""
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    first: dict[str, Any] = {}
    fns = {"ours": ours, "baseline": baseline}
    for rep in range(settings.warmup + settings.reps):
        for side in ("ours", "baseline") if rep % 2 == 0 else ("baseline", "ours"):
            dt, out = timed(fns[side], settings.device)
            first.setdefault(side, out)
            if rep >= settings.warmup:
                times[side].append(dt)
        if rep >= settings.warmup:
            settings.log(f"{label}: rep {rep + 1 - settings.warmup}/{settings.reps}: ours {times['ours'][-1]:.3g} s, "
                         f"baseline {times['baseline'][-1]:.3g} s")  # fmt: skip
    return PairTiming(times["ours"], times["baseline"], (first["ours"], first["baseline"]))


# ----- memory --------------------------------------------------------------------------------------
def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def model_bytes(model: nn.Module) -> int:
    """Parameters, buffers and gradients currently held."""
    params = list(model.parameters())
    return tensor_bytes(params) + tensor_bytes(model.buffers()) + tensor_bytes(p.grad for p in params)


def peak_memory(fn: Callable[[], Any], device: torch.device, resident: int) -> int:
    """Peak bytes of tensor memory while ``fn`` runs: ``resident`` plus the peak of what ``fn`` allocates.

    ``resident`` is what the caller knows is live and counts (model parameters,
    buffers, gradients), so other objects alive in the process do not dilute
    ratios. The peak of what ``fn`` allocates on top of what was allocated at
    its start is, on CUDA, ``torch.cuda.max_memory_allocated`` minus
    ``memory_allocated`` before the call; on CPU, the peak of the running sum
    of every allocation and free that PyTorch's CPU allocator reports to the
    profiler while ``fn`` runs (``profile_memory=True``). That counts all
    tensor storage (activations saved for backward, gradients, optimizer
    state, deep copies) and nothing else; unlike RSS it does not depend on
    what the C allocator caches or returns to the system.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return resident + int(torch.cuda.max_memory_allocated(device)) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events: list[tuple[int, int]] = []

    def walk(nodes) -> None:
        for node in nodes:
            extra = getattr(node, "extra_fields", None)
            if "Allocation" in str(getattr(node, "tag", "")) and extra is not None:
                events.append((node.start_time_ns, int(extra.alloc_size)))
            walk(node.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    if not events:
        raise RuntimeError("the profiler reported no CPU allocations; cannot measure peak memory on this torch build")
    running = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        running += size
        peak = max(peak, running)
    return resident + peak


# ----- the machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as lines:
            for line in lines:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(settings: Settings) -> dict[str, str]:
    import transformers

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    info = {
        "CPU": cpu_model(),
        "cores": f"{cores} usable ({os.cpu_count()} in the machine), torch threads {torch.get_num_threads()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        info["peft"] = "not installed"
    if settings.device.type == "cuda":
        props = torch.cuda.get_device_properties(settings.device)
        info["device"] = f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        info["device"] = "cpu"
    info["precision"] = settings.dtype_name
    with contextlib.suppress(OSError):
        info["load average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info
