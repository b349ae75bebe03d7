"""`promptability generate`: greedy generation from a (prompted) model, for one text or a file of them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from promptability.cli.common import add_no_progress, given, positive_int

# A --input with one of these endings and no spaces names a file; when it is missing, that is an error, not a text.
FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".tsv", ".csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text from a model with its soft prompt (greedy, KV cache)",
        description=(
            "Continues each input greedily with the model and its prompt (shallow or deep; T5 or decoder-only), "
            "through Transformers' generate with the KV cache. Inputs are tokenized as evaluation tokenizes "
            "sources. --input is either the text itself, or a file: one input per line (blank lines skipped), or "
            "JSONL whose rows have a 'source' field. A text prints its generation; a file prints JSONL rows "
            "{line, source, generation}, or writes them to --out (atomically)."
        ),
    )
    p.add_argument(
        "--model", required=True, help="model directory (pretrain output, prompt-only save, HF dir) or Hub id"
    )
    p.add_argument("--input", required=True, metavar="TEXT|FILE", help="the input text, or a .txt/.jsonl file of them")
    p.add_argument("--out", metavar="FILE", help="write the JSONL rows here instead of printing them")
    p.add_argument("--max-new-tokens", type=positive_int, help="tokens to generate at most (default 32)")
    p.add_argument("--batch-size", type=positive_int, help="inputs per batch (default 8)")
    p.add_argument("--max-source-len", type=positive_int, help="source tokens kept (default 768)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument(
        "--no-source-eos", dest="source_eos", action="store_false",
        help="no EOS after a T5 source (as official T0 checkpoints were trained; the paper appends it)",
    )  # fmt: skip
    add_no_progress(p)
    p.set_defaults(func=run)


def read_inputs(spec: str) -> tuple[list[tuple[int, str]], bool]:
    """(line number, text) pairs and whether ``spec`` named a file; a text is line 1 of itself."""
    path = Path(spec)
    if not path.is_file():
        if path.suffix.lower() in FILE_SUFFIXES and not any(c.isspace() for c in spec):
            raise FileNotFoundError(2, "input file not found (to generate from this text, add a space)", spec)
        return [(1, spec)], False
    from promptability.io import BadFileError

    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    if path.suffix.lower() != ".jsonl" and not (lines and lines[0][1].lstrip().startswith("{")):
        return lines, True
    inputs = []
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadFileError(f"{path} line {n}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("source"), str):
            raise BadFileError(f"{path} line {n}: a JSONL input row needs a string field 'source'")
        inputs.append((n, row["source"]))
    return inputs, True


def run(args: argparse.Namespace) -> int:
    import torch

    from promptability.data.schema import DataError
    from promptability.io import write_jsonl_atomic
    from promptability.model import load_model
    from promptability.model.generation import generate_texts

    inputs, from_file = read_inputs(args.input)
    if not inputs:
        raise DataError(f"{args.input}: no inputs (every line is blank)")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(args.model).to(device)
    outputs = generate_texts(
        model,
        [text for _, text in inputs],
        **given(args, "max_new_tokens", "batch_size", "max_source_len"),
        source_eos=args.source_eos,
        progress=from_file and not args.no_progress,
    )
    rows = [{"line": n, "source": t, "generation": g} for (n, t), g in zip(inputs, outputs, strict=True)]
    if args.out:
        write_jsonl_atomic(args.out, rows)
        print(f"{len(rows)} generations -> {args.out}", file=sys.stderr)
    elif from_file:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    else:
        print(outputs[0])
    return 0
