"""Few-shot prompt tuning: fixed batch, prompt reset per template, final prompt evaluated, runs per seed."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from promptability.data.schema import DataError
from promptability.eval.runs import load_run
from promptability.model.loading import load_model
from promptability.train.config import ConfigError, FewShotConfig
from promptability.train.fewshot import choose_draw, fewshot, heldout_tasks
from promptability.train.steps.fixed_batch import FixedBatchStep

from conftest import SENTENCES

HELDOUT = ("suite_h_yes_no", "suite_h_colour")
CHOICES = {"suite_h_yes_no": ["yes", "no"], "suite_h_colour": ["red", "blue", "the cat"]}


def _records(task: str, n: int, offset: int = 0) -> list[dict]:
    choices = CHOICES[task]
    return [
        {
            "task": task,
            "source": f"{SENTENCES[(i + offset) % len(SENTENCES)]} ? {i}",
            "target": choices[i % len(choices)],
            "choices": choices,
            "label": i % len(choices),
        }  # fmt: skip
        for i in range(n)
    ]


@pytest.fixture
def suite(tmp_path):
    root = tmp_path / "suite"
    templates = {"suite_t_train": ("train", "T", 0), **{t: ("heldout", "G" + t[-2:], len(CHOICES[t])) for t in HELDOUT}}
    meta = {"format": "promptability-suite/1", "templates": {
        t: {"role": role, "group": group, "num_choices": k, "cluster": "c"} for t, (role, group, k) in templates.items()}}  # fmt: skip
    for split in ("train", "validation"):
        (root / split).mkdir(parents=True)
        for t in HELDOUT:
            recs = _records(t, 10 if split == "train" else 6, offset=0 if split == "train" else 3)
            (root / split / f"{t}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (root / "suite.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def saved_model(make_model, tmp_path):
    def save(prompt: str) -> str:
        return str(make_model(prompt).save(tmp_path / f"model-{prompt}"))

    return save


def test_fixed_batch_step_is_the_mean_token_loss(make_model, batch, accelerator):
    model = make_model("shallow")
    model.freeze("prompt-only")
    step = FixedBatchStep(batch)
    metrics = step(model, accelerator)
    with torch.no_grad():
        reference = make_model("shallow")(**batch).loss
    assert metrics["loss"] == pytest.approx(float(reference), abs=1e-6) == step.first_loss
    assert metrics["examples"] == 2 and step.state_dict() == {"calls": 1}
    assert model.prompt.weight.grad is not None and model.transformer.shared.weight.grad is None


def micro_batching_matches_one_batch(model, batch, accelerator, max_tokens: int, weighting: str) -> None:
    """FixedBatchStep with micro-batches: the loss and the prompt's gradient of the batch run whole (float order aside)."""
    model.freeze("prompt-only")
    results = []
    for tokens in (0, max_tokens):
        model.zero_grad()
        step = FixedBatchStep(batch, loss_weighting=weighting, micro_batch_tokens=tokens)
        metrics = step(model, accelerator)
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((metrics, grads, len(step.micro_batches)))
    (whole, whole_grads, one), (split, split_grads, parts) = results
    assert one == 1 and parts > 1
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert (split["tokens"], split["examples"]) == (whole["tokens"], whole["examples"])
    for a, b in zip(split_grads, whole_grads, strict=True):
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("weighting", ["token", "example"])
def test_fixed_batch_micro_batches_give_the_whole_batchs_gradient(make_model, tiny_tokenizer, accelerator, weighting):
    from promptability.data.batching import collate
    from promptability.data.tokenize import tokenize_records

    from conftest import make_records

    data = tokenize_records(make_records(8), tiny_tokenizer, use_cache=False, progress=False).dataset
    batch = collate(data.select_columns(["input_ids", "labels"])[:8], tiny_tokenizer.pad_token_id)
    micro_batching_matches_one_batch(make_model("shallow"), batch, accelerator, 40, weighting)


def test_fewshot_tunes_each_template_from_the_models_prompt(suite, saved_model, accelerator, tmp_path):
    model_dir = saved_model("shallow")
    original = load_model(model_dir).prompt.weight.detach().clone()
    config = FewShotConfig(shots=4, epochs=8, seeds=[0, 1], lr=0.3)
    out = tmp_path / "fs"
    summary = fewshot(model_dir, suite, out, config, progress=False, accelerator=accelerator)

    accs = {}
    for seed in (0, 1):
        run = load_run(out / f"seed-{seed}", require_predictions=True)
        assert (run.shots, run.seed, run.prompt, run.method) == (4, seed, "shallow", "none")
        # The suite has no reference draw: each seed is its own seeded random draw, and run.json says so.
        assert {k: run.meta[k] for k in ("draw", "draw_seed", "precision", "source_eos")} == {
            "draw": "random", "draw_seed": seed, "precision": "fp32", "source_eos": True}  # fmt: skip
        assert sorted(run.accuracy) == sorted(HELDOUT)
        assert sum(len(p.index) for p in run.predictions.values()) == 12
        accs[seed] = run.accuracy
        losses = json.loads((out / f"seed-{seed}" / "fewshot.json").read_text())
        for t in HELDOUT:
            assert losses[t]["examples"] == 4
            assert losses[t]["final_loss"] < losses[t]["first_loss"]  # the prompt learned the 4 examples
        assert not (out / f"seed-{seed}" / "partial").exists()
    # The tuned prompts are prompt-only saves of this model, and differ from its prompt.
    tuned = load_model(out / "seed-0" / "prompts" / HELDOUT[0])
    assert not torch.equal(tuned.prompt.weight, original)

    # Each template starts from the model's prompt: tuning one template alone gives the same prompt.
    alone = fewshot(model_dir, suite, tmp_path / "alone", FewShotConfig(shots=4, epochs=8, seeds=[0], lr=0.3,
                    tasks=[HELDOUT[1]]), progress=False, accelerator=accelerator)  # fmt: skip
    assert alone["templates"] == 1
    a = load_model(out / "seed-0" / "prompts" / HELDOUT[1]).prompt.weight
    b = load_model(tmp_path / "alone" / "seed-0" / "prompts" / HELDOUT[1]).prompt.weight
    assert torch.equal(a, b)

    means = [statistics.fmean(accs[s].values()) for s in (0, 1)]
    assert summary["mean_accuracy"]["per_seed"] == pytest.approx(means)
    assert summary["mean_accuracy"]["std"] == pytest.approx(statistics.stdev(means))
    assert summary["accuracy"][HELDOUT[0]]["mean"] == pytest.approx((accs[0][HELDOUT[0]] + accs[1][HELDOUT[0]]) / 2)
    assert summary["arg"] is not None and len(summary["arg"]["per_seed"]) == 2
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))

    # A rerun finds both seeds finished and leaves them alone.
    stamp = (out / "seed-1" / "predictions.jsonl").stat().st_mtime_ns
    again = fewshot(model_dir, suite, out, config, progress=False, accelerator=accelerator)
    assert again["mean_accuracy"] == summary["mean_accuracy"]
    assert (out / "seed-1" / "predictions.jsonl").stat().st_mtime_ns == stamp


def test_a_model_without_prompt_gets_a_fresh_one_per_seed(suite, saved_model, accelerator, tmp_path):
    model_dir = saved_model("none")
    config = FewShotConfig(shots=2, epochs=1, seeds=[0, 5], prompt="deep", prompt_length=3, tasks=[HELDOUT[0]])
    summary = fewshot(model_dir, suite, tmp_path / "fs", config, progress=False, accelerator=accelerator)
    assert summary["prompt"] == "deep" and summary["fresh_prompt"] is True
    p0 = load_model(tmp_path / "fs" / "seed-0" / "prompts" / HELDOUT[0]).prompt
    assert p0.length == 3 and len(p0.keys) == 6  # 2 encoder + 2x2 decoder attention sites


def test_templates_and_errors(suite, saved_model, tmp_path):
    names, groups = heldout_tasks(suite)
    assert names == list(HELDOUT) and groups[HELDOUT[1]] == {"group": "Gur", "num_choices": 3}
    with pytest.raises(ConfigError, match="no template"):
        heldout_tasks(suite, ["nope"])
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "mine.validation.jsonl").write_text(json.dumps(_records(HELDOUT[0], 1)[0] | {"task": "mine"}) + "\n")
    with pytest.raises(ConfigError, match="none of the 116 held-out P3 templates"):
        heldout_tasks(plain)
    with pytest.raises(ConfigError, match="--prompt must be shallow or deep"):
        FewShotConfig(prompt="none").validate()
    with pytest.raises(ConfigError, match="micro_batch_tokens must be >= 0"):
        FewShotConfig(micro_batch_tokens=-1).validate()
    with pytest.raises(ConfigError, match="use it with templates_per_step 1"):
        FewShotConfig(micro_batch_tokens=512, templates_per_step=2).validate()


def test_a_finished_output_with_other_settings_is_not_reused(suite, saved_model, accelerator, tmp_path):
    model_dir = saved_model("shallow")
    config = FewShotConfig(shots=2, epochs=1, seeds=[0], tasks=[HELDOUT[0]])
    fewshot(model_dir, suite, tmp_path / "fs", config, progress=False, accelerator=accelerator)
    config.epochs = 2
    with pytest.raises(ConfigError, match="seed-0 holds a run with other settings \\(epochs\\)"):
        fewshot(model_dir, suite, tmp_path / "fs", config, progress=False, accelerator=accelerator)


STORY = "story_cloze_2016_Story_Continuation_and_Options_score_eval"  # its few-shot pool: the validation split


def test_p3_default_draw_is_exactly_the_reference_subsample(p3_samples, saved_model, accelerator, tmp_path,
                                                             monkeypatch):  # fmt: skip
    """On P3 with 16 shots the default draw is the reference subsample, checked by its md5; no random draw."""
    import datasets

    from promptability.data import fewshot as fewshot_data
    from promptability.data import registry

    rows = datasets.load_from_disk(str(p3_samples / STORY / "validation")).to_list()
    config = FewShotConfig(epochs=1, seeds=[0, 1], tasks=[STORY], max_source_len=32, max_target_len=8)
    # The package's indices point past the 28 sample rows: the default names the way out.
    with pytest.raises(DataError, match="outside its validation split.*--set draw=random samples instead"):
        fewshot(saved_model("shallow"), p3_samples, tmp_path / "real", config, progress=False, accelerator=accelerator)

    indices = [27, 3, 11, 0, 19, 7, 25, 14, 2, 22, 9, 16, 5, 20, 12, 1]
    md5 = fewshot_data.fewshot_md5(rows[i] for i in indices)
    real = registry.reference_fewshot
    monkeypatch.setattr(registry, "reference_fewshot",
                        lambda kind="heldout": {**real(kind), STORY: {"indices": indices, "md5": md5}})  # fmt: skip
    chosen = []
    monkeypatch.setattr(fewshot_data, "sample_fewshot", lambda *a, **k: pytest.fail("a random draw was made"))
    original = fewshot_data.reference_fewshot_subsample
    monkeypatch.setattr(fewshot_data, "reference_fewshot_subsample",
                        lambda *a, **k: chosen.append(original(*a, **k)) or chosen[-1])  # fmt: skip
    summary = fewshot(saved_model("shallow"), p3_samples, tmp_path / "fs", config, progress=False,
                      accelerator=accelerator)  # fmt: skip
    assert summary["draw"] == "reference" and len(chosen) == 2  # one per seed, the same draw
    for shots in chosen:
        assert [r["source"] for r in shots] == [rows[i]["inputs_pretokenized"] for i in indices]
    for seed in (0, 1):
        run = load_run(tmp_path / "fs" / f"seed-{seed}")
        assert (run.meta["draw"], run.meta["draw_seed"], run.seed) == ("reference", None, seed)
    # Asking for random draws on the same data samples instead.
    assert choose_draw(FewShotConfig(draw="random"), p3_samples, [STORY]) == "random"
    assert choose_draw(FewShotConfig(shots=8), p3_samples, [STORY]) == "random"  # no reference draw of 8
    assert choose_draw(FewShotConfig(), p3_samples, [STORY, "hellaswag_complete_first_then_score_eval"]) == "reference"
    assert choose_draw(FewShotConfig(), p3_samples, ["adversarial_qa_dbert_based_on"]) == "random"  # not held out


def test_the_suite_and_source_eos_option(suite, saved_model, accelerator, tmp_path):
    assert choose_draw(FewShotConfig(), suite, list(HELDOUT)) == "random"
    config = FewShotConfig(shots=2, epochs=1, seeds=[0], tasks=[HELDOUT[0]], source_eos=False)
    fewshot(saved_model("shallow"), suite, tmp_path / "fs", config, progress=False, accelerator=accelerator)
    run = load_run(tmp_path / "fs" / "seed-0")
    assert run.meta["source_eos"] is False and run.meta["precision"] == "fp32"
    config.source_eos = True  # a finished seed without source EOS is not reused for a run with it
    with pytest.raises(ConfigError, match="other settings \\(source_eos\\)"):
        fewshot(saved_model("shallow"), suite, tmp_path / "fs", config, progress=False, accelerator=accelerator)
