"""``promptability bench``: the side-by-side benchmarks (same code as ``python -m benchmarks``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from promptability.bench.runner import add_arguments, run_command

    parser = subparsers.add_parser(
        "bench",
        help="benchmark the fast paths against straightforward implementations; writes BENCHMARKS.md",
        description="Runs each benchmark pair side by side on the same model, data and machine, prints a table of "
        "ratios and adds it (with a machine description) to BENCHMARKS.md.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)
