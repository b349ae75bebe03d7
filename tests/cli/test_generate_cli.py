"""`promptability generate`: one text or a file of them, printed or written as JSONL; bad inputs are named."""

from __future__ import annotations

import json
import re

import pytest

from promptability.cli import build_parser, main
from promptability.data.tokenize import MAX_SOURCE_LEN
from promptability.model.generation import DEFAULT_BATCH_SIZE, generate_texts
from promptability.model.prompted import DEFAULT_MAX_NEW_TOKENS

TEXTS = ["the cat sat on the mat", "is this review positive ? yes no maybe", "a dog ran"]


@pytest.fixture
def saved(make_model, tmp_path):
    """A saved tiny T5 with a deep prompt whose greedy output is not one repeated token, and the model itself."""
    model = make_model("deep", seed=1, initializer_factor=5.0)
    model.save(tmp_path / "model")
    return str(tmp_path / "model"), model


def test_a_text_prints_its_generation(saved, capsys):
    path, model = saved
    assert main(["generate", "--model", path, "--input", TEXTS[0], "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    assert printed == generate_texts(model, TEXTS[:1], max_new_tokens=6)[0] + "\n"
    assert len(printed.split()) > 1


def test_a_file_of_lines_writes_jsonl_rows_in_order(saved, tmp_path, capsys):
    path, model = saved
    inputs = tmp_path / "inputs.txt"
    inputs.write_text(f"{TEXTS[0]}\n\n{TEXTS[1]}\n{TEXTS[2]}\n")
    out = tmp_path / "gen" / "out.jsonl"
    argv = ["generate", "--model", path, "--input", str(inputs), "--out", str(out), "--max-new-tokens", "6"]
    assert main([*argv, "--batch-size", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [generate_texts(model, [t], max_new_tokens=6)[0] for t in TEXTS]  # each alone, unbatched
    assert rows == [
        {"line": n, "source": t, "generation": g} for n, t, g in zip([1, 3, 4], TEXTS, expected, strict=True)
    ]
    assert len(set(expected)) == len(expected)


def test_a_jsonl_file_reads_its_source_field_and_prints_rows(saved, tmp_path, capsys):
    path, _ = saved
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"source": t, "target": "x"}) + "\n" for t in TEXTS[:2]))
    assert main(["generate", "--model", path, "--input", str(inputs), "--max-new-tokens", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["line"], r["source"]) for r in rows] == [(1, TEXTS[0]), (2, TEXTS[1])]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"source": "a"}\n{"source": 3}\n', r"inputs\.jsonl line 2: a JSONL input row needs a string field 'source'"),
        ('{"source": "a"}\n{oops\n', r"inputs\.jsonl line 2: not JSON"),
        ("\n  \n", r"no inputs"),
    ],
)
def test_bad_input_files_are_named(saved, tmp_path, capsys, content, message):
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(content)
    assert main(["generate", "--model", saved[0], "--input", str(inputs)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_missing_input_file_is_not_taken_for_a_text(saved, tmp_path, capsys):
    assert main(["generate", "--model", saved[0], "--input", str(tmp_path / "typo.txt")]) == 2
    assert "typo.txt" in capsys.readouterr().err


def test_help_states_the_library_defaults():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["generate"]
    text = " ".join(sub.format_help().split())
    assert f"at most (default {DEFAULT_MAX_NEW_TOKENS})" in text
    assert f"inputs per batch (default {DEFAULT_BATCH_SIZE})" in text
    assert f"source tokens kept (default {MAX_SOURCE_LEN})" in text
    assert "JSONL" in text and "--out" in text
