"""`promptability pretrain` and `promptability fewshot`: continued pretraining and 16-shot prompt tuning."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from promptability.cli.common import (
    add_no_progress,
    add_set_option,
    help_formatter,
    learning_rate,
    non_negative_int,
    positive_float,
    positive_int,
    setting_flag,
    settings_of,
)

if TYPE_CHECKING:
    from promptability.train.config import TrainConfig

PRETRAIN_EPILOG = """\
methods (Wu et al. 2022, Table 1):
  mtl-t     multi-task training of the transformer, no prompt (T0-style)      --prompt none
  mtl-p     multi-task training of a soft prompt, transformer frozen          --prompt shallow|deep
  mtl-tp    multi-task training of transformer and prompt together           --prompt shallow|deep
  fomaml    first-order MAML: inner loop tunes the prompt, outer updates both --prompt shallow|deep
  reptile   Reptile, same inner/outer split as fomaml                         --prompt shallow|deep

--out DIR becomes the trained model directory itself (load_model(DIR), `promptability evaluate
--model DIR`), and also holds train.json, train_config.json, metrics.jsonl and checkpoints/step-N/.
Interrupted? Run the same command again with --resume: the result equals an uninterrupted run.

examples:
  promptability pretrain --config configs/demo-tiny.yaml --data suite/ --out runs/demo-mtl-tp
  promptability pretrain --method mtl-p --prompt deep --model tiny --data suite/ --out runs/p --max-steps 50
  accelerate launch --num_processes 8 -m promptability pretrain --config configs/t5-large-mtl-tp-shallow.yaml \\
      --data p3/ --out runs/large-mtl-tp-shallow --precision bf16
"""

FEWSHOT_EPILOG = """\
For every held-out template of --data (or --tasks) and every seed: takes --shots examples from the
template's training split (StoryCloze: validation): on P3 data with 16 shots the paper's fixed
reference subsample by default, else a seeded random draw per seed (--draw); resets the prompt to
the model's own (a fresh --prompt kind when the model has none, e.g. an mtl-t model), trains only
the prompt for --epochs steps on that one batch (Adafactor lr 1e-3, clip 1.0) and evaluates the
final prompt on the template's evaluation split. Writes OUT/seed-S/ run dirs (predictions.jsonl, accuracy.json, run.json),
tuned prompts under OUT/seed-S/prompts/, and OUT/summary.json (mean and spread over seeds).
"""


def _tasks(values: list[str]) -> list[str] | str:
    from promptability.train.config import T0_TRAIN  # here, not at the top: --help stays fast

    return values[0] if values == [T0_TRAIN] else values


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_pretrain(subparsers)
    _register_fewshot(subparsers)


def _register_pretrain(subparsers: argparse._SubParsersAction) -> None:
    from promptability.model.prompts import prompt_names
    from promptability.train.methods import METHODS

    p = subparsers.add_parser(
        "pretrain",
        help="continued pretraining: mtl-t, mtl-p, mtl-tp, fomaml, reptile",
        description="Continued multi-task or meta-learning pretraining of a T5 with an optional soft prompt. "
        "Settings: the defaults of TrainConfig, then --config, then --set and the named flags in the order given.",
        epilog=PRETRAIN_EPILOG,
        formatter_class=help_formatter("promptability.train.config:TrainConfig"),
    )
    p.add_argument("--config", help="YAML file of settings (configs/*.yaml); flags given here override it")
    p.add_argument("--out", required=True, help="output dir; becomes the trained model dir")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    add_no_progress(p)
    add_set_option(p, "data.cap=1000")
    flag = functools.partial(setting_flag, p)
    flag("--method", key="method", choices=tuple(METHODS),
         help="what is trained (see below; no default: give it or a --config)")  # fmt: skip
    flag("--prompt", key="prompt", choices=prompt_names(),
         help="soft prompt: shallow (input embeddings) or deep (every attention layer); default none for "
              "mtl-t, shallow otherwise")  # fmt: skip
    flag("--prompt-length", key="prompt_length", type=positive_int, help="prompt tokens")
    flag("--model", key="model", help="Hub id, model dir, or 'tiny' (the offline tiny T5)")
    flag("--data", key="data.path", help="training data: P3 folder, suite dir, JSONL/Parquet file or folder")
    flag("--tasks", key="data.tasks", nargs="+", convert=_tasks,
         help="templates to train on, or 't0-train' (default: all training templates)")  # fmt: skip
    flag("--max-steps", key="max_steps", type=positive_int, help="optimizer steps (default: one epoch of the mixture)")
    flag("--epochs", key="epochs", type=positive_float, help="passes over the mixture when --max-steps is not given ")
    flag("--batch-size", key="batch_size", type=positive_int, help="examples per optimizer step over all processes")
    flag("--micro-batch-size", key="micro_batch_size", type=positive_int,
         help="examples per forward pass per process (gradient accumulation)")  # fmt: skip
    flag("--lr", key="lr", type=learning_rate, help="Adafactor learning rate, constant")
    flag("--cap", key="data.cap", type=positive_int, help="examples per template in the mixture")
    flag("--max-source-len", key="data.max_source_len", type=positive_int, help="source tokens")
    flag("--max-target-len", key="data.max_target_len", type=positive_int, help="target tokens")
    flag("--save-every", key="save_every", type=non_negative_int, help="checkpoint every N steps (0: only at the end)")
    flag("--log-every", key="log_every", type=positive_int, help="metrics.jsonl line every N steps")
    flag("--seed", key="seed", type=non_negative_int, help="seed of data order, prompt init and dropout")
    flag("--precision", key="precision", choices=("fp32", "bf16"), help="bf16 autocast on GPUs; fp32 elsewhere")
    flag("--meta-batch-size", key="meta.meta_batch_size", type=positive_int,
         help="fomaml/reptile: tasks per outer step")  # fmt: skip
    flag("--inner-steps", key="meta.inner_steps", type=non_negative_int,
         help="fomaml/reptile: support batches = inner prompt steps")  # fmt: skip
    flag("--task-batch-size", key="meta.task_batch_size", type=positive_int,
         help="fomaml/reptile: examples per support/query batch")  # fmt: skip
    flag("--inner-lr", key="meta.inner_lr", type=learning_rate, help="fomaml/reptile: inner Adafactor learning rate")
    p.set_defaults(func=run_pretrain)


def _register_fewshot(subparsers: argparse._SubParsersAction) -> None:
    from promptability.model.prompts import PROMPT_KINDS

    f = subparsers.add_parser(
        "fewshot",
        help="16-shot prompt tuning + evaluation on every held-out template",
        description="Few-shot prompt tuning of a (pretrained) model, as in the paper's 16-shot evaluation. "
        "Settings: the defaults of FewShotConfig, then --set and the named flags in the order given.",
        epilog=FEWSHOT_EPILOG,
        formatter_class=help_formatter("promptability.train.config:FewShotConfig"),
    )
    f.add_argument("--model", required=True, help="model dir (a pretrain --out), HF dir or Hub id")
    f.add_argument("--data", required=True, help="data with held-out templates: P3 folder, suite dir, JSONL files")
    f.add_argument("--out", required=True, help="output dir: seed-S/ run dirs and summary.json")
    add_no_progress(f)
    add_set_option(f, "max_source_len=512")
    flag = functools.partial(setting_flag, f)
    flag("--shots", key="shots", type=positive_int, help="examples per template")
    flag("--epochs", key="epochs", type=positive_int, help="steps on the fixed batch")
    flag("--seeds", key="seeds", type=non_negative_int, nargs="+", help="few-shot samples")
    flag("--prompt", key="prompt", choices=tuple(PROMPT_KINDS),
         help="prompt kind for a model without one (default: the model's, else shallow)")  # fmt: skip
    flag("--prompt-length", key="prompt_length", type=positive_int, help="length of a fresh prompt")
    flag("--tasks", key="tasks", nargs="+", help="templates (default: every held-out template in --data)")
    flag("--lr", key="lr", type=learning_rate, help="Adafactor learning rate")
    flag("--eval-batch-size", key="eval_batch_size", type=positive_int, help="sources per evaluation batch")
    flag("--draw", key="draw", choices=("auto", "reference", "random"),
         help="which shots: reference = the paper's one fixed 16-shot subsample of each P3 template "
              "(md5-checked; seeds then vary only a fresh prompt's initialisation and dropout), random = "
              "a seeded draw per seed, auto = reference on P3 data with 16 shots, random elsewhere")  # fmt: skip
    flag(
        "--reference-subsample",
        key="draw",
        nargs=0,
        const="reference",
        help="the same as --draw reference (the default draw is auto)",
    )
    flag("--no-source-eos", key="source_eos", nargs=0, const=False,
         help="no EOS after the source, tuning and evaluation (as official T0 checkpoints were trained; "
              "the paper appends it: the default)")  # fmt: skip
    flag("--templates-per-step", key="templates_per_step", type=positive_int,
         help="tune this many templates' prompts together in one batch: the same result, fewer and "
              "fuller steps")  # fmt: skip
    flag("--micro-batch-tokens", key="micro_batch_tokens", type=non_negative_int,
         help="run each template's shots as micro-batches of at most this many padded tokens, similar lengths "
              "together: the same gradient up to float order (and dropout), less padding, faster on a CPU; 0, the default: "
              "one batch")  # fmt: skip
    flag("--score", key="score", choices=("mean", "sum"), help="choice score: mean or sum of token log-probs")
    flag("--precision", key="precision", choices=("fp32", "bf16"), help="bf16 autocast on GPUs")
    f.set_defaults(func=run_fewshot)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the defaults, an optional --config YAML, then --set and the named flags (validated)."""
    from promptability.train.config import ConfigError, TrainConfig, apply_overrides, load_config

    settings = settings_of(args)
    if not (args.config or "method" in settings):
        raise ConfigError("give --method (mtl-t, mtl-p, mtl-tp, fomaml, reptile) or a --config file")
    config = load_config(args.config) if args.config else TrainConfig()
    if "method" in settings and "prompt" not in settings and config.method != settings["method"]:
        config.prompt = None  # the file's prompt belonged to its method; re-derive for the new one
    return apply_overrides(config, settings).validate()


def run_pretrain(args: argparse.Namespace) -> int:
    from promptability.train.loop import NonFiniteLossError
    from promptability.train.pretrain import pretrain

    config = build_config(args)
    try:
        result = pretrain(config, args.out, resume=args.resume, progress=not args.no_progress)
    except NonFiniteLossError as err:  # not the input's fault: exit code 1
        print(f"error: {err}", file=sys.stderr)
        return 1
    loss = result.last.get("loss")
    print(
        f"{config.method} ({config.prompt} prompt): {result.steps} steps, {result.examples} examples, "
        f"{result.wall_time_s:.1f}s"
        + (f", final loss {loss:.4f}" if loss is not None else "")
        + f" -> {Path(args.out)}"
    )
    return 0


def run_fewshot(args: argparse.Namespace) -> int:
    from promptability.train.config import FewShotConfig, apply_overrides
    from promptability.train.fewshot import fewshot

    config = apply_overrides(FewShotConfig(), settings_of(args))
    summary = fewshot(args.model, args.data, args.out, config, progress=not args.no_progress)
    acc = summary["mean_accuracy"]
    line = f"{summary['templates']} templates x {len(summary['seeds'])} seeds: mean accuracy {acc['mean'] * 100:.2f}"
    line += f" ± {acc['std'] * 100:.2f}"
    if summary.get("arg"):
        line += f", ARG {summary['arg']['mean']:.2f} ± {summary['arg']['std']:.2f}"
    print(f"{line} -> {Path(args.out) / 'summary.json'}")
    return 0
