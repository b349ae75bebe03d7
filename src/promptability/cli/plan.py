"""`promptability plan`: what a pretraining config will do and cost, resolved without training."""

from __future__ import annotations

import argparse
import json

from promptability.cli.common import add_set_option, given, positive_float, positive_int, probability

PLAN_EPILOG = """\
Resolves the config as `pretrain` would (the defaults, --config, then --set) and prints the settings
and parameter counts; with --data it also reads, tokenizes and mixes the data with pretrain's own
code and prints the examples per template after the cap, steps, tokens, truncation, training FLOPs
and GPU-hours. It also gives the GPU memory per process of each strategy (distributed=ddp, fsdp) on
--gpus GPUs: parameters, gradients, Adafactor state, and the activations of the largest micro-batch.
The model is built without its weights; the tokenizer is the model's.

examples:
  promptability plan configs/t5-large-mtl-tp-deep.yaml
  promptability plan configs/t5-xl-mtl-tp-shallow.yaml --data p3/ --json
  promptability plan configs/demo-tiny.yaml --data runs/demo/suite --set batch_size=64
  promptability plan configs/t5-xl-mtl-tp-deep.yaml --gpus 4 --set micro_batch_size=2
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="what a pretraining config will do: settings, counts, steps, FLOPs, GPU-hours",
        description="Resolve a continued-pretraining config (and its data) without training.",
        epilog=PLAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML file of settings (configs/*.yaml)")
    p.add_argument("--data", help="training data to count (default: the config's data.path)")
    p.add_argument("--json", action="store_true", help="print one JSON object (fields: see the README)")
    p.add_argument("--mfu", type=probability, default=None,
                   help="model FLOP utilisation assumed for GPU-hours (default 0.35)")  # fmt: skip
    p.add_argument("--peak-tflops", type=positive_float, default=None,
                   help="the GPU's peak TFLOP/s (default an A100's: 312 in bf16, 19.5 in fp32)")  # fmt: skip
    p.add_argument("--gpus", type=positive_int, default=None,
                   help="GPUs the memory per GPU of each strategy (ddp, fsdp) is given for (default 8)")  # fmt: skip
    add_set_option(p, "batch_size=2048")
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from promptability.cli.train import build_config
    from promptability.train.plan import format_plan, make_plan

    plan = make_plan(build_config(args), args.data, peak_tflops=args.peak_tflops, **given(args, "mfu", "gpus"))
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0
