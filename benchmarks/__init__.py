"""Benchmarks: each of the project's fast paths measured side by side with the straightforward way (issue 7).

Kept outside the installed package (as PEFT and nanoGPT keep theirs): run from the repository root.
``python -m benchmarks`` runs every pair and writes BENCHMARKS.md; ``python -m benchmarks.<pair>`` runs one pair
and only prints its rows (``--write`` adds them to BENCHMARKS.md as a run of their own):

    eval_rank     1  shared-encoder rank classification vs per-choice re-encoding
    mtl           2  MTL-TP training step vs transformers + PEFT prompt tuning (+ padding fractions)
    meta          3  FOMAML / Reptile meta-step, prompt-only clone vs whole-model deep copy
    fewshot       4  few-shot prompt-tuning step, frozen transformer vs full model
    flops         5  achieved FLOP/s of the training step vs matmul FLOP/s
    eval_causal   7  causal-LM rank classification, batched sources vs one source at a time
"""

from benchmarks.common import MINUSCULE, SIZES, BenchSize
from benchmarks.runner import METHODS, PAIRS, main, run_benchmarks

__all__ = ["METHODS", "MINUSCULE", "PAIRS", "SIZES", "BenchSize", "main", "run_benchmarks"]
