"""``promptability study real``: the miniature study on real data with a real pretrained LM."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from promptability.cli.common import add_group, add_no_progress, fail, given, learning_rate, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_group(
        subparsers, "study", "study_command", "STUDY",
        help="studies on real data (study real: a real LM on the real held-out tasks)",
        description="Studies on real data. `study real` renders P3's templates (promptsource YAMLs) over real data, "
        "continues pretraining a real LM (MTL-T, MTL-TP shallow and deep), evaluates 0-shot and 16-shot on the held-out "
        "datasets and writes the Table-1 style report. Stages resume where they stopped.",
    )  # fmt: skip
    real = sub.add_parser(
        "real", help="the real miniature study (about an hour on 2 CPU cores with smollm2-135m)",
        description="Real data (curated files in original formats, the layout of ../shared/realdata described in its README, "
        "or per dataset any Hub name or local save_to_disk/Parquet/JSON folder in the Hub's schema) plus "
        "promptsource's templates -> MTL continued pretraining -> 0/16-shot rank classification -> report. "
        "Install the default model first: promptability model install smollm2-135m.",
    )  # fmt: skip
    real.add_argument("--data", help="folder of the curated real data files, e.g. ../shared/realdata")
    real.add_argument(
        "--source", action="append", default=[], metavar="[DATASET=]KIND:LOCATION",
        help="where one dataset's rows come from, instead of --data (repeatable): hub:super_glue/rte[@REVISION] "
             "(default revision main), hellaswag=parquet:DIR, anli/r1=disk:DIR, dream=json:DIR",
    )  # fmt: skip
    real.add_argument(
        "--templates", help="promptsource templates folder, e.g. a checkout's promptsource/templates "
        "(default: the templates shipped in the package)"
    )  # fmt: skip
    real.add_argument("--out", default="runs/study-real", help="output folder (default: runs/study-real)")
    real.add_argument("--model", default="smollm2-135m", help="model to study: a named model, folder or Hub id")
    real.add_argument(
        "--scale", choices=("default", "quick", "gpu"), default="default",
        help="default: about an hour on 2 CPU cores; gpu: paper-like (64 instances per template, 1,000 MTL steps x "
        "32, 100 few-shot epochs, 3 pretraining seeds) for one GPU, see scripts/study-gpu.sh; quick: a smoke run",
    )  # fmt: skip
    real.add_argument("--quick", action="store_true", help="the same as --scale quick")
    real.add_argument("--force", action="store_true", help="start over instead of reusing finished stages")
    real.add_argument("--eval-instances", type=positive_int, help="instances per held-out template (default 16)")
    real.add_argument("--mtl-steps", type=positive_int, help="continued-pretraining steps per row (default 40)")
    real.add_argument(
        "--lr", type=learning_rate, help="continued-pretraining learning rate (default 1e-4; the paper: 1e-3)"
    )
    real.add_argument("--fewshot-epochs", type=positive_int, help="few-shot prompt-tuning epochs (default 6)")
    real.add_argument("--fewshot-lr", type=learning_rate, help="few-shot prompt-tuning learning rate (default 1e-3)")
    real.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                      help="autocast precision (default auto: bf16 where the hardware has native bf16, i.e. an "
                           "Ampere or newer GPU or a CPU with AVX512_BF16 or AMX, else fp32)")  # fmt: skip
    real.add_argument(
        "--seeds", type=positive_int, metavar="N",
        help="continued-pretraining seeds per row: 0..N-1 (default 1); the report's significance counts them",
    )  # fmt: skip
    add_no_progress(real, "--quiet")
    real.set_defaults(func=cmd_real)


def cmd_real(args: argparse.Namespace) -> int:
    from promptability.data.sources import SourceError, source_map
    from promptability.studies.pipeline import StudySettingsError
    from promptability.studies.real import SCALES, run_real_study

    overrides = given(args, "eval_instances", "mtl_steps", "lr", "fewshot_epochs", "fewshot_lr", "precision")
    if args.seeds is not None:
        overrides["pretrain_seeds"] = list(range(args.seeds))
    scale = replace(SCALES["quick" if args.quick else args.scale], **overrides)
    try:
        sources = source_map(args.source)
        table = run_real_study(args.data, args.templates, args.out, args.model, scale, force=args.force,
                               progress=not args.no_progress, sources=sources)  # fmt: skip
    except (FileNotFoundError, StudySettingsError, SourceError) as error:
        return fail(error, sys.stdout)
    print(table)
    print(f"report: {args.out}/report/")
    return 0
