"""`promptability evaluate`: rank-classification accuracy of a model on prompted data."""

from __future__ import annotations

import argparse
from pathlib import Path

from promptability.cli.common import given, non_negative_int, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="zero-shot (or prompt-tuned) accuracy by rank classification",
        description=(
            "Scores every answer choice by its mean log-likelihood given the prompted source (one encoder pass "
            "per source, all choices decoded together), predicts the best, and writes predictions.jsonl, "
            "accuracy.json, summary.txt and run.json into --out."
        ),
    )
    p.add_argument(
        "--model", required=True, help="model directory (pretrain output, prompt-only save, HF dir) or Hub id"
    )
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="JSONL/Parquet file or folder, P3 save_to_disk or TFRecord folder, suite dir")
    data.add_argument(
        "--source", metavar="[DATASET=]KIND:LOCATION",
        help="raw rows of one dataset in the Hub's schema, rendered by its promptsource templates: "
             "hub:super_glue/rte[@REVISION] (default revision main), super_glue/rte=parquet:DIR, "
             "=disk:DIR (save_to_disk), =json:DIR, =curated:DIR (../shared/realdata's files)",
    )  # fmt: skip
    p.add_argument(
        "--templates", help="with --source: promptsource templates folder (default: the ones shipped in the package)"
    )
    p.add_argument("--instances", type=positive_int, help="with --source: the first N rows of the split (default all)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--tasks", nargs="+", help="evaluate only these templates")
    p.add_argument(
        "--split", help="split to read (default: validation; test for StoryCloze; with --source: "
        "the dataset's split, validation or dev for ANLI)"
    )  # fmt: skip
    p.add_argument(
        "--score", choices=("mean", "sum"), default="mean", help="mean (default) or sum of choice-token log-probs"
    )
    p.add_argument("--batch-size", type=positive_int, help="sources per batch (default 32)")
    p.add_argument("--max-source-len", type=positive_int, help="source tokens (default 768)")
    p.add_argument("--max-target-len", type=positive_int, help="target tokens (default 192)")
    p.add_argument(
        "--method", help="method name recorded in run.json (default: from the model's train.json, else 'none')"
    )
    p.add_argument(
        "--shots", type=non_negative_int, help="shot count recorded in run.json (default: from the model, else 0)"
    )
    p.add_argument(
        "--model-size", help="size label for the report (default: from the model's train.json, else its name)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="fp32 (default, as the paper) or bf16 autocast (GPUs); recorded in run.json",
    )  # fmt: skip
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="the same as --precision bf16")
    p.add_argument(
        "--no-source-eos", dest="source_eos", action="store_false",
        help="no EOS after the source (as official T0 checkpoints were trained; the paper appends it); "
             "recorded in run.json",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from promptability.data.fingerprint import records_fingerprint
    from promptability.data.readers import read_examples
    from promptability.data.schema import DataError
    from promptability.data.sources import Source, source_records
    from promptability.data.suite_layout import find_meta
    from promptability.eval.groups import groups_for
    from promptability.eval.rank import PartialResults, evaluate, write_run
    from promptability.io import ensure_writable_dir
    from promptability.model import load_model
    from promptability.model.loading import model_info, model_size

    ensure_writable_dir(args.out)  # before any scoring: a read-only --out must not cost the evaluation
    tasks = args.tasks
    if args.source is not None:
        source = Source(args.source)
        records = source_records(source, args.split, tasks=tasks, templates=args.templates, limit=args.instances)
        data = str(source.spec)
    else:
        if tasks is None and (suite := find_meta(args.data)) is not None:  # a suite: its held-out templates
            tasks = [t for t, info in suite["templates"].items() if info["role"] == "heldout"]
        records, data = read_examples(args.data, split=args.split, tasks=tasks), str(args.data)
    if not records:
        raise DataError(f"{data}: no records to evaluate")
    # What the scores depend on; finished tasks in --out/partial are reused only if these match.
    settings = {
        "model": str(args.model), "data": data, "split": args.split, "tasks": args.tasks,
        "score": args.score, "max_source_len": args.max_source_len, "max_target_len": args.max_target_len,
        "bf16": args.precision == "bf16", "records": records_fingerprint(records),
    }  # fmt: skip
    if not args.source_eos:  # only when set, so that partial results of earlier versions stay usable
        settings["source_eos"] = False
    partial = PartialResults(args.out, settings)
    todo = [r for r in records if r["task"] not in partial.done]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(args.model).to(device)
    info = model_info(args.model)
    if len(todo) < len(records):
        print(f"resuming: {len(partial.done)} finished templates kept from {partial.dir}")
    rows = evaluate(
        model,
        todo,
        score=args.score,
        **given(args, "batch_size", "max_source_len", "max_target_len"),
        autocast=torch.bfloat16 if args.precision == "bf16" else None,
        on_task=partial.save,
        source_eos=args.source_eos,
    )
    if len(todo) < len(records):
        rows = sorted(partial.rows(), key=lambda r: (r["task"], r["index"]))
    run_info = {
        "method": args.method or info.get("method", "none"),
        "prompt": model.prompt_kind,
        "shots": args.shots if args.shots is not None else int(info.get("shots", 0)),
        "model": str(args.model),
        "model_size": args.model_size or model_size(args.model, info),
        "seed": info.get("seed"),
        "score": args.score,
        "data": data,
        "groups": groups_for(records, args.data),  # a --source's dataset: the registry's groups, else its own
        "precision": args.precision,
        "source_eos": args.source_eos and not model.is_causal,  # the decoder-only layout never has one
    }
    accuracy = write_run(args.out, rows, run_info)
    partial.clear()
    print((Path(args.out) / "summary.txt").read_text(), end="")
    mean = sum(accuracy.values()) / len(accuracy)
    print(f"{len(rows)} instances, {len(accuracy)} templates, mean accuracy {mean * 100:.2f}% -> {args.out}")
    return 0
