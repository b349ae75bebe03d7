"""Tuning several templates' prompts in one batch equals tuning each alone with the shared loop."""

import pytest
import torch

from promptability.data.batching import TRAIN_COLUMNS, collate
from promptability.data.tokenize import tokenize_records
from promptability.train.loop import make_accelerator, train
from promptability.train.steps.fixed_batch import FixedBatchStep
from promptability.train.steps.multi_prompt import tune_prompts_together

TEXTS = {
    "a": [("the cat sat on the mat", "yes"), ("a dog ran in the park", "no"), ("the sun was warm", "yes")],
    "b": [("is this review positive ?", "the red ball"), ("where is the book ?", "on the table")],
    "c": [("premise : anna is tall", "true false"), ("hypothesis : anna is short .", "neither")],
}


def prompt_only_rows(model, tokenizer) -> tuple[dict, dict]:
    """Freezes ``model`` to its prompt; returns TEXTS tokenized per template and the prompt's start state."""
    model.freeze("prompt-only")
    records = [{"task": t, "source": s, "target": y} for t, pairs in TEXTS.items() for s, y in pairs]
    ds = tokenize_records(records, tokenizer, use_cache=False, progress=False).dataset.select_columns(
        TRAIN_COLUMNS + ["task"]
    )
    rows = {t: [r for r in ds if r["task"] == t] for t in TEXTS}
    return rows, {k: v.clone() for k, v in model.prompt.state_dict().items()}


@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_batched_tuning_equals_one_template_at_a_time(make_model, tiny_tokenizer, kind):
    model = make_model(kind)
    rows, start = prompt_only_rows(model, tiny_tokenizer)

    together = tune_prompts_together(model, rows, start, epochs=5, pad_id=0, lr=1e-2, clip_norm=0.05)

    accelerator = make_accelerator("fp32", cpu=True)
    for t in TEXTS:
        model.prompt.load_state_dict(start)
        batch = collate([{k: r[k] for k in TRAIN_COLUMNS} for r in rows[t]], 0)
        step = FixedBatchStep(batch)
        train(model, step, accelerator, max_steps=5, lr=1e-2, clip_norm=0.05, seed=0, progress=False)
        for name, value in model.prompt.state_dict().items():
            torch.testing.assert_close(together[t]["state"][name], value, atol=1e-6, rtol=1e-5)
        assert together[t]["first_loss"] == pytest.approx(step.first_loss, rel=1e-5)
        assert not torch.equal(together[t]["state"][name], start[name]), "the prompt moved"
    model.prompt.load_state_dict(start)


def test_fewshot_with_templates_per_step_gives_the_same_runs(tmp_path, make_model):
    from promptability.suite.generate import write_suite
    from promptability.train.config import FewShotConfig
    from promptability.train.fewshot import fewshot

    write_suite(tmp_path / "suite", seed=0, size="quick", progress=False)
    model = make_model("shallow")
    model.save(tmp_path / "model")
    tasks = [
        "suite_coreference_pronoun_stories_which_person",
        "suite_coreference_pronoun_stories_pronoun_quiz",
        "suite_coreference_pronoun_stories_who_is_pronoun",
    ]
    summaries = []
    for per_step in (1, 2):
        config = FewShotConfig(
            seeds=[0],
            epochs=3,
            tasks=tasks,
            templates_per_step=per_step,
            max_source_len=64,
            max_target_len=16,
            prompt_length=4,
        )
        summaries.append(
            fewshot(tmp_path / "model", tmp_path / "suite", tmp_path / f"out{per_step}", config, progress=False)
        )
    assert summaries[0]["accuracy"] == summaries[1]["accuracy"]
    assert set(summaries[1]["accuracy"]) == set(tasks)


def test_fewshot_reference_subsample_is_checked_against_the_p3_split(tmp_path, make_model, p3_samples):
    """The reference indices point far past the 28-row samples: a clear error, not a silent resample."""
    from promptability.data.schema import DataError
    from promptability.train.config import FewShotConfig
    from promptability.train.fewshot import fewshot

    model = make_model("shallow")
    model.save(tmp_path / "model")
    config = FewShotConfig(seeds=[0], epochs=1, draw="reference", tasks=["hellaswag_complete_first_then_score_eval"])
    with pytest.raises(DataError, match="outside its train split"):
        fewshot(tmp_path / "model", p3_samples, tmp_path / "out", config, progress=False)


def test_bf16_autocast_reaches_the_forward_and_stays_close(make_model, tiny_tokenizer):
    """bf16 few-shot runs the batched forward in bf16 (the result moves) while prompts stay fp32 (and close)."""
    model = make_model("shallow")
    rows, start = prompt_only_rows(model, tiny_tokenizer)
    fp32 = tune_prompts_together(model, rows, start, epochs=3, pad_id=0, lr=1e-2)
    bf16 = tune_prompts_together(model, rows, start, epochs=3, pad_id=0, lr=1e-2, autocast=torch.bfloat16)
    for t in TEXTS:
        assert bf16[t]["first_loss"] != fp32[t]["first_loss"]
        assert bf16[t]["first_loss"] == pytest.approx(fp32[t]["first_loss"], rel=2e-2)
        for name, value in bf16[t]["state"].items():
            assert value.dtype == torch.float32
            # within one step of lr 1e-2 (bf16 rounding can tip one element's update: 5.1e-3 seen)
            torch.testing.assert_close(value, fp32[t]["state"][name], atol=1e-2, rtol=0)
