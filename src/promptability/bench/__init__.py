"""Benchmarks: each of the project's fast paths measured side by side with the straightforward way (issue 7).

Run ``python -m benchmarks`` from the repository root, or ``promptability bench``.
"""

from promptability.bench.common import MINUSCULE, SIZES, BenchSize
from promptability.bench.runner import METHODS, PAIRS, main, run_benchmarks

__all__ = ["METHODS", "MINUSCULE", "PAIRS", "SIZES", "BenchSize", "main", "run_benchmarks"]
