"""The project's promises about hostile or broken input, one test each (issue 17).

Data never runs code, and nothing a command writes leaves its ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from promptability.data.promptsource import Template, TemplateError
from promptability.io import _umask, safe_name
from promptability.train.config import ConfigError, FewShotConfig, TrainConfig
from promptability.train.fewshot import fewshot


@pytest.fixture(scope="module")
def accelerator():
    from promptability.train.loop import make_accelerator

    return make_accelerator("fp32", cpu=True)


EVIL_NAMES = ["../../escaped", "/tmp/promptability-abs-escape", "..", ".hidden", "a/b", "ok_name.v2"]


def test_safe_name_keeps_ordinary_names_and_confines_the_rest():
    for ordinary in ("anli_GPT_3_style_r1", "super_glue_wsc.fixed_GPT_3_Style_score_eval", "suite_h_yes_no"):
        assert safe_name(ordinary) == ordinary
    mapped = [safe_name(n) for n in EVIL_NAMES]
    assert len(set(mapped)) == len(mapped)  # never two names in one folder
    for name in mapped:
        assert "/" not in name and not name.startswith(".") and name not in ("", ".", "..")
        assert Path("/out", name).resolve().parent == Path("/out")


@pytest.fixture
def evil_suite(tmp_path):
    """A suite whose suite.json and records name templates with path-like names."""
    root = tmp_path / "suite"
    root.mkdir()
    names = ["../../escaped", "/tmp/promptability-abs-escape"]
    meta = {"format": "promptability-suite/1", "templates": {
        n: {"role": "heldout", "group": "G", "num_choices": 2, "cluster": "c"} for n in names}}  # fmt: skip
    (root / "suite.json").write_text(json.dumps(meta))
    rows = [
        {
            "task": n,
            "source": f"the cat sat on the mat {i}",
            "target": ["yes", "no"][i % 2],
            "choices": ["yes", "no"],
            "label": i % 2,
        }  # fmt: skip
        for n in names
        for i in range(6)
    ]
    for split in ("train", "validation"):  # files of any name whose records carry the task
        (root / split).mkdir()
        (root / split / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, names


def _outside(root: Path, out: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p != out and out not in p.parents}


def test_fewshot_never_writes_outside_out(evil_suite, make_model, accelerator, tmp_path):
    suite, names = evil_suite
    model_dir = make_model("shallow").save(tmp_path / "work" / "model")
    victim = tmp_path / "escaped"  # where "../../escaped" would land from out/seed-0/prompts
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    out = tmp_path / "work" / "fs"
    before = _outside(tmp_path, out)
    fewshot(model_dir, suite, out, FewShotConfig(shots=2, epochs=1, seeds=[0]), progress=False, accelerator=accelerator)
    assert _outside(tmp_path, out) == before
    assert (victim / "precious.txt").read_text() == "keep me"
    assert not Path("/tmp/promptability-abs-escape").exists()
    prompts = sorted(p.name for p in (out / "seed-0" / "prompts").iterdir())
    assert prompts == sorted(safe_name(n) for n in names)
    # the real names stay inside the files
    assert sorted(json.loads((out / "seed-0" / "accuracy.json").read_text())) == sorted(names)


def test_fewshot_refuses_unfinished_results_made_with_other_settings(evil_suite, make_model, accelerator, tmp_path):
    suite, _ = evil_suite
    out = tmp_path / "fs"
    partial = out / "seed-0" / "partial"
    partial.mkdir(parents=True)
    (partial / "settings.json").write_text(json.dumps({"model": "another-model", "lr": 0.5}))
    model_dir = make_model("shallow").save(tmp_path / "model")
    with pytest.raises(ConfigError, match="other settings.*model"):
        fewshot(model_dir, suite, out, FewShotConfig(shots=2, epochs=1, seeds=[0]), progress=False,
                accelerator=accelerator)  # fmt: skip


@pytest.mark.parametrize(
    "payload",
    [
        "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{% set x = [] %}{{ x.append(1) }}",
    ],
)
def test_templates_cannot_run_code(payload, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    template = Template("evil", "0", payload + " ||| yes", None, None, None)
    with pytest.raises(TemplateError, match="unsafe|render"):
        template.render({"text": "x"})
    assert not (tmp_path / "PWNED").exists()


# ----- what killed runs leave behind --------------------------------------------------------------
def _dead_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)  # fmt: skip


def test_stale_temporaries_are_removed_only_when_their_maker_is_gone(tmp_path):
    import os
    import time

    from promptability.io import is_stale, pid_suffix, remove_stale

    dead, alive = tmp_path / f"x.tmp-{_dead_pid()}", tmp_path / f"y.tmp-{os.getppid()}"
    mine, foreign = tmp_path / f"z.tmp-{os.getpid()}", tmp_path / "w.tmp-notapid"
    for folder in (dead, alive, mine, foreign):
        folder.mkdir()
    # a live pid whose process started after the folder was last changed: the pid was reused
    reused = tmp_path / f"r.tmp-{os.getppid()}"
    reused.mkdir()
    old = time.time() - 10 * 365 * 86400
    os.utime(reused, (old, old))
    assert is_stale(reused, os.getppid()) and not is_stale(alive, os.getppid())
    names = ("a.tmp-12", ".m.tmp-12-x1y2", "a.tmp", "a.tmp-x", "a.tmp-12.json")
    assert [pid_suffix(n) for n in names] == [12, 12, None, None, None]
    assert sorted(remove_stale(tmp_path.iterdir())) == sorted([dead, reused])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, mine, foreign))


def test_atomic_writes_remove_what_a_killed_writer_left(tmp_path):
    from promptability.io import write_json_atomic

    left = tmp_path / f".result.json.tmp-{_dead_pid()}-abc123"
    left.write_text("half a file")
    other = tmp_path / f".other.json.tmp-{_dead_pid()}-abc"  # another file's: not this write's business
    other.write_text("x")
    write_json_atomic(tmp_path / "result.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "result.json"]


def test_atomic_dir_replaces_whole_keeps_the_old_on_failure_and_removes_a_killed_writers_folders(tmp_path):
    import os

    from promptability.io import atomic_dir

    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")

    def killed_writer() -> None:
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        killed_writer()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and os.listdir(target) == ["a.txt"]
    (tmp_path / f".model.tmp-{_dead_pid()}-x1y2" / "sub").mkdir(parents=True)  # a killed writer's unfinished folder
    # Killed between its two renames, a writer leaves the old folder moved aside: the one complete copy, kept.
    aside = tmp_path / f".model.old-{_dead_pid()}"
    aside.mkdir()
    other = tmp_path / f".other.tmp-{_dead_pid()}-abc"  # another folder's: not this write's business
    other.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([aside.name, other.name, "model"])
    assert os.listdir(target) == ["b.txt"]
    assert oct((target / "b.txt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_tokenize_removes_stale_caches_of_any_key(tmp_path):
    from promptability.data.tokenize import tokenize_records
    from promptability.model.tiny import build_tokenizer

    stale = tmp_path / f"{'0' * 32}.tmp-{_dead_pid()}"  # another key's, from a killed run
    (stale / "data").mkdir(parents=True)
    tokenizer = build_tokenizer(["the cat sat on the mat"] * 20, vocab_size=60)
    records = [{"task": "t", "source": "the cat", "target": "mat", "choices": ["mat", "cat"], "label": 0}]
    out = tokenize_records(records, tokenizer, cache_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.key]


def test_a_diverging_run_stops_keeping_the_last_good_checkpoint(make_model, accelerator, tmp_path, tiny_tokenizer):
    """--lr far too high: the loss can stay finite while the weights blow up; the run must stop, not save."""
    from promptability.data.tokenize import tokenize_records
    from promptability.train.loop import DivergenceError, latest_checkpoint, train
    from promptability.train.steps.mtl import MTLStep

    records = [
        {"task": "t", "source": f"the cat sat on the mat {i}", "target": "yes", "choices": [], "label": -1}
        for i in range(8)
    ]
    data = tokenize_records(records, tiny_tokenizer, use_cache=False, progress=False).dataset
    model = make_model("shallow")
    model.freeze("mtl-tp")
    step = MTLStep(data, pad_id=tiny_tokenizer.pad_token_id, batch_size=4, micro_batch_size=4)
    out = tmp_path / "run"
    train(model, step, accelerator, max_steps=2, lr=1e-3, out_dir=out, save_every=1, progress=False)
    good = latest_checkpoint(out)
    with pytest.raises(DivergenceError, match=f"diverged.*{good.name}"):
        train(model, step, accelerator, max_steps=6, lr=1e6, out_dir=out, save_every=1, resume=True, progress=False)
    assert latest_checkpoint(out) == good  # nothing after the blow-up was saved


def test_saved_model_files_follow_the_umask(make_model, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        folder = make_model("shallow").save(tmp_path / "model")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()]}
    assert modes.pop("model") == 0o755
    assert set(modes.values()) == {0o644}, modes


def test_a_hub_id_without_network_fails_at_once(monkeypatch):
    """Not cached, no network: one quick probe and a clear error, not a minute of download retries."""
    import time

    import huggingface_hub
    from huggingface_hub import constants

    from promptability.model import load_model

    def unreachable(self, repo_id, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    start = time.perf_counter()
    with pytest.raises(OSError, match="not in the Hugging Face cache, and the Hub cannot be reached"):
        load_model("someone/not-cached-model")
    assert time.perf_counter() - start < 5


def test_resuming_a_finished_run_keeps_its_final_loss(make_model, accelerator, tmp_path):
    from promptability.train.pretrain import pretrain

    data = tmp_path / "data.jsonl"
    rows = [{"task": f"t{i % 2}", "source": f"the cat sat on the mat {i}", "target": "yes"} for i in range(16)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TrainConfig(method="mtl-tp", prompt="shallow", prompt_length=4, model="tiny-test", batch_size=8,
                         micro_batch_size=8, save_every=1)  # fmt: skip
    config.data.path = str(data)
    out = tmp_path / "run"
    pretrain(config, out, progress=False, accelerator=accelerator, model=make_model("shallow"))
    first = json.loads((out / "train.json").read_text())["final_loss"]
    assert first is not None
    result = pretrain(config, out, resume=True, progress=False, accelerator=accelerator, model=make_model("shallow"))
    assert result.last == {}  # nothing left to train
    assert json.loads((out / "train.json").read_text())["final_loss"] == first


def test_an_interrupted_final_save_is_refused_then_finished(make_model, tmp_path, monkeypatch):
    """A kill between the file moves must not leave new weights with an old prompt that loads."""
    import os

    from promptability.io import BadFileError
    from promptability.model import load_model
    from promptability.train import pretrain as pretrain_module

    out = tmp_path / "run"
    old, new = make_model("shallow", seed=0), make_model("shallow", seed=1)
    pretrain_module.save_final_model(old, out, {})
    moves, real_replace = [], os.replace

    def replace(src, dst):
        if Path(dst).parent == out:  # the moves out of the staging folder, not the writes inside it
            if len(moves) == 1:
                raise KeyboardInterrupt  # killed after the first file moved
            moves.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        pretrain_module.save_final_model(new, out, {})
    monkeypatch.undo()
    with pytest.raises(BadFileError, match="interrupted"):
        load_model(out)
    pretrain_module.finish_final_save(out)  # what the next pretrain on `out` does first
    loaded = dict(load_model(out).named_parameters())
    assert all(torch.equal(p, loaded[n]) for n, p in new.named_parameters())


def test_checkpoint_temporaries_of_a_killed_run_are_removed(make_model, accelerator, tmp_path, tiny_tokenizer):
    from promptability.data.tokenize import tokenize_records
    from promptability.train.loop import train
    from promptability.train.steps.mtl import MTLStep

    records = [{"task": "t", "source": f"the cat sat {i}", "target": "yes"} for i in range(4)]
    data = tokenize_records(records, tiny_tokenizer, use_cache=False, progress=False).dataset
    stale = tmp_path / "run" / "checkpoints" / ".step-7.tmp"
    stale.mkdir(parents=True)
    (stale / "half-written").write_text("x")
    model = make_model("shallow")
    model.freeze("mtl-tp")
    step = MTLStep(data, pad_id=model.pad_token_id, batch_size=4, micro_batch_size=4)
    train(model, step, accelerator, max_steps=1, out_dir=tmp_path / "run", save_every=1, progress=False)
    assert not stale.exists()
