"""Pair: shared-encoder rank classification vs per-choice re-encoding.

``python -m benchmarks.eval_rank [--size ...] [--reps N] [--device ...] [--bf16] [--write]`` runs only this pair and
prints its rows; with ``--write`` it also puts them in BENCHMARKS.md (as a section of their own run).
The code is ``promptability.bench.eval_rank``.
"""

import sys

from promptability.bench.runner import main as run_main

PAIRS = ["eval"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    write = "--write" in argv
    argv = [a for a in argv if a != "--write"]
    return run_main([*argv, "--only", *PAIRS, *([] if write else ["--no-write"])])


if __name__ == "__main__":
    sys.exit(main())
