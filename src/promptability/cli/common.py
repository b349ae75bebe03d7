"""What the subcommands share: number types checked at parse time, command groups, ``--set``, error lines.

A number option names its type here (``type=positive_int``), so ``--batch-size 0`` stops argparse with
``argument --batch-size: must be a positive integer, got '0'`` before anything is loaded.

``--set KEY=VALUE`` (``add_set_option``) sets a field of the command's configuration dataclass by its dotted
name (``--set data.cap=1000``); the value is read as YAML (``null``, ``false``, ``[a, b]``) and converted by
the field's type. A named flag made with ``setting_flag`` is sugar for one ``--set``: both append
``(key, value)`` to ``args.settings`` in command-line order, so the last one given wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import operator
import sys
from collections.abc import Callable
from typing import Any, TextIO

# A learning rate above this is a typo (an exponent's sign lost): every optimizer here diverges long before.
MAX_LR = 10.0


def _number(text: str, kind: Callable[[str], Any], what: str, ok: Callable[[Any], bool], bad: str = "") -> Any:
    """``kind(text)`` if ``ok`` of it; else "must be {what}" (not a number) or "must be {bad or what}" (out of range)."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {bad or what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Sizes, counts, steps and batch sizes: an integer >= 1."""
    return _number(text, int, "a positive integer", lambda value: value >= 1)


def non_negative_int(text: str) -> int:
    """Seeds, and counts where 0 means none: an integer >= 0."""
    return _number(text, int, "an integer >= 0", lambda value: value >= 0)


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def positive_float(text: str) -> float:
    """A finite number > 0 (e.g. epochs)."""
    return _number(text, float, "a positive number", _finite_positive, "a finite number > 0")


def learning_rate(text: str) -> float:
    """A finite learning rate in (0, MAX_LR]."""
    value = _number(
        text, float, "a learning rate (a number such as 1e-3)", _finite_positive, "a finite learning rate > 0"
    )
    if value > MAX_LR:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plausible learning rate (above {MAX_LR:g}, training would diverge); "
            "did an exponent lose its minus sign (1e3 for 1e-3)?"
        )
    return value


def probability(text: str) -> float:
    """A probability strictly between 0 and 1 (confidence levels, significance levels)."""
    return _number(text, float, "a probability", lambda value: 0 < value < 1, "a probability strictly between 0 and 1")


def add_group(
    subparsers: argparse._SubParsersAction, name: str, dest: str, metavar: str, **kwargs: Any
) -> argparse._SubParsersAction:
    """A command with subcommands (``data``, ``model``, ``study``) that prints its help when given none."""
    group = subparsers.add_parser(name, **kwargs)
    group.set_defaults(func=lambda args: group.print_help() or 0)
    return group.add_subparsers(dest=dest, metavar=metavar)


def add_no_progress(parser: argparse.ArgumentParser, flag: str = "--no-progress") -> None:
    parser.add_argument(flag, dest="no_progress", action="store_true", help="no progress bars")


def given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options among ``names`` that were given, as keyword arguments: the callee's defaults apply to the rest."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def fail(err: object, file: TextIO | None = None) -> int:
    """Prints ``error: ...`` (to stderr unless ``file``) and returns the usage-error exit code 2."""
    print(f"error: {err}", file=file or sys.stderr)
    return 2


# ----- --set and the named flags that are sugar for it --------------------------------------------
def _append_setting(namespace: argparse.Namespace, key: str, value: Any) -> None:
    namespace.settings = [*(getattr(namespace, "settings", None) or []), (key, value)]


class _SetAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        import yaml

        key, sep, text = str(values).partition("=")
        if not sep or not key.strip():
            parser.error(f"argument {option_string}: expected KEY=VALUE (e.g. data.cap=1000), got {values!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        _append_setting(namespace, key.strip(), value)


class _SettingAction(argparse.Action):
    def __init__(self, option_strings, dest, key: str, convert: Callable[[Any], Any] | None = None, **kwargs):
        self.key, self.convert = key, convert
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.const if self.nargs == 0 else values
        _append_setting(namespace, self.key, self.convert(value) if self.convert else value)


def add_set_option(parser: argparse.ArgumentParser, example: str = "data.cap=1000") -> None:
    parser.add_argument(
        "--set", action=_SetAction, metavar="KEY=VALUE", dest="settings", default=None,
        help=f"set any configuration field by its dotted name, e.g. --set {example} (repeatable; YAML values)",
    )  # fmt: skip


def setting_flag(parser: argparse.ArgumentParser, *flags: str, key: str, **kwargs: Any) -> None:
    """A named flag that sets configuration field ``key``: the same as ``--set key=VALUE``."""
    if "choices" not in kwargs:
        kwargs.setdefault("metavar", flags[-1].lstrip("-").replace("-", "_").upper())
    parser.add_argument(*flags, action=_SettingAction, key=key, dest="settings", default=None, **kwargs)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """``args.settings`` as a dict; a key given twice keeps its last value."""
    return dict(getattr(args, "settings", None) or [])


def help_formatter(config: str) -> type[argparse.HelpFormatter]:
    """A ``formatter_class`` that ends the help of each setting flag with the field's default in ``config``.

    The dataclass (``"module:Class"``) is imported only when help is printed, so parsing stays fast.
    """

    class HelpFormatter(argparse.RawDescriptionHelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str | None:
            text = action.help
            if text and isinstance(action, _SettingAction) and "default" not in text:
                default = _default_of(config, action.key)
                if default is not None and default is not False:
                    text += f" (default {' '.join(map(str, default)) if isinstance(default, list) else default})"
            return text

    return HelpFormatter


def _default_of(config: str, key: str) -> Any:
    module, _, name = config.partition(":")
    value = operator.attrgetter(key)(getattr(importlib.import_module(module), name)())
    return None if dataclasses.is_dataclass(value) else value
