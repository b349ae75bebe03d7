"""data.sources: Hub-schema rows from Parquet, JSON and save_to_disk folders (built here) rendered by the
shipped promptsource templates, parity with the curated files, the Hub's plumbing and its offline error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptability.data.promptsource import load_templates, render_records, shipped_templates, template_for
from promptability.data.registry import heldout_templates
from promptability.data.sources import (
    DEFAULT_REVISION,
    Source,
    SourceError,
    SourceSpec,
    parse_source,
    source_map,
    source_records,
    templates_for,
)

# Rows in the Hub's schema of each dataset (field names and value types as `datasets` gives them).
RTE = [
    {"premise": "Dana Reeve died of lung cancer at 44.", "hypothesis": "Dana Reeve smoked.", "idx": 0, "label": 1},
    {"premise": "Anna is tall.", "hypothesis": "Anna is not short.", "idx": 1, "label": 0},
    {"premise": "The cat sat on the mat.", "hypothesis": "A cat sat.", "idx": 2, "label": 0},
]
COPA = [
    {"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
     "choice2": "He got a hole in his sock.", "question": "cause", "idx": 0, "label": 0},
    {"premise": "I tipped the bottle.", "choice1": "The liquid in the bottle froze.",
     "choice2": "The liquid in the bottle poured out.", "question": "effect", "idx": 1, "label": 1},
]  # fmt: skip
HELLASWAG = [
    {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
     "ctx_b": "then", "ctx": "Then, the man writes over the snow. then",
     "endings": [", the man adds wax.", ", the man puts on a parka.", "the man is seen.", ", the man sprays it."],
     "source_id": "activitynet~v_-1IBHYS3L-Y", "split": "val", "split_type": "indomain", "label": "3"},
    {"ind": 9, "activity_label": "Baking cookies", "ctx_a": "A woman mixes dough.", "ctx_b": "she",
     "ctx": "A woman mixes dough. she", "endings": ["bakes it.", "eats the bowl.", "sings.", "flies away."],
     "source_id": "activitynet~v_x", "split": "val", "split_type": "zeroshot", "label": "0"},
]  # fmt: skip
ROWS = {"super_glue/rte": RTE, "super_glue/copa": COPA, "hellaswag": HELLASWAG}


def _write(root: Path, dataset: str, splits: dict[str, list[dict]], kind: str) -> str:
    """One dataset's splits in the Hub's layout of ``kind``; returns its spec."""
    import datasets

    folder = root / kind / dataset.replace("/", "__")
    built = datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in splits.items()})
    for split, table in built.items():
        if kind == "parquet":  # the Hub's data/ layout
            table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
        elif kind == "json":
            table.to_json(str(folder / f"{split}.jsonl"))
    if kind == "disk":
        built.save_to_disk(str(folder))
    return f"{dataset}={kind}:{folder}"


def _naive(dataset: str, rows: list[dict]) -> list[dict]:
    """The reference: the shipped templates rendered over the rows as given, one template after another."""
    return [r for name, t in templates_for(dataset).items() for r in render_records(t, rows, name)]


@pytest.mark.parametrize("kind", ["parquet", "json", "disk"])
@pytest.mark.parametrize("dataset", sorted(ROWS))
def test_local_folders_render_as_the_rows_themselves(tmp_path, dataset, kind):
    spec = _write(tmp_path, dataset, {"validation": ROWS[dataset], "train": ROWS[dataset][:1]}, kind)
    source = Source(spec)
    assert sorted(source.splits(dataset)) == ["train", "validation"]
    assert source.rows(dataset, "validation") == ROWS[dataset]
    records = source_records(source)
    assert records == _naive(dataset, ROWS[dataset]) and records
    names = {r["task"] for r in records}
    assert names <= set(heldout_templates()) and all(n.endswith("_score_eval") for n in names)


def test_rte_record_is_exact(tmp_path):
    records = source_records(_write(tmp_path, "super_glue/rte", {"validation": RTE}, "parquet"),
                             tasks=["super_glue_rte_GPT_3_style_score_eval"])  # fmt: skip
    assert [(r["source"], r["choices"], r["label"]) for r in records] == [
        ("Dana Reeve died of lung cancer at 44.\nQuestion: Dana Reeve smoked. True or False?", ["True", "False"], 1),
        ("Anna is tall.\nQuestion: Anna is not short. True or False?", ["True", "False"], 0),
        ("The cat sat on the mat.\nQuestion: A cat sat. True or False?", ["True", "False"], 0),
    ]
    assert len(source_records(_write(tmp_path, "super_glue/rte", {"validation": RTE}, "json"), limit=2)) == 2 * 10


def test_shards_and_split_folders_are_concatenated_in_order(tmp_path):
    import datasets

    shards = [datasets.Dataset.from_list(RTE[:2]), datasets.Dataset.from_list(RTE[2:])]
    for i, shard in enumerate(shards):
        shard.to_parquet(str(tmp_path / "a" / "data" / f"validation-0000{i}-of-00002.parquet"))
        shard.to_parquet(str(tmp_path / "b" / "rte" / "validation" / f"000{i}.parquet"))  # refs/convert/parquet
    for folder in ("a", "b"):
        assert Source(f"super_glue/rte=parquet:{tmp_path / folder}").rows("super_glue/rte", "validation") == RTE
    shards[0].to_parquet(str(tmp_path / "b" / "cb" / "validation" / "0000.parquet"))
    with pytest.raises(SourceError, match=r"validation of several configs \(cb, rte\): give DIR/CONFIG"):
        Source(f"super_glue/rte=parquet:{tmp_path / 'b'}").splits("super_glue/rte")
    assert Source(f"super_glue/rte=parquet:{tmp_path / 'b' / 'rte'}").rows("super_glue/rte", "validation") == RTE
    single = tmp_path / "b" / "rte" / "validation" / "0001.parquet"
    assert Source(f"super_glue/rte=parquet:{single}").splits("super_glue/rte") == ["validation"]


@pytest.mark.parametrize(("dataset", "split"), [("super_glue/rte", "validation"), ("super_glue/copa", "validation"),
                                                ("hellaswag", "validation"), ("anli/r1", "dev")])  # fmt: skip
def test_parity_with_the_curated_files(tmp_path, realdata_root, dataset, split):
    """The curated files' first rows written in the Hub's schema give the records the curated path gives."""
    curated = f"{dataset}=curated:{realdata_root}"
    rows = Source(curated).rows(dataset, split)[:12]
    for kind in ("parquet", "disk"):
        spec = _write(tmp_path, dataset, {split: rows}, kind)
        assert source_records(spec, split, limit=12) == source_records(curated, split, limit=12)
    assert len(source_records(curated, split, limit=12)) > 12


def test_shipped_templates_are_promptsources(promptsource_root):
    shipped = sorted(p.relative_to(shipped_templates()) for p in shipped_templates().rglob("templates.yaml"))
    assert len(shipped) == 55 and (shipped_templates() / "LICENSE").is_file()
    for path in shipped:
        assert (shipped_templates() / path).read_bytes() == (promptsource_root / path).read_bytes(), path
    for name in heldout_templates():
        assert template_for(None, name) == template_for(promptsource_root, name)


def test_templates_for_other_datasets_follow_p3_names(tmp_path):
    (tmp_path / "my_data" / "v2").mkdir(parents=True)
    entry = "!Template\n    name: 'Is it? (yes/no)'\n    id: x1\n    jinja: '{{text}} ||| {{answer_choices[label]}}'\n"
    (tmp_path / "my_data" / "v2" / "templates.yaml").write_text(
        f"dataset: my_data\nsubset: v2\ntemplates:\n  x1: {entry}    answer_choices: no ||| yes\n"
        f"  x2: {entry.replace('x1', 'x2').replace('Is it?', 'Gen')}"
    )
    found = templates_for("my_data/v2", tmp_path)
    assert list(found) == ["my_data_v2_Is_it___yes_no_"]  # the one without answer choices cannot be ranked
    assert len(templates_for("super_glue/rte")) == 10 and len(templates_for("anli/r2")) == 15
    assert set(templates_for("super_glue/rte", shipped_templates())) == set(templates_for("super_glue/rte"))
    with pytest.raises(SourceError, match="no promptsource templates for dataset 'nothing'"):
        templates_for("nothing")


def test_parse_source_forms():
    assert parse_source("hub:super_glue/rte") == SourceSpec("hub", "super_glue", "super_glue/rte", "rte",
                                                            DEFAULT_REVISION)  # fmt: skip
    assert parse_source("hub:anli/r2@abc123") == SourceSpec("hub", "anli", "anli/r2", None, "abc123", "_r2")
    assert parse_source("hub:Rowan/hellaswag@v1").dataset == "hellaswag"
    assert parse_source("anli/r3=hub:facebook/anli@v2").split_suffix == "_r3"
    owned = parse_source("super_glue/rte=hub:aps/super_glue:rte@deadbeef")
    assert (owned.location, owned.config, owned.revision, owned.dataset) == ("aps/super_glue", "rte", "deadbeef",
                                                                            "super_glue/rte")  # fmt: skip
    assert str(owned) == "super_glue/rte=hub:aps/super_glue:rte@deadbeef"
    assert parse_source("hellaswag=parquet:/x/y@z") == SourceSpec("parquet", "/x/y@z", "hellaswag")
    assert parse_source("curated:/data").dataset is None
    for bad in ("super_glue/rte", "ftp:/x", "parquet:", "hub:a b@c"):
        with pytest.raises(SourceError, match="source"):
            parse_source(bad)
    assert source_map(["hub:super_glue/rte", "hellaswag=json:/x"]) == {
        "super_glue/rte": "hub:super_glue/rte", "hellaswag": "hellaswag=json:/x"}  # fmt: skip
    with pytest.raises(SourceError, match="name the dataset"):
        source_map(["parquet:/x"])
    with pytest.raises(SourceError, match="both give super_glue/rte"):
        source_map(["hub:super_glue/rte", "super_glue/rte=json:/x"])


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        Source(f"super_glue/rte=parquet:{tmp_path / 'absent'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no \.json/\.jsonl files"):
        Source(f"super_glue/rte=json:{tmp_path / 'empty'}").splits("super_glue/rte")
    spec = _write(tmp_path, "super_glue/rte", {"validation": RTE}, "parquet")
    with pytest.raises(SourceError, match="no split 'test'; it has validation"):
        Source(spec).rows("super_glue/rte", "test")
    with pytest.raises(SourceError, match="holds super_glue/rte, not hellaswag"):
        Source(spec).rows("hellaswag", "validation")
    with pytest.raises(SourceError, match="has no template"):
        source_records(spec, tasks=["super_glue_rte_nothing"])
    with pytest.raises(SourceError, match="name the dataset"):
        source_records(spec.partition("=")[2])
    with pytest.raises(SourceError, match="not a save_to_disk folder"):
        Source(f"super_glue/rte=disk:{tmp_path / 'empty'}").splits("super_glue/rte")
    (tmp_path / "broken" / "validation.parquet").parent.mkdir()
    (tmp_path / "broken" / "validation.parquet").write_text("not parquet")
    with pytest.raises(SourceError, match="cannot read validation"):
        Source(f"super_glue/rte=parquet:{tmp_path / 'broken'}").rows("super_glue/rte", "validation")


def test_hub_names_reach_load_dataset_pinned_and_without_code(monkeypatch):
    """ANLI's rounds are one Hub dataset with split suffixes; the revision always travels; no remote code."""
    import datasets

    calls = []
    anli = datasets.DatasetDict({s: datasets.Dataset.from_list([{"uid": s, "premise": "p", "hypothesis": "h",
                                                                   "label": 0, "reason": ""}])
                                 for s in ("train_r1", "dev_r1", "dev_r2")})  # fmt: skip

    def load(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return anli

    monkeypatch.setattr(datasets, "load_dataset", load)
    source = Source("hub:anli/r1@0123abc")
    assert source.splits("anli/r1") == ["train", "dev"]
    assert source.rows("anli/r1", "dev")[0]["uid"] == "dev_r1"
    assert calls == [("anli", None, {"revision": "0123abc"})]
    assert len(source_records(source)) == 15  # one row, every ANLI template (dev is its evaluation split)


def test_hub_offline_without_cache_fails_clearly(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SourceError) as err:
        Source("hub:super_glue/rte@0123456789abcdef").splits("super_glue/rte")
    message = str(err.value)
    assert "super_glue (rte) at revision 0123456789abcdef" in message and "datasets cache" in message
    assert "disk:, parquet:, json:" in message


@pytest.mark.slow
def test_evaluate_from_a_parquet_folder_equals_the_same_records_as_jsonl(make_model, tmp_path):
    """`evaluate --source` scores exactly what `evaluate --data` scores on the same rendered records."""
    from promptability.cli import main

    spec = _write(tmp_path, "super_glue/copa", {"validation": COPA}, "parquet")
    make_model("shallow").save(tmp_path / "model")
    records = source_records(spec)
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    common = ["evaluate", "--model", str(tmp_path / "model"), "--max-source-len", "64"]
    assert main([*common, "--source", spec, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--data", str(tmp_path / "records.jsonl"), "--out", str(tmp_path / "b")]) == 0
    a, b = ((tmp_path / run / "predictions.jsonl").read_text() for run in ("a", "b"))
    assert a == b and len(a.splitlines()) == len(records) > 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["data"] == spec and run["groups"][records[0]["task"]] == {"group": "COPA", "num_choices": 2}
    assert main([*common, "--source", spec.replace("parquet:", "json:"), "--out", str(tmp_path / "c")]) == 2


def test_load_templates_default_root_is_shipped():
    assert load_templates(None, "super_glue", "rte") == load_templates(shipped_templates(), "super_glue", "rte")


def test_hub_loading_scripts_are_refused_with_the_parquet_route(monkeypatch):
    import datasets

    def load(path, name=None, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found super_glue.py")

    monkeypatch.setattr(datasets, "load_dataset", load)
    with pytest.raises(SourceError) as err:
        Source("hub:super_glue/rte@script-rev").rows("super_glue/rte", "validation")
    assert "--revision refs/convert/parquet" in str(err.value) and "super_glue/rte=parquet:DIR/rte" in str(err.value)
