"""P3 folders (save_to_disk and native TFRecord) into instances and records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptability.data.p3 import (
    group_p3_rows,
    iter_p3_rows,
    p3_format,
    p3_splits,
    read_p3,
    read_p3_instances,
)
from promptability.data.schema import DataError

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "p3" / "samples"
HELLASWAG = "hellaswag_complete_first_then_score_eval"
STORY = "story_cloze_2016_Story_Continuation_and_Options_score_eval"


def needs_samples() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"real P3 samples not found at {SAMPLES}")


def raw_rows(template: str, split: str) -> list[dict]:
    import datasets

    return datasets.load_from_disk(str(SAMPLES / template / split)).to_list()


# P3's native info.{split}.json: shape [] marks one value, [null] a list
INFO = {
    "idx": {"dtype": "int32", "shape": [2]},
    "inputs": {"dtype": "int32", "shape": [None]},
    "inputs_pretokenized": {"dtype": "string", "shape": []},
    "is_correct": {"dtype": "bool", "shape": []},
    "targets": {"dtype": "int32", "shape": [None]},
    "targets_pretokenized": {"dtype": "string", "shape": []},
    "answer_choices": {"dtype": "string", "shape": [None]},
    "weight": {"dtype": "float32", "shape": []},
}


def write_native(folder: Path, split: str, rows: list[dict], info: bool = True) -> Path:
    """A Hub-layout P3 folder written with tfrecord's writer, P3's feature names and types."""
    from tfrecord import TFRecordWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(folder / f"{split}.tfrecord-00000-of-00001"))
    for row in rows:
        datum = {}
        for name, value in row.items():
            if name in ("inputs_pretokenized", "targets_pretokenized"):
                datum[name] = (value.encode("utf-8"), "byte")
            elif name == "answer_choices":
                datum[name] = ([c.encode("utf-8") for c in value], "byte")
            elif name == "is_correct":
                datum[name] = (int(value), "int")
            elif name == "weight":
                datum[name] = (float(value), "float")
            else:
                datum[name] = (list(value), "int")
        writer.write(datum)
    writer.close()
    if info:
        features = {k: v for k, v in INFO.items() if k in rows[0]}
        (folder / f"info.{split}.json").write_text(json.dumps({"features": features, "num_shards": 1}))
    return folder


def scored_rows(choice_counts: list[int], correct: list[int]) -> list[dict]:
    rows = []
    for i, (n, c) in enumerate(zip(choice_counts, correct)):
        for j in range(n):
            rows.append(
                {
                    "idx": [i, j],
                    "inputs": [100 + i, 1],
                    "inputs_pretokenized": f"question {i}\n",
                    "is_correct": j == c,
                    "targets": [200 + j, 1],
                    "targets_pretokenized": f" answer {j}\n",
                    "weight": 1.0,
                }
            )
    return rows


def test_score_eval_rows_group_into_instances_real():
    needs_samples()
    rows = raw_rows(HELLASWAG, "validation")
    assert len(rows) == 28
    instances = read_p3_instances(SAMPLES / HELLASWAG, "validation")
    assert len(instances) == 7
    for n, inst in enumerate(instances):
        group = rows[4 * n : 4 * n + 4]
        assert [r["idx"] for r in group] == [[n, j] for j in range(4)]
        assert inst["choices"] == [r["targets_pretokenized"].strip() for r in group]
        assert inst["label"] == [r["is_correct"] for r in group].index(True)
        assert inst["target"] == inst["choices"][inst["label"]]
        assert inst["inputs"] == group[0]["inputs"]
        assert inst["targets"] == [r["targets"] for r in group]
        assert inst["source"] == group[0]["inputs_pretokenized"]
        assert inst["row"] == 4 * n
    assert instances[0]["target"] == ", the man continues removing the snow on his car."
    assert [len(i["choices"]) for i in instances] == [4] * 7


def test_answer_choices_and_training_templates_real():
    needs_samples()
    obqa = read_p3(SAMPLES / "openbookqa_main_choices", "train")
    rows = raw_rows("openbookqa_main_choices", "train")
    assert len(obqa) == 28 and all(len(r["choices"]) == 4 for r in obqa)
    assert [r["label"] for r in obqa] == [
        row["answer_choices"].index(row["targets_pretokenized"].strip()) for row in rows
    ]
    assert obqa[0]["target"] == "plants sprouting, blooming and wilting" and obqa[0]["label"] == 3
    assert obqa[0]["task"] == "openbookqa_main_choices"

    qa = read_p3(SAMPLES / "adversarial_qa_dbert_based_on", "validation")
    assert len(qa) == 28
    assert all(r["choices"] == [] and r["label"] == -1 for r in qa)
    train = read_p3(SAMPLES / "adversarial_qa_dbert_based_on", "train")
    assert train[0]["target"] == "subjective idealism"  # P3 has "\nsubjective idealism\n"
    assert train[0]["source"] == raw_rows("adversarial_qa_dbert_based_on", "train")[0]["inputs_pretokenized"]


def test_story_cloze_has_no_train_split_real():
    needs_samples()
    folder = SAMPLES / STORY
    assert p3_format(folder) == "arrow"
    assert p3_splits(folder) == ["test", "validation"]
    test = read_p3(folder, "test")
    assert len(test) == 28 and all(len(r["choices"]) == 2 for r in test)
    assert test[0]["choices"] == ["He is happy now.", "He joined a gang."] and test[0]["label"] == 0
    with pytest.raises(DataError, match=r"has no 'train' split \(it has: test, validation\)"):
        read_p3(folder, "train")


def test_native_tfrecord_matches_saved_folder_real(tmp_path):
    needs_samples()
    for template in (HELLASWAG, "openbookqa_main_choices", "adversarial_qa_dbert_based_on"):
        rows = raw_rows(template, "train")
        native = write_native(tmp_path / template, "train", rows)
        assert p3_format(native) == "tfrecord" and p3_splits(native) == ["train"]
        assert list(iter_p3_rows(native, "train")) == rows
        assert read_p3_instances(native, "train") == read_p3_instances(SAMPLES / template, "train")
        assert read_p3(native, "train") == read_p3(SAMPLES / template, "train")


def test_native_tfrecord_synthetic(tmp_path):
    rows = scored_rows([3, 3, 2], correct=[2, 0, 1])
    folder = write_native(tmp_path / "super_glue_cb_x_score_eval", "validation", rows)
    write_native(folder, "train", rows[:3])
    assert p3_splits(folder) == ["train", "validation"]
    instances = read_p3_instances(folder, "validation")
    assert [len(i["choices"]) for i in instances] == [3, 3, 2]
    assert [i["label"] for i in instances] == [2, 0, 1]
    assert [i["target"] for i in instances] == ["answer 2", "answer 0", "answer 1"]
    assert instances[1]["inputs"] == [101, 1] and instances[1]["targets"] == [[200, 1], [201, 1], [202, 1]]
    assert instances[2]["row"] == 6 and instances[0]["source"] == "question 0\n"

    # without info.json the shapes come from P3's field names
    plain = [
        {
            "inputs": [5, 1],
            "inputs_pretokenized": "Q?",
            "targets": [7, 1],
            "targets_pretokenized": "\nYes",
            "answer_choices": ["No", "Yes", "Maybe"],
        }
    ]
    nofile = write_native(tmp_path / "plain", "train", plain * 2, info=False)
    records = read_p3(nofile, "train")
    assert len(records) == 2 and records[0] == {
        "task": "plain",
        "source": "Q?",
        "target": "Yes",
        "choices": ["No", "Yes", "Maybe"],
        "label": 1,
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: rows[4].update(is_correct=True), r"rows 3-5: field 'is_correct' is true on 2 rows"),
        (lambda rows: rows[2].update(is_correct=False), r"rows 0-2: field 'is_correct' is true on 0 rows"),
        (lambda rows: rows[4].update(idx=[1, 2]), r"row 4: field 'idx' is \[1, 2\]; expected choice 1"),
        (lambda rows: rows[1].pop("targets"), r"row 1: missing field 'targets'"),
        (lambda rows: rows[4].update(inputs_pretokenized="other"), r"row 4: field 'inputs_pretokenized' differs"),
    ],
)
def test_bad_score_eval_rows(change, message):
    rows = scored_rows([3, 3], correct=[2, 0])
    change(rows)
    with pytest.raises(DataError, match=message):
        list(group_p3_rows(rows, origin="x.tfrecord"))


def test_bad_answer_choices_rows(tmp_path):
    row = {
        "inputs": [1],
        "inputs_pretokenized": "Q",
        "targets": [2],
        "targets_pretokenized": "\nblue",
        "answer_choices": ["red", "green"],
    }
    folder = write_native(tmp_path / "t", "validation", [dict(row, targets_pretokenized="red"), row])
    with pytest.raises(DataError, match=r"t \[validation\], row 1: field 'targets_pretokenized' \('blue'\) is not one"):
        read_p3(folder, "validation")
    with pytest.raises(DataError, match=r"row 0: missing field 'inputs_pretokenized'"):
        list(group_p3_rows([{"inputs": [1], "targets": [2], "targets_pretokenized": "x"}]))
    with pytest.raises(DataError, match="not a P3 template folder"):
        p3_splits(tmp_path)
