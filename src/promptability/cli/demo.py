"""`promptability demo`: the paper's study in miniature, offline, on a CPU."""

from __future__ import annotations

import argparse

from promptability.cli.common import add_no_progress, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole study in miniature, offline: suite, tiny LM, every Table-1 row, 0/16-shot, report",
        description=(
            "Generates the offline task suite, builds a tiny T5 with a short LM-adaptation stage (per seed), runs every "
            "continued-pretraining configuration of the paper's Table 1 (MTL-T, MTL-P, MTL-TP, FOMAML, Reptile; "
            "shallow and deep prompts) with 2 pretraining seeds each (--seeds), evaluates each model zero-shot and "
            "after 16-shot prompt tuning, checks the instrument (the bases' floor and an oracle's ceiling per "
            "held-out group) and writes a Table-1-shaped report: ARG as mean ± std over the seeds, and "
            "significance against MTL-T by a hierarchical bootstrap over pretraining seeds, few-shot seeds and "
            "instances. About 15 minutes on 2 quiet CPU cores (longer when they are shared). Finished stages are reused "
            "on a second run; an interrupted training stage resumes from its last checkpoint."
        ),
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument(
        "--scale", choices=("default", "quick", "large"), default="default",
        help="default: the 15-minute miniature; large: about 50 minutes (3 pretraining seeds, twice the steps, 2 "
        "few-shot draws); quick: a minute-scale run with tiny counts (used by the tests). The numbers of each are "
        "the Scale presets in promptability/studies/demo.py",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="the same as --scale quick")
    p.add_argument(
        "--check",
        action="store_true",
        help="only the instrument check: the bases' floor and the oracles' ceiling per held-out group, over the seeds",
    )
    p.add_argument("--force", action="store_true", help="delete --out and recompute every stage")
    p.add_argument(
        "--seeds", type=positive_int, metavar="N",
        help="pretraining seeds: 0..N-1, one base and one run per row each (default 2; --quick: 1); a rerun with more "
        "reuses the first",
    )  # fmt: skip
    p.add_argument(
        "--jobs", type=positive_int, metavar="N",
        help="stages run N at a time, in separate processes, one torch thread each (default: the CPU cores this "
        "process may use); N changes the time, not the numbers",
    )  # fmt: skip
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from promptability.studies.demo import run_demo
    from promptability.studies.pipeline import available_cores

    seeds = None if args.seeds is None else list(range(args.seeds))
    scale = "quick" if args.quick else args.scale
    table = run_demo(args.out, scale, force=args.force, progress=not args.no_progress, check=args.check,
                     pretrain_seeds=seeds, jobs=args.jobs or available_cores())  # fmt: skip
    print()
    print(table)
    files = "instrument.md" if args.check else "table.md, table.csv, table.json, per_group_accuracy.png, instrument.md"
    print(f"report: {args.out}/report/ ({files})")
    return 0
