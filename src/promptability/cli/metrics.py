"""`promptability arg`, `compare` and `report`: ARG, paired bootstrap, Table 1.

``arg`` and ``compare`` also read another tool's run: a folder with only ``predictions.jsonl`` (and maybe
``accuracy.json``), whose identity the options give (``eval.outside``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from promptability.cli.common import given, non_negative_int, positive_int, probability
from promptability.eval.metrics import arg_breakdown, few
from promptability.eval.outside import IDENTITY_FIELDS, load_any_run
from promptability.eval.provenance import SETTINGS, draw, mismatches, recorded, setting
from promptability.eval.runs import (
    Run,
    RunError,
    check_same_instances,
    find_runs,
    is_outside_run,
    load_accuracies,
)
from promptability.eval.seeds import TESTS, compare_runs, split_by_pretrain_seed, test_text
from promptability.io import read_json_file, write_json_atomic
from promptability.model.prompts import prompt_names


def _identity(args: argparse.Namespace, suffix: str = "") -> dict[str, object]:
    """What the options say an outside run is (None where not given)."""
    return {key: getattr(args, key + suffix) for key in IDENTITY_FIELDS}


def _outside_text(run: Run) -> str:
    shots = "shots unknown" if run.shots is None else f"{run.shots}-shot"
    return f"another tool's predictions: {run.method}, prompt {run.prompt}, {shots}, {run.model}"


def _cmd_arg(args: argparse.Namespace) -> int:
    outside = meta = None
    if is_outside_run(Path(args.file)):
        outside = load_any_run(args.file, identity=_identity(args))
        accuracies, groups = outside.accuracy, outside.arg_groups
    elif given := [f"--{k}" for k, v in _identity(args).items() if v is not None]:
        raise RunError(f"{args.file}: {', '.join(given)} describe a folder with only another tool's predictions")
    else:
        accuracies, groups, meta = load_accuracies(args.file)
    if args.groups:
        groups = read_json_file(args.groups, "groups")
    result = arg_breakdown(accuracies, groups, partial=args.partial)
    if not args.quiet:
        print(f"{'group':<16}{'templates':>10}{'accuracy':>10}{'gain (%)':>10}")
        for group, gain in result.per_group.items():
            print(
                f"{group:<16}{result.templates_per_group[group]:>10}{result.group_accuracy[group] * 100:>10.2f}{gain:>10.2f}"
            )
        if result.missing:
            print(f"missing templates ({len(result.missing)}): {few(result.missing)}")
        if result.ignored:
            print(f"unknown templates ignored ({len(result.ignored)}): {few(result.ignored)}")
        if outside is not None:
            print(f"run: {_outside_text(outside)}")
        elif meta is not None:  # what the run.json records of settings that change numbers
            print("run: " + ", ".join(f"{name} {recorded(meta, key)}" for key, name in SETTINGS.items()))
    print(f"{result.label()} (%): {result.value:.4f}")
    return 0


def _side(spec: str, name: str, identity: dict[str, object]) -> list[Run]:
    """A side of a comparison: a run dir, a folder of seed runs, or comma-separated run dirs (ours or outside)."""
    paths = find_runs(p for p in spec.split(",") if p)
    if any(v is not None for v in identity.values()) and not all(is_outside_run(p) for p in paths):
        raise RunError(f"run {name} ({spec}): --*-{name.lower()} options describe folders of another tool's "
                       f"predictions only; a run.json says what our runs are")  # fmt: skip
    runs = [load_any_run(path, require_predictions=True, identity=identity if is_outside_run(path) else None)
            for path in paths]  # fmt: skip
    configs = {run.config for run in runs}
    if len(configs) > 1:
        raise RunError(f"run {name} ({spec}) mixes configurations {sorted(configs)}; pass the seeds of one config")
    return runs


def _describe(runs: list[Run]) -> str:
    r = runs[0]
    if r.meta.get("outside"):
        return f"{_outside_text(r)}; {len(runs)} run(s)"
    seeds = ", ".join("-" if x.seed is None else str(x.seed) for x in runs)
    text = (
        f"{r.method}, prompt {r.prompt}, {r.shots}-shot, {r.model_family or r.model}; {len(runs)} run(s), seeds {seeds}"
    )
    text += "; " + ", ".join(f"{name} {setting(runs, key)}" for key, name in SETTINGS.items())
    text += f"; {draw(runs)}" if r.shots else ""
    text += "" if r.pretrain_seed is None else f"; {len(split_by_pretrain_seed(runs))} pretraining seed(s)"
    return text


def _cmd_compare(args: argparse.Namespace) -> int:
    runs_a, runs_b = _side(args.run_a, "A", _identity(args, "_a")), _side(args.run_b, "B", _identity(args, "_b"))
    check_same_instances(runs_a + runs_b)
    ours = [run for run in runs_a + runs_b if not run.meta.get("outside")]
    for run in runs_a + runs_b:  # another tool's run records no groups: those of the run it is compared with
        if ours and run.meta.get("outside"):
            run.groups = ours[0].groups
    groups = runs_a[0].arg_groups
    if any(run.arg_groups != groups for run in runs_a + runs_b):
        raise RunError("the runs carry different 'groups' in run.json")
    result = compare_runs(
        runs_a, runs_b, groups, partial=args.partial, **given(args, "test", "samples", "seed", "confidence")
    )
    label = "partial ARG" if result.partial else "ARG"
    for line in mismatches(runs_a, runs_b):
        print(f"warning: {line}", file=sys.stderr)
    print(f"A: {args.run_a} ({_describe(runs_a)})")
    print(f"B: {args.run_b} ({_describe(runs_b)})")
    print(f"{result.templates} templates, {result.instances} instances; {result.samples} resamples, seed {result.seed}")
    test = getattr(result, "test", "instances")
    print(f"test: {test} ({test_text(test)})")
    print(f"{label} A (%): {result.arg_a:.4f}")
    print(f"{label} B (%): {result.arg_b:.4f}")
    print(f"difference B - A: {result.difference:.4f}")
    print(f"{result.confidence:.0%} interval of the difference: [{result.ci_low:.4f}, {result.ci_high:.4f}]")
    print(f"p (fraction of resamples where B is not above A): {result.p_value:.4f}")
    if args.out:
        write_json_atomic(args.out, {"a": args.run_a, "b": args.run_b, "test": test, **result.to_dict()})
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from promptability.eval.report import build_report, render_markdown, write_report

    runs = [load_any_run(path) for path in tqdm(find_runs(args.runs), desc="loading runs", unit="run", disable=None)]
    if args.baseline and args.baseline not in {run.method for run in runs}:
        raise RunError(f"--baseline {args.baseline!r} matches no run (methods: {sorted({r.method for r in runs})})")
    report = build_report(
        runs,
        baseline=args.baseline or "mtl-t",
        partial=args.partial,
        **given(args, "samples", "seed", "alpha", "test"),
    )
    paths = write_report(report, args.out, scale_note=args.scale_note, partial=args.partial)
    print(render_markdown(report, args.scale_note))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "arg",
        help="average relative gain (ARG, %%) of an accuracy.json or run directory",
        description="Prints per-group gains, then the ARG as the last line. ANLI R1-R3 are pooled as one group.",
    )
    p.add_argument("file", help="accuracy.json-style file {template: accuracy} or a run directory")
    p.add_argument("--groups", help="JSON {template: {group, num_choices}} (default: run.json's, else P3 held-out)")
    p.add_argument("--partial", action="store_true", help="ARG over the groups present instead of an error")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the ARG line")
    _identity_options(p, "")
    p.set_defaults(func=_cmd_arg)

    p = subparsers.add_parser(
        "compare",
        help="paired bootstrap of the ARG difference between two runs",
        description=(
            "A side is one run, or the runs of one configuration (a folder of run dirs, or comma-separated run "
            "dirs): its pretraining seeds (run.json's pretrain_seed) x few-shot seeds. The default test, "
            "hierarchical, resamples each side's pretraining seeds, then each seed's few-shot runs, then the "
            "instances within each template (the same draws for both sides); --test instances resamples "
            "instances only, of the runs' averaged per-instance correctness. With one run per side the two "
            "agree exactly. p is the fraction of resamples where B's ARG is not above A's."
        ),
    )
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--samples", type=positive_int, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=non_negative_int, help="random seed (default 0)")
    p.add_argument("--confidence", type=probability, help="interval level (default 0.95)")
    p.add_argument("--test", choices=TESTS, help="significance test (default hierarchical; see above)")
    p.add_argument("--partial", action="store_true", help="allow runs covering only some groups")
    p.add_argument("--out", help="also write the result as JSON here")
    _identity_options(p, "-a")
    _identity_options(p, "-b")
    p.set_defaults(func=_cmd_compare)

    p = subparsers.add_parser(
        "report",
        help="Table 1 (Markdown, CSV, JSON) and a per-group accuracy plot from run directories",
        description=(
            "Rows: methods; columns: model size x prompt x shots; cells: ARG (mean ± std over seeds), "
            "marked † / ‡ when significantly above / below the baseline in the same column."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders searched for them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--baseline", help="method to test against (default mtl-t, when present)")
    p.add_argument("--scale-note", help="free text printed beside the table (model size, examples, steps)")
    p.add_argument("--samples", type=positive_int, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=non_negative_int, help="bootstrap seed (default 0)")
    p.add_argument("--alpha", type=probability, help="significance level (default 0.05)")
    p.add_argument(
        "--test", choices=TESTS, help="hierarchical (default: pretraining seeds, few-shot runs, instances) or instances"
    )
    p.add_argument("--partial", action="store_true", help="allow runs covering only some groups")
    p.set_defaults(func=_cmd_report)


def _identity_options(parser: argparse.ArgumentParser, suffix: str) -> None:
    """What a folder of another tool's predictions.jsonl (no run.json) is; each "unknown" when not given."""
    side = f" of run {suffix[1:].upper()}" if suffix else ""
    group = parser.add_argument_group(f"another tool's run{side} (a folder with predictions.jsonl, no run.json)")
    group.add_argument(f"--method{suffix}", help="its method, e.g. mtl-tp")
    group.add_argument(f"--prompt{suffix}", choices=prompt_names(), help="its prompt")
    group.add_argument(f"--shots{suffix}", type=non_negative_int, help="its number of shots")
    group.add_argument(f"--model{suffix}", help="its model, e.g. t5-large-lm-adapt")
