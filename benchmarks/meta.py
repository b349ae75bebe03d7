"""Pair: FOMAML / Reptile meta-steps, prompt-only clone vs whole-model deep copy.

``python -m benchmarks.meta [--size ...] [--reps N] [--device ...] [--bf16] [--write]`` runs only this pair and
prints its rows; with ``--write`` it also puts them in BENCHMARKS.md (as a section of their own run).
The code is ``promptability.bench.meta``.
"""

import sys

from promptability.bench.runner import pair_main

if __name__ == "__main__":
    sys.exit(pair_main(["meta"]))
