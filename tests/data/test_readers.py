"""read_examples on every layout, default splits and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptability.data.readers import (
    eval_split_for,
    iter_examples,
    read_examples,
    train_split_for,
)
from promptability.data.schema import DataError

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "p3" / "samples"
STORY = "story_cloze_2016_Story_Continuation_and_Options_score_eval"


def load_examples(path: Path, split=None, tasks=None) -> dict[str, list]:
    """Records from ``path`` grouped by task, in the order tasks first appear."""
    out: dict[str, list] = {}
    for record in iter_examples(path, split, tasks):
        out.setdefault(record["task"], []).append(record)
    return out


def needs_samples() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"real P3 samples not found at {SAMPLES}")


def rec(task: str | None, n: int, choices: list[str] | None = None, label: int = -1) -> dict:
    out = {"source": f"{task} source {n}", "target": (choices[label] if choices else f"target {n}")}
    if task is not None:
        out["task"] = task
    if choices is not None:
        out.update(choices=choices, label=label)
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_native(folder: Path, split: str, rows: list[dict]) -> Path:
    from tfrecord import TFRecordWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(folder / f"{split}.tfrecord-00000-of-00001"))
    for row in rows:
        writer.write(
            {
                "idx": (row["idx"], "int"),
                "inputs": (row["inputs"], "int"),
                "is_correct": (int(row["is_correct"]), "int"),
                "inputs_pretokenized": (row["inputs_pretokenized"].encode(), "byte"),
                "targets": (row["targets"], "int"),
                "targets_pretokenized": (row["targets_pretokenized"].encode(), "byte"),
                "weight": (1.0, "float"),
            }
        )
    writer.close()
    return folder


def scored_rows(n_instances: int, n_choices: int) -> list[dict]:
    return [
        {
            "idx": [i, j],
            "inputs": [i + 3, 1],
            "inputs_pretokenized": f"premise {i}",
            "is_correct": j == i % n_choices,
            "targets": [j + 3, 1],
            "targets_pretokenized": f"\nchoice {j}",
        }
        for i in range(n_instances)
        for j in range(n_choices)
    ]


def test_split_defaults():
    assert eval_split_for("super_glue_rte_GPT_3_style_score_eval") == "validation"
    assert eval_split_for(STORY) == "test"
    assert train_split_for("super_glue_rte_GPT_3_style_score_eval") == "train"
    assert train_split_for(STORY) == "validation"


def test_jsonl_and_parquet_files(tmp_path):
    records = [rec("rte", 0, ["yes", "no"], 1), rec("rte", 1, ["yes", "no"], 0), rec("gen", 2)]
    jsonl = write_jsonl(tmp_path / "mixed.jsonl", records)
    parquet = write_parquet(tmp_path / "mixed.parquet", records)
    from_jsonl = read_examples(jsonl)
    assert len(from_jsonl) == 3
    assert from_jsonl[0] == {
        "task": "rte",
        "source": "rte source 0",
        "target": "no",
        "choices": ["yes", "no"],
        "label": 1,
    }
    assert from_jsonl[2]["choices"] == [] and from_jsonl[2]["label"] == -1
    assert read_examples(parquet) == from_jsonl
    assert [r["source"] for r in read_examples(jsonl, tasks=["rte"])] == ["rte source 0", "rte source 1"]
    assert list(load_examples(parquet)) == ["rte", "gen"]


def test_directory_of_named_files(tmp_path):
    yes_no = ["yes", "no"]
    write_jsonl(tmp_path / "rte.validation.jsonl", [rec(None, i, yes_no, i % 2) for i in range(2)])
    write_jsonl(tmp_path / "rte.train.jsonl", [rec(None, i, yes_no, 0) for i in range(3)])
    write_parquet(tmp_path / f"{STORY}.test.parquet", [rec(None, i, ["a", "b"], 1) for i in range(5)])
    write_parquet(tmp_path / f"{STORY}.validation.parquet", [rec(None, i, ["a", "b"], 0) for i in range(4)])
    write_jsonl(tmp_path / "extra.jsonl", [rec("wic", 0, ["x", "y"], 1), rec("cb", 1, ["t", "f", "n"], 2)])

    counts = {t: len(v) for t, v in load_examples(tmp_path).items()}
    assert counts == {"rte": 2, STORY: 5, "wic": 1, "cb": 1}  # files without a split are always read
    assert {t: len(v) for t, v in load_examples(tmp_path, split=train_split_for).items()} == {
        "rte": 3,
        STORY: 4,
        "wic": 1,
        "cb": 1,
    }
    assert {t: len(v) for t, v in load_examples(tmp_path, split="train").items()} == {"rte": 3, "wic": 1, "cb": 1}
    assert [r["label"] for r in read_examples(tmp_path, tasks=["rte"])] == [0, 1]
    assert read_examples(tmp_path, tasks="cb")[0]["choices"] == ["t", "f", "n"]
    with pytest.raises(DataError, match=rf"task '{STORY}' has no 'train' file \(it has: test, validation\)"):
        read_examples(tmp_path, split="train", tasks=[STORY])
    with pytest.raises(DataError, match=r"unknown template\(s\) 'wsc'"):
        read_examples(tmp_path, tasks=["rte", "wsc"])


def test_p3_folder_and_directory_of_templates_real():
    needs_samples()
    one = read_examples(SAMPLES / "openbookqa_main_choices", split="train")
    assert len(one) == 28 and {r["task"] for r in one} == {"openbookqa_main_choices"}
    assert len(read_examples(SAMPLES / STORY)) == 28  # StoryCloze defaults to its test split

    by_task = load_examples(SAMPLES)
    assert {t: len(v) for t, v in by_task.items()} == {
        "adversarial_qa_dbert_based_on": 28,
        "hellaswag_complete_first_then_score_eval": 7,
        "hellaswag_if_begins_how_continues_score_eval": 7,
        "openbookqa_main_choices": 28,
        STORY: 28,
    }
    story = by_task[STORY][0]
    assert story["source"].endswith("- He is happy now.\n- He joined a gang.\n")  # test split, row 0
    hella = by_task["hellaswag_if_begins_how_continues_score_eval"]
    assert hella[0]["choices"] == ["Ending 1", "Ending 2", "Ending 3", "Ending 4"] and hella[0]["label"] == 3

    pools = load_examples(SAMPLES, split=train_split_for, tasks=[STORY, "openbookqa_main_choices"])
    assert list(pools) == ["openbookqa_main_choices", STORY] and len(pools[STORY]) == 28
    with pytest.raises(DataError, match=rf"{STORY}' has no 'train' split"):
        read_examples(SAMPLES, split="train")
    with pytest.raises(DataError, match=r"'hellaswag_complete_first_then' \(did you mean 'hellaswag_complete_first"):
        read_examples(SAMPLES, tasks=["hellaswag_complete_first_then"])
    with pytest.raises(DataError, match="unknown template"):
        read_examples(SAMPLES / STORY, tasks=["openbookqa_main_choices"])


def test_native_folder_and_hub_snapshot(tmp_path):
    name = "super_glue_cb_must_be_true_score_eval"
    folder = write_native(tmp_path / "snap" / "data" / name, "validation", scored_rows(5, 3))
    write_native(tmp_path / "snap" / "data" / "super_glue_cb_x_score_eval", "validation", scored_rows(2, 3))
    records = read_examples(folder)
    assert len(records) == 5
    assert [r["label"] for r in records] == [0, 1, 2, 0, 1]
    assert records[2] == {
        "task": name,
        "source": "premise 2",
        "target": "choice 2",
        "choices": ["choice 0", "choice 1", "choice 2"],
        "label": 2,
    }
    assert {t: len(v) for t, v in load_examples(tmp_path / "snap").items()} == {
        name: 5,
        "super_glue_cb_x_score_eval": 2,
    }


def test_bad_records_name_file_row_and_field(tmp_path):
    good = rec("rte", 0, ["yes", "no"], 1)
    cases = [
        ([good, {"task": "rte", "source": "s"}], r"bad.jsonl, row 1: missing field 'target'"),
        ([good, dict(good, choices=[], label=0)], r"row 1: field 'choices' is empty"),
        ([dict(good, label=5)], r"row 0: field 'label' is 5, outside the 2 choices"),
        ([good, good, dict(good, choices=["yes", 3])], r"row 2: field 'choices' must be a list of strings"),
    ]
    for records, message in cases:
        path = write_jsonl(tmp_path / "bad.jsonl", records)
        with pytest.raises(DataError, match=message):
            read_examples(path)
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(DataError, match=r"row 1 \(line 2\): not valid JSON"):
        read_examples(tmp_path / "bad.jsonl")
    path = write_parquet(tmp_path / "bad.parquet", [good, dict(good, label=2)])
    with pytest.raises(DataError, match=r"bad.parquet, row 1: field 'label' is 2"):
        read_examples(path)
    named = write_jsonl(tmp_path / "rte.validation.jsonl", [dict(good, task="cb")])
    with pytest.raises(DataError, match=r"row 0: field 'task' is 'cb' but the file name says 'rte'"):
        read_examples(named)


def test_bad_paths(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", [rec("rte", 0)])
    with pytest.raises(DataError, match=r"data.jsnl: no such file or directory \(did you mean .*data.jsonl\?\)"):
        read_examples(tmp_path / "data.jsnl")
    (tmp_path / "data.csv").write_text("task,source\n")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'"):
        read_examples(tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no data found"):
        read_examples(tmp_path / "empty")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_examples(tmp_path / "broken.parquet")
    with pytest.raises(DataError, match="split must be a split name"):
        next(iter_examples(tmp_path / "data.jsonl", split=""))


def test_cli_data_list(capsys):
    from promptability.cli import main

    assert main(["data", "list", "--split", "heldout"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "heldout: 116 templates in 9 groups" and len(out) == 2 + 116 + 3
    assert main(["data", "list", "--group", "rte"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "heldout: 10 templates in 1 group" and "  eval instances in all: 2770" in out
    assert "super_glue_rte_GPT_3_style_score_eval" in out[2] and out[2].split()[:3] == ["RTE", "2", "277"]
    assert main(["data", "list"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith(" ")]
    assert heads == [
        "train: 313 templates from 38 datasets",
        "heldout: 116 templates in 9 groups",
        "dev: 42 templates from 8 datasets",
    ]
    assert main(["data", "list", "--group", "nope"]) == 2
    assert "unknown group 'nope'" in capsys.readouterr().err


def test_split_folder_layout_of_the_offline_suite(tmp_path):
    from promptability.suite.generate import write_suite

    meta = write_suite(tmp_path / "suite", seed=0, size="quick", progress=False)
    heldout = [t for t, info in meta["templates"].items() if info["role"] == "heldout"]
    records = read_examples(tmp_path / "suite", tasks=heldout[:2])
    assert {r["task"] for r in records} == set(heldout[:2])
    assert len(records) == sum(meta["templates"][t]["counts"]["validation"] for t in heldout[:2])
    train = read_examples(tmp_path / "suite", split="train", tasks=heldout[:1])
    assert len(train) == meta["templates"][heldout[0]]["counts"]["train"]


def test_template_names_with_dots_are_not_read_as_splits(tmp_path):
    """P3's "super_glue_wsc.fixed_..." names hold a dot: only a split-like suffix is taken as the split."""
    task = "super_glue_wsc.fixed_GPT_3_Style_score_eval"
    record = {"task": task, "source": "s", "target": "Yes", "choices": ["No", "Yes"], "label": 1}
    (tmp_path / f"{task}.jsonl").write_text(json.dumps(record) + "\n")
    assert [r["task"] for r in read_examples(tmp_path / f"{task}.jsonl")] == [task]
    (tmp_path / "named").mkdir()
    (tmp_path / "named" / f"{task}.validation.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "named" / f"{task}.train.jsonl").write_text(json.dumps({**record, "source": "t"}) + "\n")
    assert [r["source"] for r in read_examples(tmp_path / "named", split="train")] == ["t"]
