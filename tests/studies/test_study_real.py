"""The real study: its data directory from ../shared/realdata, and a toy-scale run end to end."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from promptability.data.readers import read_examples
from promptability.data.registry import heldout_templates
from promptability.studies.data import TRAIN_SPLITS, as_cos_e, dataset_key
from promptability.studies.pipeline import StudySettingsError, check_settings
from promptability.studies.real import QUICK, run_real_study

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    """One toy-scale study with a tiny random Llama (word-level tokenizer), shared by the tests below."""
    if not (SHARED / "realdata").is_dir() or not (SHARED / "promptsource").is_dir():
        pytest.skip("../shared/realdata and ../shared/promptsource are only beside the repository here and in CI")
    from promptability.model.causal import PromptedCausalLM
    from promptability.model.tiny import build_tokenizer, default_corpus

    root = tmp_path_factory.mktemp("study")
    tokenizer = build_tokenizer(default_corpus(), vocab_size=2000)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)  # fmt: skip
    PromptedCausalLM(LlamaForCausalLM(config), tokenizer, "none", 4, base_model="tiny-llama").save(root / "tiny-llama")
    table = run_real_study(SHARED / "realdata", None, root / "out", str(root / "tiny-llama"), QUICK, progress=False)
    return root / "out", table


@pytest.mark.slow
def test_data_dir_follows_the_t0_split_and_keeps_pools_apart(quick_study):
    out, _ = quick_study
    manifest = json.loads((out / "data" / "study.json").read_text())
    assert set(manifest["heldout"]) | set(manifest["skipped"]) >= set(heldout_templates())
    assert len(manifest["heldout"]) >= 110  # only COPA's cause/effect-only templates can miss 3 sampled rows
    for name, info in manifest["heldout"].items():
        split = "test" if name.startswith("story_cloze") else "validation"
        rows = read_examples(out / "data" / split / f"{name}.jsonl")
        assert len(rows) == info["instances"] <= QUICK.eval_instances and all(r["choices"] for r in rows)
        pool_split = "validation" if name.startswith("story_cloze") else "train"
        pool = {r["source"] for r in read_examples(out / "data" / pool_split / f"{name}.jsonl")}
        assert len(pool) == info["pool"] or len(pool) < info["pool"]  # duplicates collapse in the set
        assert not pool & {r["source"] for r in rows}, f"{name}: a few-shot example is also evaluated on"
    assert "held back" in manifest["pools"]["anli/r1"] and "train split" in manifest["pools"]["super_glue/rte"]
    trained = {dataset_key(t) for t in manifest["train"]}
    assert trained <= set(TRAIN_SPLITS) and "commonsense_qa" in trained  # via P3's cos_e templates
    assert not trained & {dataset_key(t) for t in heldout_templates()}
    for name in manifest["train"]:
        rows = read_examples(out / "data" / "train" / f"{name}.jsonl")
        assert 0 < len(rows) <= QUICK.train_per_template
        assert all(len(r["source"].split()) <= QUICK.max_source_words for r in rows)


@pytest.mark.slow
def test_toy_run_reports_every_row_and_resumes(quick_study, capsys):
    out, table = quick_study
    for row in ("No continued pretraining", "MTL-T", "MTL-TP"):
        assert f"| {row} |" in table
    zero = json.loads((out / "runs" / "0shot" / "base" / "accuracy.json").read_text())
    manifest = json.loads((out / "data" / "study.json").read_text())
    assert sorted(zero) == sorted(manifest["heldout"])
    assert (out / "report" / "table.md").is_file() and (out / "report" / "per_group_accuracy.png").is_file()
    scale = (out / "report" / "scale.md").read_text()
    assert "## Few-shot pools" in scale and "anli/r1" in scale
    gain = (out / "report" / "fewshot_gain.md").read_text()
    assert sum(line.startswith(("| base |", "| mtl-t |", "| mtl-tp-")) for line in gain.splitlines()) == 4
    again = run_real_study(SHARED / "realdata", None, out, manifest_model(out), QUICK, progress=False)
    assert again == table
    timings = json.loads((out / "timings.json").read_text())["stages"]
    assert all(s["reused"] for s in timings if s["stage"] != "report")
    with pytest.raises(StudySettingsError, match=r"other settings \(lr\)"):  # stale stages are never mixed in
        run_real_study(SHARED / "realdata", None, out, manifest_model(out), replace(QUICK, lr=1e-3), progress=False)
    # Another few-shot recipe redoes the few-shot stage alone: the models and 0-shot runs are reused.
    run_real_study(SHARED / "realdata", None, out, manifest_model(out), replace(QUICK, fewshot_lr=3e-2), progress=False)
    stages = {s["stage"]: s["reused"] for s in json.loads((out / "timings.json").read_text())["stages"]}
    assert all(reused == (not name.startswith(("16-shot", "report"))) for name, reused in stages.items()), stages
    assert any(name.startswith("16-shot") for name in stages)
    recorded = json.loads((out / "settings.json").read_text())["scale"]
    assert recorded["fewshot_lr"] == 3e-2 and recorded["lr"] == QUICK.lr


def test_a_few_shot_recipe_change_redoes_only_the_few_shot_stage(tmp_path, capsys):
    from promptability.studies.real import FEWSHOT_KEYS

    settings = {"model": "m", "data": "d", "scale": asdict(QUICK)}
    check_settings(tmp_path, settings, FEWSHOT_KEYS)
    for kept in ("models/mtl-t/model.safetensors", "runs/0shot/base/run.json"):
        (tmp_path / kept).parent.mkdir(parents=True)
        (tmp_path / kept).touch()
    for stale in ("runs/16shot/base-shallow/seed-0/run.json", "report/table.md"):
        (tmp_path / stale).parent.mkdir(parents=True)
        (tmp_path / stale).touch()
    with pytest.raises(StudySettingsError, match=r"other settings \(mtl_steps\)"):
        check_settings(
            tmp_path, {**settings, "scale": asdict(replace(QUICK, mtl_steps=9, fewshot_lr=1.0))}, FEWSHOT_KEYS
        )
    assert (tmp_path / "runs" / "16shot").is_dir()  # a refusal removes nothing
    changed = {**settings, "scale": asdict(replace(QUICK, fewshot_lr=1.0, fewshot_epochs=7))}
    check_settings(tmp_path, changed, FEWSHOT_KEYS)
    assert "fewshot_epochs, fewshot_lr changed" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "16shot").exists() and not (tmp_path / "report").exists()
    assert (tmp_path / "models" / "mtl-t" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "0shot" / "base" / "run.json").is_file()
    assert json.loads((tmp_path / "settings.json").read_text()) == changed
    check_settings(tmp_path, changed, FEWSHOT_KEYS)  # the same settings again: nothing to say
    assert capsys.readouterr().out == ""


def test_a_folder_from_before_the_micro_batch_fields_reads_them_as_batches_run_whole(tmp_path, capsys):
    from promptability.studies.real import ABSENT, FEWSHOT_KEYS, GPU, StudyScale, _fewshot_config, _train_config

    def folder(scale: dict) -> Path:
        old = {k: v for k, v in scale.items() if k not in ABSENT}  # settings.json written before the fields
        (tmp_path / "settings.json").write_text(json.dumps({"model": "m", "data": "d", "scale": old}))
        return tmp_path

    gpu = {"model": "m", "data": "d", "scale": asdict(GPU)}  # its micro-batch was its batch, its shots one batch
    check_settings(folder(gpu["scale"]), gpu, FEWSHOT_KEYS, ABSENT)
    assert capsys.readouterr().out == ""
    default = {"model": "m", "data": "d", "scale": asdict(StudyScale())}  # 8 examples, now as 2 x 4: other models
    with pytest.raises(StudySettingsError, match=r"other settings \(micro_batch_size\)"):
        check_settings(folder(default["scale"]), default, FEWSHOT_KEYS, ABSENT)
    quick = {"model": "m", "data": "d", "scale": asdict(QUICK)}  # 4 examples as 1 x 4: the same models
    check_settings(folder(quick["scale"]), quick, FEWSHOT_KEYS, ABSENT)
    assert "[settings] fewshot_micro_batch_tokens changed" in capsys.readouterr().out
    # The fields reach the steps: the MTL step's micro-batch and the few-shot step's token budget.
    scale = replace(QUICK, micro_batch_size=2, fewshot_micro_batch_tokens=300)
    assert _train_config(scale, "mtl-t", "none", "m", tmp_path, ["t"]).micro_batch_size == 2
    assert _fewshot_config(scale, "shallow", "none", ["t"]).micro_batch_tokens == 300


def manifest_model(out: Path) -> str:
    return json.loads((out / "runs" / "0shot" / "base" / "run.json").read_text())["model"]


def test_commonsense_qa_rows_become_cos_e_rows():
    row = {"id": "x", "question": "Where do fish live?", "choices": {"label": ["A", "B", "C", "D"],
           "text": ["tree", "water", "sky", "desk"]}, "answerKey": "B"}  # fmt: skip
    assert as_cos_e(row) == {"id": "x", "question": "Where do fish live?", "choices": ["tree", "water", "sky", "desk"],
                             "answer": "water"}  # fmt: skip


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="give --data"):
        run_real_study(tmp_path / "nowhere", tmp_path, tmp_path / "out", "tiny", QUICK, progress=False)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_is_bf16_only_where_bf16_matmuls_are_fast(monkeypatch, fast):
    from promptability.train import distributed

    monkeypatch.setattr(distributed, "fast_bf16", lambda: fast)
    assert distributed.resolve_precision("auto") == ("bf16" if fast else "fp32")
    assert distributed.resolve_precision("fp32") == "fp32" and distributed.resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="'auto', 'fp32' or 'bf16'"):
        distributed.resolve_precision("fp16")


@pytest.mark.parametrize("fast", [True, False])
def test_the_study_records_the_resolved_precision(monkeypatch, tmp_path, fast):
    """Settings hold the precision "auto" resolved to, so a host that resolves otherwise is refused on resume."""
    from promptability.studies import real
    from promptability.train import distributed

    class Recorded(Exception):
        pass

    def record(out, settings, *_):
        raise Recorded(settings["scale"]["precision"])

    monkeypatch.setattr(distributed, "fast_bf16", lambda: fast)
    monkeypatch.setattr(real, "check_settings", record)
    (tmp_path / "data").mkdir()
    with pytest.raises(Recorded, match="^bf16$" if fast else "^fp32$"):
        run_real_study(tmp_path / "data", None, tmp_path / "out", "m", replace(QUICK, precision="auto"),
                       progress=False, sources=None)  # fmt: skip
