"""``promptability export peft``: a model's prompt as a PEFT adapter folder (``model.peft_export``)."""

from __future__ import annotations

import argparse

from promptability.cli.common import add_group


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(
        subparsers, "export", "export_command", "EXPORT_COMMAND",
        help="export a model's prompt for other tools (a PEFT adapter)",
        description="Write a model's prompt in another library's format.",
    )  # fmt: skip
    peft = sub.add_parser(
        "peft", help="a prompt as a PEFT prompt-tuning (shallow) or prefix-tuning (decoder-only deep) adapter",
        description="Writes MODEL's prompt as a PEFT adapter folder that PeftModel.from_pretrained (and "
        "lm-evaluation-harness's peft=, TRL) loads: a shallow prompt as prompt tuning, a decoder-only model's deep "
        "prompt as prefix tuning (a T5 deep prompt cannot be expressed in PEFT). A model saved in full (continued "
        "pretraining trains the transformer) also gets its transformer as DIR/base, which the adapter names as its base.",
    )  # fmt: skip
    peft.add_argument("model", metavar="MODEL", help="a model folder with a prompt (pretrain's or fewshot's output)")
    peft.add_argument("--out", required=True, metavar="DIR", help="the adapter folder to write")
    peft.add_argument("--force", action="store_true", help="replace DIR when it is not empty")
    peft.set_defaults(func=cmd_peft)


def cmd_peft(args: argparse.Namespace) -> int:
    import json

    from promptability.model.peft_export import ADAPTER_CONFIG, export_peft

    out = export_peft(args.model, args.out, force=args.force)
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    base = config["base_model_name_or_path"]
    print(
        f"{config['peft_type'].lower()} adapter ({config['num_virtual_tokens']} virtual tokens) -> {out}\n"
        f"base model: {base}\n"
        f"load: PeftModel.from_pretrained(AutoModelFor{'CausalLM' if config['task_type'] == 'CAUSAL_LM' else 'Seq2SeqLM'}"
        f".from_pretrained({base!r}), {str(out)!r})"
    )
    return 0
