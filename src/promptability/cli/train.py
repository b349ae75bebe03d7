"""Placeholder: this stage's commands are not written yet."""

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    pass
