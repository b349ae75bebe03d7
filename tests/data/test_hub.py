"""`data fetch p3`: P3's files through a Hub cache laid out as huggingface_hub lays it out, offline."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from tests.data.test_p3 import scored_rows, write_native

from promptability.cli import main
from promptability.data import hub, registry
from promptability.data.p3 import group_p3_rows, read_p3_instances
from promptability.data.readers import available_tasks, read_examples

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TRAIN_T = "adversarial_qa_dbert_based_on"  # a T0 training template: train only
HELD_T = "hellaswag_complete_first_then_score_eval"  # held-out: validation, and train for few-shot draws
STORY_T = "story_cloze_2016_Story_Continuation_and_Options_score_eval"  # not on the Hub


def plain_rows(n: int, offset: int = 0) -> list[dict]:
    return [
        {"inputs": [10 + i, 1], "inputs_pretokenized": f"context {i + offset}\n",
         "targets": [20 + i, 1], "targets_pretokenized": f" answer {i + offset}\n"}
        for i in range(n)
    ]  # fmt: skip


def p3_folders(root: Path) -> dict[str, dict[str, list[dict]]]:
    """Native P3 folders under ``root/data``, with the splits and extras the Hub holds; returns the rows."""
    rows = {
        TRAIN_T: {"train": plain_rows(5), "validation": plain_rows(3, 100)},
        HELD_T: {"train": scored_rows([2, 3, 2, 4], [1, 0, 1, 3]), "validation": scored_rows([3, 2], [2, 0])},
    }
    for template, splits in rows.items():
        folder = root / "data" / template
        for split, split_rows in splits.items():
            write_native(folder, split, split_rows)
            (folder / f"stats.{split}.json").write_text("{}")
        (folder / "COMPLETED").write_text("")
    # the held-out train split in two shards, as larger P3 splits are
    held = root / "data" / HELD_T
    whole = held / "train.tfrecord-00000-of-00001"
    write_native(held / "part", "train", rows[HELD_T]["train"][:5], info=False)
    write_native(held / "part2", "train", rows[HELD_T]["train"][5:], info=False)
    (held / "part" / "train.tfrecord-00000-of-00001").rename(held / "train.tfrecord-00000-of-00002")
    (held / "part2" / "train.tfrecord-00000-of-00001").rename(held / "train.tfrecord-00001-of-00002")
    whole.unlink()
    (held / "part").rmdir()
    (held / "part2").rmdir()
    return rows


def hub_cache(cache: Path, source: Path, commit: str = COMMIT, ref: str | None = "main") -> Path:
    """``source``'s files as huggingface_hub caches a dataset: blobs by hash, snapshot links, refs."""
    storage = cache / "datasets--bigscience--P3"
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = storage / "snapshots" / commit / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return storage


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """A Hub cache holding two P3 templates, found through huggingface_hub's own setting, offline."""
    from huggingface_hub import constants

    rows = p3_folders(tmp_path / "src")
    storage = hub_cache(tmp_path / "hub", tmp_path / "src")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # what HF_HUB_CACHE sets at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return rows, storage


def test_template_splits_follow_the_registry():
    assert hub.template_splits(TRAIN_T) == ["train"]
    assert hub.template_splits(HELD_T) == ["train", "validation"]
    assert hub.template_splits(STORY_T) == ["test", "validation"]
    chosen = hub.select_templates(train=True, heldout=True, names=[TRAIN_T, "x_y"])
    assert len(chosen) == 313 + 116 + 1 and chosen[-1] == "x_y"
    assert chosen[313:429] == sorted(registry.heldout_templates())
    with pytest.raises(hub.P3FetchError, match=r"'\.\./etc'"):
        hub.select_templates(names=["../etc"])


def test_fetch_offline_reads_back_what_the_cache_holds(cached, tmp_path):
    rows, storage = cached
    out = tmp_path / "p3"
    report = hub.fetch_p3(out, [TRAIN_T, HELD_T], progress=False)
    assert (report.commit, report.fetched, report.kept, report.missing) == (COMMIT, 7, 0, {})
    assert sorted(os.listdir(out / "data" / TRAIN_T)) == ["info.train.json", "train.tfrecord-00000-of-00001"]
    assert sorted(os.listdir(out / "data" / HELD_T)) == [
        "info.train.json", "info.validation.json", "train.tfrecord-00000-of-00002",
        "train.tfrecord-00001-of-00002", "validation.tfrecord-00000-of-00001",
    ]  # fmt: skip
    for split in ("train", "validation"):
        expected = list(group_p3_rows(rows[HELD_T][split]))
        assert read_p3_instances(out / "data" / HELD_T, split) == expected
    assert [i["row"] for i in read_p3_instances(out / "data" / HELD_T, "train")] == [0, 2, 5, 7]
    assert read_p3_instances(out / "data" / TRAIN_T, "train") == list(group_p3_rows(rows[TRAIN_T]["train"]))
    # the files are the cache's blobs themselves (one file system: hard links, no second copy)
    shard = out / "data" / TRAIN_T / "train.tfrecord-00000-of-00001"
    snapshot = storage / "snapshots" / COMMIT / "data" / TRAIN_T / shard.name
    assert shard.stat().st_ino == snapshot.resolve().stat().st_ino
    # pretrain / evaluate read the folder as --data OUT
    assert available_tasks(out) == {TRAIN_T, HELD_T}
    records = read_examples(out, "validation", [HELD_T])
    assert [r["label"] for r in records] == [2, 0]
    manifest = json.loads((out / hub.MANIFEST).read_text())
    assert (manifest["repo"], manifest["revision"], manifest["commit"]) == ("bigscience/P3", "main", COMMIT)
    assert manifest["templates"][TRAIN_T] == {"splits": ["train"], "files": {
        "train.tfrecord-00000-of-00001": shard.stat().st_size,
        "info.train.json": (out / "data" / TRAIN_T / "info.train.json").stat().st_size}}  # fmt: skip


def test_second_fetch_keeps_whole_files_and_replaces_the_rest(cached, tmp_path):
    out = tmp_path / "p3"
    hub.fetch_p3(out, [TRAIN_T, HELD_T], progress=False)
    again = hub.fetch_p3(out, [TRAIN_T, HELD_T], progress=False)
    assert (again.fetched, again.kept) == (0, 7)
    shard = out / "data" / HELD_T / "train.tfrecord-00001-of-00002"
    whole = shard.read_bytes()
    shard.unlink()
    shard.write_bytes(whole[:-7])  # a copy cut short (made by hand: fetch itself never leaves one)
    (out / "data" / TRAIN_T / "info.train.json").unlink()
    third = hub.fetch_p3(out, [TRAIN_T, HELD_T], progress=False)
    assert (third.fetched, third.kept) == (2, 5)
    assert shard.read_bytes() == whole
    assert not list(out.rglob("*.tmp-*"))


def test_missing_templates_are_listed_with_the_way_to_get_them(cached, tmp_path):
    out = tmp_path / "p3"
    with pytest.raises(hub.P3FetchError) as caught:
        hub.fetch_p3(out, [TRAIN_T, STORY_T, "no_such_template"], progress=False)
    message = str(caught.value)
    assert message.startswith(f"2 of 3 P3 templates could not be fetched (the other 1 are in {out / 'data'}):")
    story_line = next(line for line in message.splitlines() if line.startswith(f"  {STORY_T}:"))
    assert "StoryCloze is not in bigscience/P3" in story_line and "rocstories" in story_line
    assert f"in {out / 'data' / STORY_T}/ and rerun" in story_line
    assert "test.tfrecord-00000-of-00001 + info.test.json" in story_line
    assert "  no_such_template: not in the Hub cache" in message and "HF_HUB_OFFLINE is set" in message
    with pytest.raises(hub.P3FetchError) as caught:
        hub.fetch_p3(out, ["no_such_template", "other_one", TRAIN_T], progress=False)
    why = f"not in the Hub cache ({tmp_path / 'hub'}), and HF_HUB_OFFLINE is set: unset it to download"
    assert str(caught.value).splitlines()[1:] == [f"  2 templates, {why}: no_such_template, other_one"]
    assert (out / "data" / TRAIN_T / "train.tfrecord-00000-of-00001").is_file()
    # the user puts StoryCloze's P3 files in place; the rerun takes them as they are
    write_native(out / "data" / STORY_T, "validation", scored_rows([2], [1]))
    write_native(out / "data" / STORY_T, "test", scored_rows([2, 2], [0, 1]))
    report = hub.fetch_p3(out, [TRAIN_T, STORY_T], progress=False)
    assert (report.provided, report.fetched, report.kept) == ([STORY_T], 0, 2)
    manifest = json.loads((out / hub.MANIFEST).read_text())
    assert manifest["templates"][STORY_T] == {"splits": ["test", "validation"], "provided": True}


def test_a_split_or_shard_the_cache_lacks_is_named(cached, tmp_path):
    _, storage = cached
    snapshot = storage / "snapshots" / COMMIT / "data"
    (snapshot / HELD_T / "train.tfrecord-00001-of-00002").unlink()
    with pytest.raises(hub.P3FetchError, match=r"'train' shards are not all there \(train.tfrecord-00000-of-00002\)"):
        hub.fetch_p3(tmp_path / "a", [HELD_T], progress=False)
    with pytest.raises(hub.P3FetchError, match=r"has no 'test' split \(it has: train, validation\)"):
        hub.fetch_p3(tmp_path / "b", [TRAIN_T], splits=["test"], progress=False)


def test_offline_without_the_revision_in_the_cache(cached, tmp_path):
    with pytest.raises(hub.P3FetchError, match=r"has no revision 'v9' of bigscience/P3.*HF_HUB_OFFLINE is set"):
        hub.fetch_p3(tmp_path / "p3", [TRAIN_T], revision="v9", progress=False)
    report = hub.fetch_p3(tmp_path / "p3", [TRAIN_T], revision=COMMIT, progress=False)  # a commit needs no ref
    with pytest.raises(hub.P3FetchError, match=r"--revision: '\.\./\.\./x' is not a branch"):
        hub.fetch_p3(tmp_path / "p3", [TRAIN_T], revision="../../x", progress=False)
    assert report.fetched == 2


def test_a_folder_keeps_one_commit(cached, tmp_path):
    rows, storage = cached
    out = tmp_path / "p3"
    hub.fetch_p3(out, [TRAIN_T], progress=False)
    newer = "f" * 40
    hub_cache(tmp_path / "hub", tmp_path / "src", commit=newer)
    with pytest.raises(hub.P3FetchError, match=f"holds P3 files of commit {COMMIT}, but revision 'main' is {newer}"):
        hub.fetch_p3(out, [HELD_T], progress=False)
    assert hub.fetch_p3(out, [HELD_T], revision=COMMIT, progress=False).fetched == 5


def test_online_listing_decides_what_the_hub_lacks(cached, tmp_path, monkeypatch):
    """The Hub's own listing (stubbed: no network here); files then come from the cache by commit."""
    storage = cached[1]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "_offline", lambda: False)
    source = tmp_path / "src" / "data" / TRAIN_T
    listing = {TRAIN_T: {f.name: f.stat().st_size for f in source.iterdir()}}
    monkeypatch.setattr(hub, "_hub_listing", lambda repo, revision, templates: (COMMIT, listing))
    out = tmp_path / "p3"
    with pytest.raises(hub.P3FetchError, match=f"  {HELD_T}: bigscience/P3 has no such folder data/{HELD_T}/"):
        hub.fetch_p3(out, [TRAIN_T, HELD_T], progress=False)
    assert read_p3_instances(out / "data" / TRAIN_T, "train")[4]["source"] == "context 4\n"

    def unreachable(repo, revision, templates):
        raise ConnectionError("no route to host")

    # the Hub's answer for a revision name is kept in the cache's refs/, for fetches made offline later
    hub.fetch_p3(tmp_path / "v1", [TRAIN_T], revision="v1", progress=False)
    assert (storage / "refs" / "v1").read_text() == COMMIT
    monkeypatch.setattr(hub, "_hub_listing", unreachable)
    assert hub.fetch_p3(out, [TRAIN_T, HELD_T], progress=False).fetched == 5  # served by the cache
    with pytest.raises(hub.P3FetchError, match=r"could not be reached \(ConnectionError: no route to host\)"):
        hub.fetch_p3(out, ["no_such_template"], progress=False)
    assert hub.fetch_p3(tmp_path / "v1-again", [TRAIN_T], revision="v1", progress=False).fetched == 2


def test_cli_fetch(cached, tmp_path, capsys):
    out = tmp_path / "p3"
    assert main(["data", "fetch", "p3", "--out", str(out), "--templates", TRAIN_T, HELD_T, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"2 P3 templates in {out / 'data'} (bigscience/P3 at {COMMIT}): 7 files fetched, 0 already there" in printed
    assert main(["data", "fetch", "p3", "--out", str(out), "--templates", STORY_T, "--no-progress"]) == 2
    assert "error: 1 of 1 P3 templates could not be fetched" in capsys.readouterr().err
    assert main(["data", "fetch", "p3", "--out", str(out), "--no-progress"]) == 2
    assert "no templates chosen" in capsys.readouterr().err


def test_across_file_systems_the_files_are_copied(cached, tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")  # EXDEV, as os.link fails between file systems

    monkeypatch.setattr(os, "link", no_link)
    _, storage = cached
    out = tmp_path / "p3"
    assert hub.fetch_p3(out, [TRAIN_T], progress=False).fetched == 2
    shard = out / "data" / TRAIN_T / "train.tfrecord-00000-of-00001"
    blob = (storage / "snapshots" / COMMIT / "data" / TRAIN_T / shard.name).resolve()
    assert shard.read_bytes() == blob.read_bytes() and shard.stat().st_ino != blob.stat().st_ino
    assert not shard.is_symlink()
