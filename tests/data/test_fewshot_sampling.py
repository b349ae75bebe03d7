"""Seeded k-shot sampling and the reference 16-shot subsamples with their md5 check."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from promptability.data import registry
from promptability.data.fewshot import (
    ChecksumError,
    fewshot_md5,
    reference_fewshot_subsample,
    sample_fewshot,
)
from promptability.data.readers import read_examples, train_split_for
from promptability.data.schema import DataError

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "p3" / "samples"
HELLASWAG = "hellaswag_complete_first_then_score_eval"
STORY = "story_cloze_2016_Story_Continuation_and_Options_score_eval"
CB = "super_glue_cb_must_be_true_score_eval"  # smallest reference indices (max 212) of a 3-choice template


def needs_samples() -> None:
    if not SAMPLES.is_dir():
        pytest.skip(f"real P3 samples not found at {SAMPLES}")


def raw_rows(template: str, split: str) -> list[dict]:
    import datasets

    return datasets.load_from_disk(str(SAMPLES / template / split)).to_list()


def use_reference(monkeypatch, template: str, indices: list[int], md5: str) -> None:
    real = registry.reference_fewshot

    def fake(kind: str = "heldout") -> dict:
        return {**real(kind), template: {"indices": indices, "md5": md5}} if kind == "heldout" else real(kind)

    monkeypatch.setattr(registry, "reference_fewshot", fake)


def pool(task: str, n: int) -> list[dict]:
    return [{"task": task, "source": f"{task} {i}", "target": "t", "choices": [], "label": -1} for i in range(n)]


def test_sample_fewshot_is_seeded_per_template():
    records = pool("a", 40) + pool("b", 20)
    first = sample_fewshot(records, k=16, seed=0)
    assert {t: len(v) for t, v in first.items()} == {"a": 16, "b": 16}
    assert len({r["source"] for r in first["a"]}) == 16 and all(r["task"] == "a" for r in first["a"])
    assert sample_fewshot(records, k=16, seed=0) == first
    assert sample_fewshot(records, k=16, seed=1)["a"] != first["a"]
    # another template in the mix leaves this one's sample unchanged
    assert sample_fewshot(pool("c", 30) + records, k=16, seed=0)["a"] == first["a"]
    assert [r["source"] for r in sample_fewshot(records, k=4, seed=0)["b"]] == [
        r["source"] for r in sample_fewshot(pool("b", 20), k=4, seed=0)["b"]
    ]
    with pytest.raises(DataError, match="template 'b': its few-shot pool has 20 examples, fewer than k=32"):
        sample_fewshot(records, k=32)
    assert len(sample_fewshot(records, k=32, strict=False)["b"]) == 20
    with pytest.raises(ValueError, match="k must be a positive integer"):
        sample_fewshot(records, k=0)


def test_md5_of_grouped_score_eval_instances_real(monkeypatch):
    needs_samples()
    rows = raw_rows(HELLASWAG, "train")
    chosen = [5, 0, 2]
    # computed from the raw rows: inputs, then the instance's 4 choices' target ids
    text = "".join(str(rows[4 * i]["inputs"] + [rows[4 * i + j]["targets"] for j in range(4)]) for i in chosen)
    expected = hashlib.md5(text.encode()).hexdigest()
    assert expected == "97f98958d315f3facf1ea3f76e4c429e"

    use_reference(monkeypatch, HELLASWAG, chosen, expected)
    examples = reference_fewshot_subsample(HELLASWAG, SAMPLES)  # a directory holding the template
    assert [e["source"] for e in examples] == [rows[4 * i]["inputs_pretokenized"] for i in chosen]
    assert [e["label"] for e in examples] == [
        [rows[4 * i + j]["is_correct"] for j in range(4)].index(True) for i in chosen
    ]
    assert reference_fewshot_subsample(HELLASWAG, rows) == examples  # raw, ungrouped rows

    use_reference(monkeypatch, HELLASWAG, [0, 5, 2], expected)  # same instances, other order
    with pytest.raises(ChecksumError, match=f"have md5 [0-9a-f]{{32}}, expected {expected}"):
        reference_fewshot_subsample(HELLASWAG, SAMPLES / HELLASWAG)


def test_md5_of_answer_choice_instances_real(monkeypatch):
    needs_samples()
    rows = raw_rows("openbookqa_main_choices", "train")
    chosen = [27, 3, 11]
    expected = hashlib.md5("".join(str(rows[i]["inputs"] + rows[i]["targets"]) for i in chosen).encode()).hexdigest()
    assert expected == "5526fc12ebb6b1c35f54189ef66a478e"
    use_reference(monkeypatch, "openbookqa_main_choices", chosen, expected)
    examples = reference_fewshot_subsample("openbookqa_main_choices", SAMPLES / "openbookqa_main_choices")
    assert [e["target"] for e in examples] == [rows[i]["targets_pretokenized"].strip() for i in chosen]

    # StoryCloze's pool is its validation split
    val = raw_rows(STORY, "validation")
    expected = hashlib.md5(str(val[4]["inputs"] + val[4]["targets"]).encode()).hexdigest()
    use_reference(monkeypatch, STORY, [4], expected)
    assert reference_fewshot_subsample(STORY, SAMPLES)[0]["source"] == val[4]["inputs_pretokenized"]
    pools = Counter(r["task"] for r in read_examples(SAMPLES, train_split_for, [STORY, HELLASWAG]))  # few-shot pools
    assert pools == {HELLASWAG: 7, STORY: 28}


def cb_rows(n_instances: int) -> list[dict]:
    """Synthetic CB-like _score_eval rows: 3 rows per instance, instance i's answer is i % 3."""
    return [
        {
            "idx": [i, j],
            "inputs": [1000 + i, 1],
            "inputs_pretokenized": f"instance {i}",
            "is_correct": j == i % 3,
            "targets": [10 + j, 1],
            "targets_pretokenized": ["Always", "Sometimes", "Never"][j],
            "weight": 1.0,
        }
        for i in range(n_instances)
        for j in range(3)
    ]


def save(rows: list[dict], folder: Path) -> Path:
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(folder))
    return folder


def test_reference_selection_on_synthetic_folder(monkeypatch, tmp_path):
    ref = registry.reference_fewshot("heldout")[CB]
    assert len(ref["indices"]) == 16 and max(ref["indices"]) == 212
    folder = save(cb_rows(250), tmp_path / CB)
    with pytest.raises(ChecksumError, match=rf"'{CB}': .* expected {ref['md5']}; the data differs"):
        reference_fewshot_subsample(CB, folder)

    text = "".join(str([1000 + i, 1] + [[10, 1], [11, 1], [12, 1]]) for i in ref["indices"])
    use_reference(monkeypatch, CB, ref["indices"], hashlib.md5(text.encode()).hexdigest())
    examples = reference_fewshot_subsample(CB, tmp_path)
    assert len(examples) == 16
    assert [e["source"] for e in examples] == [f"instance {i}" for i in ref["indices"]]
    assert [e["label"] for e in examples] == [i % 3 for i in ref["indices"]]
    assert examples[0]["choices"] == ["Always", "Sometimes", "Never"] and examples[0]["task"] == CB
    assert (
        fewshot_md5([{"inputs": [1000 + i, 1], "targets": [[10, 1], [11, 1], [12, 1]]} for i in ref["indices"]])
        == hashlib.md5(text.encode()).hexdigest()
    )

    small = save(cb_rows(200), tmp_path / "small" / CB)
    with pytest.raises(DataError, match=r"indices \[201, 212, 206\] are outside its train split, which has 200 inst"):
        reference_fewshot_subsample(CB, small)
    with pytest.raises(DataError, match="no reference few-shot subsample for template 'adversarial_qa_dbert_based_on'"):
        reference_fewshot_subsample("adversarial_qa_dbert_based_on", small)
