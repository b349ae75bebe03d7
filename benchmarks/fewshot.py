"""Pair: few-shot prompt tuning, frozen transformer vs full-model step.

``python -m benchmarks.fewshot [--size ...] [--reps N] [--device ...] [--bf16] [--write]`` runs only this pair and
prints its rows; with ``--write`` it also puts them in BENCHMARKS.md (as a section of their own run).
The code is ``promptability.bench.fewshot``.
"""

import sys

from promptability.bench.runner import main as run_main

PAIRS = ["fewshot"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    write = "--write" in argv
    argv = [a for a in argv if a != "--write"]
    return run_main([*argv, "--only", *PAIRS, *([] if write else ["--no-write"])])


if __name__ == "__main__":
    sys.exit(main())
