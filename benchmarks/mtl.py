"""Pair: the MTL-TP training step vs transformers + PEFT prompt tuning, and padding fractions.

``python -m benchmarks.mtl [--size ...] [--reps N] [--device ...] [--bf16] [--write]`` runs only this pair and
prints its rows; with ``--write`` it also puts them in BENCHMARKS.md (as a section of their own run).
The code is ``promptability.bench.mtl``.
"""

import sys

from promptability.bench.runner import pair_main

if __name__ == "__main__":
    sys.exit(pair_main(["mtl", "padding"]))
