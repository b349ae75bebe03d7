"""`promptability data ...`: look at the template registry and the data."""

from __future__ import annotations

import argparse
from collections import Counter

from promptability.cli.common import add_group, add_no_progress, fail, given
from promptability.data import hub, registry
from promptability.data.schema import DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    about = "List the T0/P3 templates of the registry; build and inspect evaluation data."
    sub = add_group(subparsers, "data", "data_command", "DATA_COMMAND",
                    help="list P3 templates; build and inspect data", description=about)  # fmt: skip

    list_help = "show the T0/P3 templates of the registry, with counts"
    listing = sub.add_parser("list", help=list_help, description=list_help)
    listing.add_argument("--split", choices=("train", "heldout", "dev"), help="one split only (default: all three)")
    listing.add_argument("--group", help="held-out dataset group only, e.g. RTE or ANLI (implies --split heldout)")
    listing.set_defaults(func=cmd_list)
    from promptability.suite.generate import add_suite_command

    add_suite_command(sub)
    _register_fetch(sub)


def _register_fetch(sub: argparse._SubParsersAction) -> None:
    fetch_help = f"download P3 template folders from the Hugging Face Hub ({hub.P3_REPO}) or its local cache"
    fetch = sub.add_parser("fetch", help=fetch_help, description=fetch_help)
    fetch.add_argument("source", choices=("p3",), help="what to fetch (P3's TFRecord template folders)")
    fetch.add_argument("--out", required=True, help="folder to fill: OUT/data/<template>/, readable as --data OUT")
    fetch.add_argument("--train", action="store_true", help="the 313 T0 training templates (train split)")
    fetch.add_argument(
        "--heldout", action="store_true", help="the 116 held-out templates (evaluation and few-shot splits)"
    )
    fetch.add_argument("--dev", action="store_true", help="the 42 dev templates (evaluation and few-shot splits)")
    fetch.add_argument("--templates", nargs="+", default=[], metavar="NAME", help="these P3 templates too")
    fetch.add_argument("--splits", nargs="+", metavar="SPLIT", help="these splits of every template instead")
    fetch.add_argument("--revision", help=f"branch, tag or commit of {hub.P3_REPO} (default: {hub.P3_REVISION})")
    fetch.add_argument("--cache-dir", help="the Hub cache to download through (default: HF_HUB_CACHE)")
    add_no_progress(fetch)
    fetch.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    names = hub.select_templates(train=args.train, heldout=args.heldout, dev=args.dev, names=args.templates)
    report = hub.fetch_p3(
        args.out, names, progress=not args.no_progress, **given(args, "splits", "revision", "cache_dir")
    )
    print(
        f"{len(report.templates)} P3 templates in {report.out / 'data'} ({hub.P3_REPO} at {report.commit}): "
        f"{report.fetched} files fetched, {report.kept} already there"
        + (f", {len(report.provided)} template folders already in place" if report.provided else "")
    )
    print(f"read them with --data {report.out}; {report.out / hub.MANIFEST} records the files")
    return 0


def _dataset(name: str) -> str:
    try:
        return registry.template_dataset(name)
    except KeyError:
        return "?"


def _plain(title: str, names: list[str]) -> list[str]:
    datasets = Counter(_dataset(n) for n in names)
    lines = [f"{title}: {len(names)} templates from {len(datasets)} datasets", f"  {'dataset':<28} template"]
    lines += [f"  {_dataset(n):<28} {n}" for n in names]
    return lines


def _heldout(group: str | None) -> list[str]:
    templates = registry.heldout_templates()
    groups = Counter(info["group"] for info in templates.values())
    if group is not None:
        match = [g for g in groups if g.lower() == group.lower()]
        if not match:
            raise DataError(f"unknown group '{group}'; the held-out groups are: {', '.join(sorted(groups))}")
        templates = {n: i for n, i in templates.items() if i["group"] == match[0]}
    per_group = Counter(info["group"] for info in templates.values())
    plural = "group" if len(per_group) == 1 else "groups"
    lines = [f"heldout: {len(templates)} templates in {len(per_group)} {plural}"]
    lines.append(f"  {'group':<11} {'choices':>7} {'eval':>6}  template")
    unknown = 0
    for name, info in sorted(templates.items(), key=lambda kv: (kv[1]["group"], kv[0])):
        count = info.get("eval_instances")
        unknown += count is None
        lines.append(f"  {info['group']:<11} {info['num_choices']:>7} {'-' if count is None else count:>6}  {name}")
    total = sum(i.get("eval_instances") or 0 for i in templates.values())
    lines.append(f"  eval instances in all: {total}" + (" (without the '-' templates)" if unknown else ""))
    lines.append("  per group: " + ", ".join(f"{g} {n}" for g, n in sorted(per_group.items())))
    if unknown:
        lines.append(f"  eval '-': {unknown} COPA templates apply only to its cause or its effect questions (48 or 52)")
    return lines


def cmd_list(args: argparse.Namespace) -> int:
    split = args.split or ("heldout" if args.group else None)
    if args.group and split != "heldout":
        return fail("--group applies to the held-out templates only (use --split heldout)")
    blocks: list[list[str]] = []
    for name in [split] if split else ["train", "heldout", "dev"]:
        if name == "heldout":
            blocks.append(_heldout(args.group))
        else:
            blocks.append(_plain(name, registry.train_templates() if name == "train" else registry.dev_templates()))
    print("\n\n".join("\n".join(b) for b in blocks))
    return 0
