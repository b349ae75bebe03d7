"""`promptability pretrain` and `promptability fewshot`: continued pretraining and 16-shot prompt tuning."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
  accelerate launch --num_processes 8 -m promptability pretrain --config configs/t5-large/mtl-tp-shallow.yaml \\
      --data p3/ --out runs/large-mtl-tp-shallow --precision bf16
"""

FEWSHOT_EPILOG = """\
For every held-out template of --data (or --tasks) and every seed: draws --shots examples from the
template's training split (StoryCloze: validation), resets the prompt to the model's own (a fresh
--prompt kind when the model has none, e.g. an mtl-t model), trains only the prompt for --epochs
steps on that one batch (Adafactor lr 1e-3, clip 1.0) and evaluates the final prompt on the
template's evaluation split. Writes OUT/seed-S/ run dirs (predictions.jsonl, accuracy.json, run.json),
tuned prompts under OUT/seed-S/prompts/, and OUT/summary.json (mean and spread over seeds).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from promptability.model.prompts import PROMPT_KINDS, prompt_names

    p = subparsers.add_parser(
        "pretrain",
        help="continued pretraining: mtl-t, mtl-p, mtl-tp, fomaml, reptile",
        description="Continued multi-task or meta-learning pretraining of a T5 with an optional soft prompt.",
        epilog=PRETRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML file of settings (configs/*.yaml); flags given here override it")
    p.add_argument("--method", choices=("mtl-t", "mtl-p", "mtl-tp", "fomaml", "reptile"), help="what is trained (see below)")
    p.add_argument("--prompt", choices=prompt_names(),
                   help="soft prompt: shallow (input embeddings) or deep (every attention layer); default none for "
                        "mtl-t, shallow otherwise")  # fmt: skip
    p.add_argument("--prompt-length", type=int, help="prompt tokens (default 20)")
    p.add_argument("--model", help="Hub id, model dir, or 'tiny' (offline tiny T5; default)")
    p.add_argument("--data", help="training data: P3 folder, suite dir, JSONL/Parquet file or folder")
    p.add_argument("--tasks", nargs="+", help="templates to train on, or 't0-train' (default: all training templates)")
    p.add_argument("--out", required=True, help="output dir; becomes the trained model dir")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: one epoch of the mixture)")
    p.add_argument("--epochs", type=float, help="passes over the mixture when --max-steps is not given (default 1)")
    p.add_argument("--batch-size", type=int, help="examples per optimizer step over all processes (paper: 4096)")
    p.add_argument("--micro-batch-size", type=int, help="examples per forward pass per process (gradient accumulation)")
    p.add_argument("--lr", type=float, help="Adafactor learning rate, constant (default 1e-3)")
    p.add_argument("--cap", type=int, help="examples per template in the mixture (default 500000)")
    p.add_argument("--max-source-len", type=int, help="source tokens (default 768)")
    p.add_argument("--max-target-len", type=int, help="target tokens (default 192)")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps (0: only at the end; default 500)")
    p.add_argument("--log-every", type=int, help="metrics.jsonl line every N steps (default 1)")
    p.add_argument("--seed", type=int, help="seed of data order, prompt init and dropout (default 0)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="bf16 autocast on GPUs; fp32 (default) elsewhere")
    p.add_argument("--meta-batch-size", type=int, help="fomaml/reptile: tasks per outer step (paper: 128)")
    p.add_argument("--inner-steps", type=int, help="fomaml/reptile: support batches = inner prompt steps (paper: 7)")
    p.add_argument("--task-batch-size", type=int, help="fomaml/reptile: examples per support/query batch (paper: 16)")
    p.add_argument("--inner-lr", type=float, help="fomaml/reptile: inner Adafactor learning rate (paper: 1e-3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_pretrain)

    f = subparsers.add_parser(
        "fewshot",
        help="16-shot prompt tuning + evaluation on every held-out template",
        description="Few-shot prompt tuning of a (pretrained) model, as in the paper's 16-shot evaluation.",
        epilog=FEWSHOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--model", required=True, help="model dir (a pretrain --out), HF dir or Hub id")
    f.add_argument("--data", required=True, help="data with held-out templates: P3 folder, suite dir, JSONL files")
    f.add_argument("--out", required=True, help="output dir: seed-S/ run dirs and summary.json")
    f.add_argument("--shots", type=int, default=16, help="examples per template (default 16)")
    f.add_argument("--epochs", type=int, default=100, help="steps on the fixed batch (default 100)")
    f.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="few-shot samples (default 0 1 2)")
    f.add_argument("--prompt", choices=tuple(PROMPT_KINDS),
                   help="prompt kind for a model without one (default: the model's, else shallow)")  # fmt: skip
    f.add_argument("--prompt-length", type=int, default=20, help="length of a fresh prompt (default 20)")
    f.add_argument("--tasks", nargs="+", help="templates (default: every held-out template in --data)")
    f.add_argument("--lr", type=float, default=1e-3, help="Adafactor learning rate (default 1e-3)")
    f.add_argument("--eval-batch-size", type=int, default=32, help="sources per evaluation batch (default 32)")
    f.add_argument("--reference-subsample", action="store_true",
                   help="P3: use the paper's reference 16-shot subsample of each template (md5-checked) "
                        "instead of sampling; seeds then vary only a fresh prompt's initialisation")  # fmt: skip
    f.add_argument("--templates-per-step", type=int, default=1,
                   help="tune this many templates' prompts together in one batch: the same result, fewer and "
                        "fuller steps (default 1)")  # fmt: skip
    f.add_argument("--score", choices=("mean", "sum"), default="mean", help="choice score (default mean log-prob)")
    f.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast on GPUs")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=run_fewshot)


def build_config(args: argparse.Namespace):
    """The TrainConfig of ``pretrain`` flags over an optional --config YAML (validated)."""
    from promptability.train.config import ConfigError, TrainConfig, apply_overrides, load_config

    if not (args.config or args.method):
        raise ConfigError("give --method (mtl-t, mtl-p, mtl-tp, fomaml, reptile) or a --config file")
    config = load_config(args.config) if args.config else TrainConfig(method=args.method)
    tasks = args.tasks[0] if args.tasks and args.tasks == ["t0-train"] else args.tasks
    overrides = {
        "method": args.method, "prompt": args.prompt, "prompt_length": args.prompt_length, "model": args.model,
        "data.path": args.data, "data.tasks": tasks, "data.cap": args.cap, "data.max_source_len": args.max_source_len,
        "data.max_target_len": args.max_target_len, "max_steps": args.max_steps, "epochs": args.epochs,
        "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size, "lr": args.lr,
        "save_every": args.save_every, "log_every": args.log_every, "seed": args.seed, "precision": args.precision,
        "meta.meta_batch_size": args.meta_batch_size, "meta.inner_steps": args.inner_steps,
        "meta.task_batch_size": args.task_batch_size, "meta.inner_lr": args.inner_lr,
    }  # fmt: skip
    if args.method and args.config and args.prompt is None and config.method != args.method:
        config.prompt = None  # the file's prompt belonged to its method; re-derive for the new one
    return apply_overrides(config, overrides).validate()


def run_pretrain(args: argparse.Namespace) -> int:
    from promptability.data.schema import DataError
    from promptability.model.prompted import PromptSettingsError
    from promptability.train.config import ConfigError
    from promptability.train.loop import NonFiniteLossError
    from promptability.train.mtl import pretrain

    try:
        config = build_config(args)
        result = pretrain(config, args.out, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, DataError, PromptSettingsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    loss = result.last.get("loss")
    print(
        f"{config.method} ({config.prompt} prompt): {result.steps} steps, {result.examples} examples, "
        f"{result.wall_time_s:.1f}s" + (f", final loss {loss:.4f}" if loss is not None else "") + f" -> {Path(args.out)}"
    )
    return 0


def run_fewshot(args: argparse.Namespace) -> int:
    from promptability.data.schema import DataError
    from promptability.model.prompted import PromptSettingsError
    from promptability.train.config import ConfigError, FewShotConfig
    from promptability.train.fewshot import fewshot

    config = FewShotConfig(
        shots=args.shots, epochs=args.epochs, seeds=list(args.seeds), prompt=args.prompt,
        prompt_length=args.prompt_length, tasks=args.tasks, lr=args.lr, eval_batch_size=args.eval_batch_size,
        templates_per_step=args.templates_per_step, reference=args.reference_subsample,
        score=args.score, precision=args.precision,
    )  # fmt: skip
    try:
        summary = fewshot(args.model, args.data, args.out, config, progress=not args.no_progress)
    except (ConfigError, DataError, PromptSettingsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    acc = summary["mean_accuracy"]
    line = f"{summary['templates']} templates x {len(summary['seeds'])} seeds: mean accuracy {acc['mean'] * 100:.2f}"
    line += f" ± {acc['std'] * 100:.2f}"
    if summary.get("arg"):
        line += f", ARG {summary['arg']['mean']:.2f} ± {summary['arg']['std']:.2f}"
    print(f"{line} -> {Path(args.out) / 'summary.json'}")
    return 0
