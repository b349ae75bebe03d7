"""The `promptability` command: thin subcommands that parse, call the library, print.

Each stage owns one file here with a ``register(subparsers)`` function; adding a
command is a new file plus a line in ``_MODULES``. ``common.py`` holds what they share: the
number types every numeric option uses, command groups, ``--set`` and the error line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_MODULES = ("data", "model", "evaluate", "metrics", "train", "study", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptability",
        description=(
            "Continued pretraining for better zero- and few-shot promptability of T5-family LMs "
            "(Wu et al., EMNLP 2022): pretrain, few-shot tune, evaluate, report."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _MODULES:
        importlib.import_module(f"promptability.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages and checkpoints are kept; run again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
