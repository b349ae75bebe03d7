"""The `promptability` command: thin subcommands that parse, call the library, print.

Each stage owns one file here with a ``register(subparsers)`` function; adding a
command is a new file plus a line in ``_MODULES``. ``common.py`` holds what they share: the
number types every numeric option uses, command groups, ``--set`` and the error line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_MODULES = ("data", "model", "evaluate", "generate", "metrics", "train", "plan", "study", "demo", "export")

# Errors that mean "your input is wrong", not "the program is": printed as ``error: ...`` with
# exit code 2 and no traceback, by every command. Named by module so that the CLI does not
# import torch to start; a class is only matched when its module was imported (it raised).
USER_ERRORS = (
    ("promptability.io", "BadFileError"),
    ("promptability.data.schema", "DataError"),
    ("promptability.data.promptsource", "TemplateError"),
    ("promptability.data.realdata", "RealDataError"),
    ("promptability.train.config", "ConfigError"),
    ("promptability.eval.runs", "RunError"),
    ("promptability.eval.metrics", "MetricsError"),
    ("promptability.model.prompted", "PromptSettingsError"),
    ("promptability.model.named", "NamedModelError"),
    ("promptability.model.loading", "HubUnreachableError"),
    ("promptability.model.peft_export", "PeftExportError"),
    ("promptability.studies.pipeline", "StudySettingsError"),
)


def is_user_error(err: BaseException) -> bool:
    """One of ``USER_ERRORS``, a missing file, or an OS error that names its file (permission, disk full...)."""
    if isinstance(err, FileNotFoundError) or (isinstance(err, OSError) and err.filename is not None):
        return True
    classes = (getattr(sys.modules.get(module), name, None) for module, name in USER_ERRORS)
    return any(cls is not None and isinstance(err, cls) for cls in classes)


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
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
