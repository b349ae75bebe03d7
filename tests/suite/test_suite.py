"""The offline task suite: determinism, structure, balance, schema, atomic writes, CLI hook."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from promptability.data.schema import validate
from promptability.data.suite_layout import read_meta
from promptability.eval.groups import suite_groups
from promptability.suite import generate as suite_mod
from promptability.suite.generate import (
    SIZES,
    add_suite_command,
    generate_suite,
    lm_corpus,
    suite_templates,
    tokenizer_texts,
    write_suite,
)
from promptability.suite.tasks import CLUSTERS, DATASETS
from promptability.suite.world import lexicon

# What each held-out cluster shares with the training clusters: the knowledge its instances need (which the
# LM-adaptation corpus also states in plain text) and the answer formats its templates use. No training
# cluster is of a held-out task type: none asks whom a pronoun means, what happens next in a story, or in which
# sense a word is used.
SHARED: dict[str, tuple[tuple[str, str], ...]] = {
    "coreference": (("structure_to_text", "the gender of each name (records written with she/he)"),
                    ("extractive_qa", "pronouns resolved to names; names as answers"),
                    ("multiple_choice_qa", "who-questions answered by one of the names in the text"),
                    ("sentiment", "yes/no answers")),
    "completion": (("summarization", "the ten event scripts, step by step"),
                   ("sentiment", "yes/no answers"), ("paraphrase", "true/false answers"),
                   ("multiple_choice_qa", "options listed as (a) (b) ... in the source")),
    "word_sense": (("topic", "the ambiguous words used in each topic's sense; topic names as answers"),
                   ("sentiment", "yes/no answers"), ("paraphrase", "true/false answers")),
}  # fmt: skip


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("suite") / "quick"
    write_suite(out, seed=0, size="quick", progress=False)
    return out


@pytest.fixture(scope="module")
def quick():
    return generate_suite(0, "quick")


@pytest.fixture(scope="module")
def default():
    return generate_suite(0, "default")


def _digest(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_bytes_other_seed_other_bytes(written, tmp_path):
    write_suite(tmp_path / "again", seed=0, size="quick", progress=False)
    write_suite(tmp_path / "other", seed=1, size="quick", progress=False)
    first, again, other = _digest(written), _digest(tmp_path / "again"), _digest(tmp_path / "other")
    assert first == again
    assert first.keys() == other.keys()
    changed = [name for name in first if first[name] != other[name]]
    assert len(changed) > 0.9 * len(first)


def test_layout_and_counts_match_meta(written):
    meta = read_meta(written)
    assert (meta["seed"], meta["size"]) == (0, "quick")
    names = suite_templates()
    assert list(meta["templates"]) == names
    files = {p.relative_to(written).as_posix() for p in written.rglob("*.jsonl")}
    assert files == {f"{split}/{t}.jsonl" for split in ("train", "validation") for t in names}
    quick = SIZES["quick"]
    for name, info in meta["templates"].items():
        if info["role"] == "train":
            expected = (quick.train, quick.train_validation)
        else:
            expected = (quick.heldout_train, quick.heldout_validation)
        assert (info["counts"]["train"], info["counts"]["validation"]) == expected, name
        for split in ("train", "validation"):
            assert len(_read(written / split / f"{name}.jsonl")) == info["counts"][split]
    assert meta["totals"]["train"]["train"] == quick.train * len(suite_templates("train"))


def test_every_record_passes_the_schema(written):
    for path in sorted(written.rglob("*.jsonl")):
        for row, record in enumerate(_read(path)):
            assert record["task"] == path.stem
            assert validate(record, str(path), row) == record


def test_clusters_and_templates_mirror_p3(written):
    meta = read_meta(written)
    roles = {c: info["role"] for c, info in meta["clusters"].items()}
    assert sum(r == "train" for r in roles.values()) >= 8
    assert sum(r == "heldout" for r in roles.values()) >= 3
    per_dataset = Counter((i["cluster"], i["dataset"]) for i in meta["templates"].values())
    assert min(per_dataset.values()) >= 3
    for name, info in meta["templates"].items():
        assert info["role"] == roles[info["cluster"]]
        assert name == f"suite_{info['cluster']}_{info['dataset']}_{info['template']}"
    # Training classification templates have choices; generative ones (QA, structure-to-text, summaries) do not.
    generative = {"extractive_qa", "closed_book_qa", "structure_to_text", "summarization"}
    for name in suite_templates("train"):
        info = meta["templates"][name]
        record = _read(written / "train" / f"{name}.jsonl")[0]
        if info["cluster"] in generative:
            assert (info["num_choices"], record["choices"], record["label"]) == (0, [], -1)
        else:
            assert info["num_choices"] == len(record["choices"]) >= 2
            assert record["target"] == record["choices"][record["label"]]


def test_heldout_clusters_are_never_trained_on(written, quick):
    meta = read_meta(written)
    heldout_clusters = {c for c, info in meta["clusters"].items() if info["role"] == "heldout"}
    assert {"coreference", "completion", "word_sense"} == heldout_clusters
    train_names = set(suite_templates("train"))
    assert not any(meta["templates"][t]["cluster"] in heldout_clusters for t in train_names)
    assert train_names.isdisjoint(suite_templates("heldout"))
    # Not even a held-out text shows up as a training source.
    train_sources = {r["source"] for r in quick.iter_records("train", role="train")}
    assert not train_sources & {r["source"] for r in quick.iter_records("validation", role="heldout")}


def test_heldout_choices_labels_and_balance(quick):
    arities = set()
    for name in quick.templates("heldout"):
        for split in ("train", "validation"):
            records = quick.records[split][name]
            k = quick.meta["templates"][name]["num_choices"]
            arities.add(k)
            assert 2 <= k <= 4
            for r in records:
                assert len(r["choices"]) == k and len(set(r["choices"])) == k and 0 <= r["label"] < k
            counts = Counter(r["label"] for r in records)
            assert set(counts) == set(range(k)), (name, split)
            assert max(counts.values()) / len(records) <= 0.6, (name, split, counts)
    assert arities == {2}


def test_heldout_answers_are_verbalised_labels(default):
    """Every held-out answer is one word, never a sentence the LM-adapted base could pick by its likelihood (so the
    floor is chance): an option the source names (a name, a verb, a topic) or a fixed label pair."""
    kinds: dict[str, set[str]] = {}
    for name in default.templates("heldout"):
        records = default.records["validation"][name]
        assert all(len(c.split()) == 1 for r in records for c in r["choices"]), name
        if all(c in r["source"] for r in records for c in r["choices"]):
            kind = "named"
        elif len({tuple(r["choices"]) for r in records}) == 1:
            kind = "fixed labels"
        else:
            kind = "choices only"
        kinds.setdefault(kind, set()).add(default.meta["templates"][name]["group"])
    assert kinds == {"named": {"Coreference", "Completion", "WordSense"}, "fixed labels": {"WordSense"}}


def test_heldout_groups_share_knowledge_and_formats_not_task_types(default):
    clusters = {ds.cluster: CLUSTERS[ds.cluster][0] for ds in DATASETS}
    assert set(SHARED) == {c for c, role in clusters.items() if role == "heldout"}
    for heldout, shared in SHARED.items():
        assert shared and all(clusters[c] == "train" for c, _ in shared), heldout
    # Which held-out groups answer with words that training templates also answer with (names, topics): the
    # verbs naming a story's next step never are.
    trained = {c for r in default.iter_records("validation", role="train") for c in r["choices"]}
    answers: dict[str, set[str]] = {}
    for name in default.templates("heldout"):
        group = default.meta["templates"][name]["group"]
        answers.setdefault(group, set()).update(c for r in default.records["validation"][name] for c in r["choices"])
    shared_share = {g: round(len(a & trained) / len(a), 1) for g, a in answers.items()}
    assert shared_share == {"Coreference": 1.0, "Completion": 0.0, "WordSense": 1.0}


def test_heldout_tasks_are_not_solved_by_surface_heuristics(default):
    suite = default  # bigger samples, so the rates mean something
    for name in suite.templates("heldout"):
        records = suite.records["validation"][name]
        k = len(records[0]["choices"])
        for pick in (max, min):  # always the longest / the shortest choice
            hits = sum(pick(range(k), key=lambda i: len(r["choices"][i])) == r["label"] for r in records)
            assert hits / len(records) <= 1 / k + 0.15, (name, pick.__name__, hits)


def test_default_size_fits_a_cpu_demo(default):
    meta = default.meta
    assert 15_000 <= meta["totals"]["train"]["train"] <= 30_000
    for info in meta["templates"].values():
        if info["role"] == "heldout":
            assert 100 <= info["counts"]["validation"] <= 200 and info["counts"]["train"] >= 16


def test_a_dataset_s_instances_do_not_depend_on_the_other_datasets(quick, monkeypatch):
    """Each dataset draws from its own seeded stream and its own seen-set, so adding or dropping a dataset (RTE
    and NLI were dropped) leaves every other dataset's records as they were."""
    kept = tuple(d for d in DATASETS if d.name not in ("word_usages", "reviews"))
    monkeypatch.setattr(suite_mod, "DATASETS", kept)
    fewer = generate_suite(0, "quick")
    assert fewer.templates() == [t for t in quick.templates() if "_word_usages_" not in t and "_reviews_" not in t]
    for split in ("train", "validation"):
        for name in fewer.templates():
            assert fewer.records[split][name] == quick.records[split][name], (split, name)


def test_validation_instances_are_not_training_instances(quick):
    for name in quick.templates():
        if quick.meta["templates"][name]["cluster"] == "closed_book_qa":
            continue  # a fixed set of world facts, asked again by design
        train = {(r["source"], r["target"]) for r in quick.records["train"][name]}
        assert not train & {(r["source"], r["target"]) for r in quick.records["validation"][name]}, name


def test_suite_groups(written):
    groups = suite_groups(read_meta(written))
    assert set(groups) == set(suite_templates("heldout"))
    assert {g["group"] for g in groups.values()} == {"Coreference", "Completion", "WordSense"}
    assert groups["suite_coreference_pronoun_stories_who_is_pronoun"] == {"group": "Coreference", "num_choices": 2}
    assert groups["suite_completion_script_endings_what_happens_next"]["num_choices"] == 2
    assert len(suite_groups(read_meta(written), role=None)) == len(suite_templates())


def test_write_is_atomic_on_error(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = suite_mod._dumps

    def failing(obj):
        calls["n"] += 1
        if calls["n"] > 500:  # well into the files
            raise OSError("disk full")
        return real(obj)

    monkeypatch.setattr(suite_mod, "_dumps", failing)
    with pytest.raises(OSError, match="disk full"):
        write_suite(tmp_path / "suite", size="quick", progress=False)
    assert list(tmp_path.iterdir()) == []
    # A failed overwrite keeps the old suite whole.
    monkeypatch.setattr(suite_mod, "_dumps", real)
    write_suite(tmp_path / "suite", seed=0, size="quick", progress=False)
    before = _digest(tmp_path / "suite")
    calls["n"] = 0
    monkeypatch.setattr(suite_mod, "_dumps", failing)
    with pytest.raises(OSError):
        write_suite(tmp_path / "suite", seed=1, size="quick", overwrite=True, progress=False)
    assert _digest(tmp_path / "suite") == before
    assert [p.name for p in tmp_path.iterdir()] == ["suite"]


def test_existing_folder_rules(tmp_path):
    out = tmp_path / "suite"
    meta = write_suite(out, seed=3, size="quick", progress=False)
    assert write_suite(out, seed=3, size="quick", progress=False) == meta  # already there: nothing to do
    with pytest.raises(FileExistsError, match="seed 3"):
        write_suite(out, seed=4, size="quick", progress=False)
    assert write_suite(out, seed=4, size="quick", overwrite=True, progress=False)["seed"] == 4
    assert read_meta(out)["seed"] == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["suite"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        write_suite(tmp_path / "busy", size="quick", progress=False)
    with pytest.raises(ValueError, match="size must be one of"):
        generate_suite(0, "huge")


def test_corpora(quick):
    lm = list(lm_corpus(0, 300))
    assert len(lm) == 300 and lm == list(lm_corpus(0, 300)) and lm != list(lm_corpus(1, 300))
    assert all(isinstance(t, str) and t.strip() for t in lm)
    assert len(set(lm)) > 200
    texts = list(tokenizer_texts(quick))
    assert all(isinstance(t, str) for t in texts)
    record = next(quick.iter_records("validation", role="heldout"))
    assert {record["source"], record["target"], *record["choices"]} <= set(texts)
    assert set(lexicon()) <= set(texts)


def test_add_suite_command(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="promptability data")
    sub = parser.add_subparsers(dest="data_command")
    add_suite_command(sub)
    args = parser.parse_args(["suite", "--out", str(tmp_path / "s"), "--seed", "2", "--size", "quick"])
    assert args.func(args) == 0
    assert read_meta(tmp_path / "s")["seed"] == 2
    assert "held-out templates" in capsys.readouterr().out
    args = parser.parse_args(["suite", "--out", str(tmp_path / "s"), "--seed", "5", "--size", "quick"])
    assert args.func(args) == 2
    assert "--overwrite" in capsys.readouterr().err
