"""realdata: every real file read into its Hugging Face schema, with the README's counts, and
every promptsource template of each dataset rendering over the rows."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from promptability.data.realdata import DATASETS, RealDataError, available, read_raw

COUNTS = {
    ("super_glue/rte", "validation"): 277,
    ("super_glue/rte", "train"): 2490,
    ("super_glue/cb", "validation"): 56,
    ("super_glue/cb", "train"): 250,
    ("super_glue/copa", "validation"): 100,
    ("super_glue/copa", "train"): 64,
    ("super_glue/wic", "validation"): 638,
    ("super_glue/wic", "train"): 64,
    ("super_glue/wsc.fixed", "validation"): 104,
    ("super_glue/wsc.fixed", "train"): 64,
    ("anli/r1", "dev"): 1000,
    ("anli/r2", "dev"): 1000,
    ("anli/r3", "dev"): 1198,
    ("hellaswag", "validation"): 10042,
    ("winogrande/winogrande_xl", "validation"): 1267,
    ("story_cloze/2016", "validation"): 1871,
    ("story_cloze/2016", "test"): 1871,
    ("dream", "train"): 6116,
    ("dream", "validation"): 2040,
    ("social_i_qa", "train"): 33410,
    ("social_i_qa", "validation"): 1954,
    ("cosmos_qa", "validation"): 2985,
    ("commonsense_qa", "validation"): 1221,
    ("quail", "challenge"): 556,
    ("common_gen", "train"): 39069,
    ("common_gen", "validation"): 4018,  # 993 concept sets
    ("wiki_qa", "validation"): 1130,
    ("wiki_qa", "test"): 2351,
    ("rotten_tomatoes", "all"): 10662,
    ("ag_news", "test"): 7600,
    ("trec", "train"): 5452,
    ("trec", "test"): 500,
    ("glue/mrpc", "train"): 4076,
    ("glue/mrpc", "test"): 1725,
}

# dataset -> {label field: (type, the full set of values in every split)}
LABELS = {
    "super_glue/rte": {"label": (int, {0, 1})},
    "super_glue/cb": {"label": (int, {0, 1, 2})},
    "super_glue/copa": {"label": (int, {0, 1})},
    "super_glue/wic": {"label": (int, {0, 1})},
    "super_glue/wsc.fixed": {"label": (int, {0, 1})},
    "anli/r1": {"label": (int, {0, 1, 2})},
    "anli/r2": {"label": (int, {0, 1, 2})},
    "anli/r3": {"label": (int, {0, 1, 2})},
    "hellaswag": {"label": (str, {"0", "1", "2", "3"})},
    "winogrande/winogrande_xl": {"answer": (str, {"1", "2"})},
    "story_cloze/2016": {"answer_right_ending": (int, {1, 2})},
    "social_i_qa": {"label": (str, {"1", "2", "3"})},
    "cosmos_qa": {"label": (int, {0, 1, 2, 3})},
    "commonsense_qa": {"answerKey": (str, {"A", "B", "C", "D"})},
    "quail": {"correct_answer_id": (int, {0, 1, 2, 3})},
    "wiki_qa": {"label": (int, {0, 1})},
    "rotten_tomatoes": {"label": (int, {0, 1})},
    "ag_news": {"label": (int, {0, 1, 2, 3})},
    "trec": {"coarse_label": (int, set(range(6)))},
    "glue/mrpc": {"label": (int, {0, 1})},
}

SPLITS = sorted(COUNTS)


@functools.cache
def _read(root: str, dataset: str, split: str) -> list[dict]:
    return read_raw(root, dataset, split)


@pytest.fixture
def read(realdata_root: Path):
    return lambda dataset, split: _read(str(realdata_root), dataset, split)


def test_every_split_is_listed_and_present(realdata_root):
    assert {(d, s) for d, splits in DATASETS.items() for s in splits} == set(COUNTS)
    assert available(realdata_root) == {d: list(splits) for d, splits in DATASETS.items()}


@pytest.mark.parametrize(("dataset", "split"), SPLITS)
def test_counts_and_label_types(read, dataset, split):
    rows = read(dataset, split)
    assert len(rows) == COUNTS[dataset, split]
    assert len({tuple(sorted(row)) for row in rows}) == 1, "every row has the same fields"
    for field, (kind, values) in LABELS.get(dataset, {}).items():
        assert {type(row[field]) for row in rows} == {kind}
        assert {row[field] for row in rows} == values


def test_reading_is_deterministic(realdata_root):
    for dataset, split in [("hellaswag", "validation"), ("dream", "validation"), ("glue/mrpc", "train")]:
        assert read_raw(realdata_root, dataset, split) == read_raw(realdata_root, dataset, split)


def test_super_glue_first_rows(read):
    rte = read("super_glue/rte", "validation")[0]
    assert rte == {
        "premise": "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
        "according to the Christopher Reeve Foundation.",
        "hypothesis": "Christopher Reeve had an accident.",
        "idx": 0,
        "label": 1,  # not_entailment
    }
    assert read("super_glue/cb", "validation")[1]["label"] == 2  # neutral
    assert read("super_glue/copa", "validation")[0] == {
        "premise": "The man turned on the faucet.",
        "choice1": "The toilet filled with water.",
        "choice2": "Water flowed from the spout.",
        "question": "effect",
        "idx": 0,
        "label": 1,
    }
    wic = read("super_glue/wic", "validation")[0]
    assert wic == {
        "word": "class",
        "sentence1": "An emerging professional class.",
        "sentence2": "Apologizing for losing your temper, even though you were badly provoked, showed real class.",
        "start1": 25,
        "start2": 85,
        "end1": 30,
        "end2": 90,
        "idx": 0,
        "label": 0,
    }
    assert wic["sentence1"][wic["start1"] : wic["end1"]] == "class"
    wsc = read("super_glue/wsc.fixed", "validation")[0]
    assert {k: wsc[k] for k in ("span1_index", "span2_index", "span1_text", "span2_text", "idx", "label")} == {
        "span1_index": 32,
        "span2_index": 47,
        "span1_text": "anyone",
        "span2_text": "him",
        "idx": 0,
        "label": 0,
    }
    assert wsc["text"].split()[wsc["span2_index"]] == "him"
    # train = FewGLUE train then dev32
    assert read("super_glue/wic", "train")[32]["idx"] == 3623
    assert read("super_glue/copa", "train")[32]["idx"] == 285


def test_anli_hellaswag_winogrande_story_cloze_first_rows(read):
    anli = read("anli/r2", "dev")[0]
    assert anli["hypothesis"] == "Risk Records released Jack Off Jill's initial album."
    assert anli["premise"].startswith("Clear Hearts Grey Flowers is the second full-length and final album")
    assert (anli["uid"], anli["label"]) == ("4145fcb6-de26-4910-a4f0-64275c50f2be", 1)
    assert anli["reason"].startswith("The second album was released by Risk Records")

    assert read("hellaswag", "validation")[0] == {
        "ind": 0,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof. he",
        "ctx_b": "",
        "ctx": "A man is sitting on a roof. he",
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
        "source_id": "",
        "split": "val",
        "split_type": "",
        "label": "3",
    }
    wino = read("winogrande/winogrande_xl", "validation")
    assert wino[0] == {
        "sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
        "option1": "Sarah",
        "option2": "Maria",
        "answer": "2",
    }
    assert wino[2] == {
        "sentence": "They were worried the wine would ruin the bed and the blanket, but the _ was't ruined.",
        "option1": "blanket",
        "option2": "bed",
        "answer": "2",
    }
    # no space after the blank where the continuation starts with punctuation
    assert wino[129]["sentence"].endswith("more safe to work at the _.")
    assert (
        wino[589]["sentence"] == "Research came easy to Monica as compared to Erin because _'s father was a landscaper."
    )

    story = read("story_cloze/2016", "validation")
    assert story[0]["input_sentence_1"].startswith("Rick grew up")
    assert (story[0]["story_id"], story[0]["answer_right_ending"]) == ("138d5bfb-05cc-41e3-bf2c-fa85ebad14e2", 1)
    assert story[1486]["input_sentence_1"] == "Amayah's birthday is coming up."
    assert {r["story_id"] for r in story[1486:]} == {""}, "cloze_test.csv has no ids"
    test = read("story_cloze/2016", "test")[0]
    assert (test["story_id"], test["sentence_quiz2"], test["answer_right_ending"]) == (
        "b929f263-1dcd-4a0b-b267-5d5ff2fe65bb",
        "The next weekend, I was asked to please stay home.",
        2,
    )


def test_winogrande_every_row_rebuilds(realdata_root, read):
    raw = [json.loads(line) for line in (realdata_root / "winogrande__xl__winogrande.jsonl").open()]
    rows = read("winogrande/winogrande_xl", "validation")
    for r, row in zip(raw, rows, strict=True):
        assert row["sentence"].count("_") == 1
        options = (row["option1"], row["option2"])
        assert all(o and o == o.strip() for o in options) and options[0] != options[1]
        for context, option in zip(r["context_options"], options):
            filled = row["sentence"].replace("_", option)
            assert filled.startswith(context)
            assert filled[len(context) :].strip() == r["continuation"].strip()
        assert row["answer"] == str(r["gold"] + 1)


def test_training_datasets_first_rows(read):
    assert read("dream", "train")[0] == {
        "id": 0,
        "dialogue_id": "5-510",
        "dialogue": [
            "M: I am considering dropping my dancing class. I am not making any progress.",
            "W: If I were you, I stick with it. It's definitely worth time and effort.",
        ],
        "question": "What does the man suggest the woman do?",
        "choice": ["Consult her dancing teacher.", "Take a more interesting class.", "Continue her dancing class."],
        "answer": "Continue her dancing class.",
    }
    assert all(r["answer"] in r["choice"] for r in read("dream", "validation"))
    assert read("social_i_qa", "train")[0] == {
        "context": "Cameron decided to have a barbecue and gathered her friends together.",
        "question": "How would Others feel as a result?",
        "answerA": "like attending",
        "answerB": "like staying home",
        "answerC": "a good friend to have",
        "label": "1",
    }
    assert read("social_i_qa", "validation")[0]["label"] == "3"
    assert read("cosmos_qa", "validation")[0]["label"] == 1
    assert read("commonsense_qa", "validation")[0] == {
        "id": "",
        "question_concept": "",
        "answerKey": "A",
        "question": "A revolving door is convenient for two direction travel, but it also serves as a security "
        "measure at a what?",
        "choices": {"label": ["A", "B", "C", "D"], "text": ["bank", "department store", "mall", "new york"]},
    }
    quail = read("quail", "challenge")[0]
    assert (quail["id"], quail["question_id"], quail["context_id"], quail["correct_answer_id"]) == (
        "f171_0",
        "0",
        "f171",
        0,
    )
    assert quail["answers"][0] == "That she is a little nuts."
    assert read("common_gen", "train")[:2] == [
        {
            "concept_set_idx": 0,
            "concepts": ["chicken", "cheese", "pizza", "broccoli"],
            "target": "A grilled pizza with chicken, broccoli and cheese.",
        },
        {
            "concept_set_idx": 0,
            "concepts": ["chicken", "cheese", "pizza", "broccoli"],
            "target": "The pan pizza topped with broccoli, chicken, and cheese, is ready for the oven",
        },
    ]
    assert read("common_gen", "validation")[0] == {
        "concept_set_idx": 0,
        "concepts": ["field", "look", "stand"],
        "target": "The player stood in the field looking at the batter.",
    }
    assert read("common_gen", "validation")[-1]["concept_set_idx"] == 992
    assert read("wiki_qa", "validation")[0] == {
        "question_id": "Q11",
        "question": "how big is bmc software in houston, tx",
        "document_title": "BMC Software",
        "answer": "BMC Software, Inc. is an American company specializing in Business Service Management (BSM) software.",
        "label": 0,
    }


def test_classification_datasets_first_rows(read):
    rt = read("rotten_tomatoes", "all")
    assert rt[0]["text"].startswith('the rock is destined to be the 21st century\'s new " conan "')
    assert rt[0]["text"].endswith("steven segal .") and rt[0]["label"] == 1
    assert rt[5331]["text"] == "simplistic , silly and tedious ." and rt[5331]["label"] == 0
    assert not any("\x80" <= ch <= "\x9f" for r in rt for ch in r["text"]), "cp1252, not latin-1 control chars"
    assert any("\u2026" in r["text"] for r in rt)
    assert read("ag_news", "test")[0] == {
        "text": "Fears for T N pension after talks Unions representing workers at Turner   Newall say they are "
        "'disappointed' after talks with stricken parent firm Federal Mogul.",
        "label": 2,  # Class Index 3, Business
    }
    trec = read("trec", "train")
    assert trec[0] == {
        "text": "How did serfdom develop in and then leave Russia ?",
        "coarse_label": 2,
        "fine_label": 26,
    }
    assert read("trec", "test")[0] == {
        "text": "How far is it from Denver to Aspen ?",
        "coarse_label": 5,
        "fine_label": 40,
    }
    assert any("sister city" in r["text"] for r in trec) and not any("\ufffd" in r["text"] for r in trec)
    mrpc = read("glue/mrpc", "train")
    assert mrpc[0]["sentence1"].startswith('Amrozi accused his brother, whom he called "the witness"')
    assert (mrpc[0]["label"], mrpc[0]["idx"], mrpc[-1]["idx"]) == (1, 0, 4075)
    assert not any("green apples" in r["sentence1"] for r in mrpc), "the repo's 4 toy pairs are dropped"


def test_errors_name_names_paths_and_rows(tmp_path):
    """Needs no real data: runs everywhere."""
    with pytest.raises(RealDataError, match=r"unknown dataset 'super_glue/boolq'; known: super_glue/rte, "):
        read_raw(tmp_path, "super_glue/boolq", "validation")
    with pytest.raises(RealDataError, match=r"super_glue/rte has no split 'test'; known: validation, train"):
        read_raw(tmp_path, "super_glue/rte", "test")
    with pytest.raises(FileNotFoundError, match="super_glue__rte__val.jsonl"):
        read_raw(tmp_path, "super_glue/rte", "validation")
    assert available(tmp_path) == {}

    good = {"premise": "p", "hypothesis": "h", "label": "entailment", "idx": 0}
    path = tmp_path / "super_glue__rte__val.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "label": "maybe"}) + "\n")
    assert available(tmp_path) == {"super_glue/rte": ["validation"]}
    with pytest.raises(RealDataError, match=r"super_glue__rte__val.jsonl: row 1 .*'maybe'"):
        read_raw(tmp_path, "super_glue/rte", "validation")
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(RealDataError, match=r"super_glue__rte__val.jsonl: line 2: invalid JSON"):
        read_raw(tmp_path, "super_glue/rte", "validation")
    wic = {
        "word": "w",
        "sentence1": "a",
        "sentence2": "b",
        "idx": 0,
        "label": "true",
        "start1": 0,
        "start2": 0,
        "end1": 1,
        "end2": 1,
    }
    (tmp_path / "super_glue__wic__val.jsonl").write_text(json.dumps(wic) + "\n")
    with pytest.raises(RealDataError, match=r"super_glue__wic__val.jsonl: row 0 .*not a bool"):
        read_raw(tmp_path, "super_glue/wic", "validation")


def _templates(promptsource_root: Path, dataset: str):
    from promptability.data.promptsource import load_templates

    name, _, subset = dataset.partition("/")
    return load_templates(promptsource_root, name, None if name == "anli" else subset or None)


@pytest.mark.parametrize(("dataset", "split"), SPLITS)
def test_every_template_renders(read, promptsource_root, dataset, split):
    """Every template renders the first 3 rows without error, its targets are among its choices,
    and it gives a target for some row of the split (conditional templates skip most rows)."""
    rows = read(dataset, split)
    templates = _templates(promptsource_root, dataset)
    assert templates
    failures, silent = [], []
    for name, template in templates.items():
        for i, row in enumerate(rows[:3]):
            try:
                out = template.render(row, seed=i)
            except Exception as err:
                failures.append(f"{name} row {i}: {type(err).__name__}: {err}")
                continue
            if out is not None and out[2]:
                assert out[1] in out[2], f"{name} row {i}: target {out[1]!r} not in {out[2]}"
        if not any(template.render(row) for row in rows):
            silent.append(name)
    assert not failures, failures
    assert not silent, f"templates that render no row of {dataset} {split}: {silent}"
