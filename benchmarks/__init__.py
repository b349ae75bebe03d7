"""``python -m benchmarks``: the side-by-side benchmarks of issue 7.

The code lives in the installed package, ``promptability.bench``, so that
``promptability bench`` runs the very same code from anywhere; this package is
the repository-root entry point. One module per pair (``python -m
benchmarks.<pair>`` runs just that pair, without writing BENCHMARKS.md):

    eval_rank   1  shared-encoder rank classification vs per-choice re-encoding
    mtl         2  MTL-TP training step vs transformers + PEFT prompt tuning (+ padding fractions)
    meta        3  FOMAML / Reptile meta-step, prompt-only clone vs whole-model deep copy
    fewshot     4  few-shot prompt-tuning step, frozen transformer vs full model
    flops       5  achieved FLOP/s of the training step vs matmul FLOP/s
"""

from promptability.bench import MINUSCULE, PAIRS, SIZES, main, run_benchmarks

__all__ = ["MINUSCULE", "PAIRS", "SIZES", "main", "run_benchmarks"]
