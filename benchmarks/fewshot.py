"""Pair: few-shot prompt tuning, frozen transformer vs full-model step.

``python -m benchmarks.fewshot [--size ...] [--reps N] [--device ...] [--bf16] [--write]`` runs only this pair and
prints its rows; with ``--write`` it also puts them in BENCHMARKS.md (as a section of their own run).
The code is ``promptability.bench.fewshot``.
"""

import sys

from promptability.bench.runner import pair_main

if __name__ == "__main__":
    sys.exit(pair_main(["fewshot"]))
