"""Pair: achieved FLOP/s of the MTL-TP step vs matmul FLOP/s (runs pair 2 too, for the step time).

``python -m benchmarks.flops [--size ...] [--reps N] [--device ...] [--bf16] [--write]`` runs only this pair and
prints its rows; with ``--write`` it also puts them in BENCHMARKS.md (as a section of their own run).
The code is ``promptability.bench.flops``.
"""

import sys

from promptability.bench.runner import pair_main

if __name__ == "__main__":
    sys.exit(pair_main(["flops"]))
