"""Every training method and few-shot tuning on a decoder-only model (a tiny random Llama with GQA)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from promptability.eval.runs import load_run
from promptability.model.causal import PromptedCausalLM
from promptability.model.loading import load_model
from promptability.train.config import FewShotConfig, MetaConfig, TrainConfig
from promptability.train.fewshot import fewshot
from promptability.train.pretrain import pretrain

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "the",
    "mat",
    "a",
    "dog",
    "ran",
    "in",
    "the",
    "park",
    "with",
    "a",
    "red",
    "ball",
    "is",
    "this",
    "review",
    "positive",
    "yes",
    "no",
]


def tiny_llama(tokenizer, prompt: str, length: int = 4) -> PromptedCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)  # fmt: skip
    return PromptedCausalLM(LlamaForCausalLM(config), tokenizer, prompt, length, base_model="tiny-llama")


def records(task: str, n: int, choices: list[str] | None = None) -> list[dict]:
    out = []
    for i in range(n):
        source = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 5))
        if choices:
            out.append({"task": task, "source": source, "target": choices[i % 2], "choices": choices, "label": i % 2})
        else:
            out.append({"task": task, "source": source, "target": WORDS[i % len(WORDS)], "choices": [], "label": -1})
    return out


def write(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    ("method", "prompt", "transformer_trains", "prompt_trains"),
    [("mtl-t", "none", True, None), ("mtl-p", "shallow", False, True), ("mtl-tp", "deep", True, True),
     ("fomaml", "shallow", True, True), ("reptile", "deep", True, True)],
)  # fmt: skip
def test_every_method_trains_a_causal_lm(tiny_tokenizer, accelerator, tmp_path, method, prompt, transformer_trains,
                                         prompt_trains):  # fmt: skip
    for t in range(3):
        write(tmp_path / "data" / "train" / f"task_{t}.jsonl", records(f"task_{t}", 12))
    config = TrainConfig(method=method, prompt=prompt, prompt_length=4, model="tiny-llama", batch_size=8,
                         micro_batch_size=4, max_steps=2, save_every=1,
                         meta=MetaConfig(meta_batch_size=2, inner_steps=1, task_batch_size=2))  # fmt: skip
    config.data.path = str(tmp_path / "data")
    model = tiny_llama(tiny_tokenizer, prompt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = pretrain(config, tmp_path / "run", progress=False, accelerator=accelerator, model=model)
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.last["loss"]))
    changed = {n: not torch.equal(before[n], p) for n, p in model.named_parameters()}
    transformer = [c for n, c in changed.items() if n.startswith("transformer.")]
    assert all(transformer) if transformer_trains else not any(transformer)
    if prompt_trains is not None:
        assert all(c for n, c in changed.items() if n.startswith("prompt."))
    loaded = load_model(tmp_path / "run")
    assert loaded.is_causal and loaded.prompt_kind == prompt
    saved = dict(loaded.named_parameters())
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_fewshot_tunes_only_the_prompt_of_a_causal_lm(tiny_tokenizer, tmp_path, kind):
    data = tmp_path / "data"
    heldout = ["h_yes_no", "h_other"]
    meta = {"format": "promptability-suite/1", "templates": {
        t: {"role": "heldout", "group": t, "num_choices": 2, "cluster": "c"} for t in heldout}}  # fmt: skip
    for t in heldout:
        write(data / "train" / f"{t}.jsonl", records(t, 20, ["yes", "no"]))
        write(data / "validation" / f"{t}.jsonl", records(t, 6, ["yes", "no"]))
    (data / "suite.json").write_text(json.dumps(meta))
    base = tiny_llama(tiny_tokenizer, "none")
    base.save(tmp_path / "base")
    config = FewShotConfig(shots=4, epochs=3, seeds=[0], prompt=kind, prompt_length=4, lr=0.1,
                           templates_per_step=2)  # fmt: skip
    fewshot(tmp_path / "base", data, tmp_path / "fs", config, progress=False)
    run = load_run(tmp_path / "fs" / "seed-0")
    assert run.prompt == kind and sorted(run.accuracy) == sorted(heldout)
    tuned = load_model(tmp_path / "fs" / "seed-0" / "prompts" / heldout[0])
    assert tuned.is_causal and tuned.prompt_kind == kind
    reloaded = load_model(tmp_path / "base")
    tuned_params = dict(tuned.named_parameters())
    for name, p in reloaded.named_parameters():  # the transformer is the base model's, untouched
        assert torch.equal(p, tuned_params[name])
    losses = json.loads((tmp_path / "fs" / "seed-0" / "fewshot.json").read_text())
    assert all(v["final_loss"] < v["first_loss"] for v in losses.values())


@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_fixed_batch_micro_batches_give_the_whole_batchs_gradient_on_a_causal_lm(tiny_tokenizer, accelerator, kind):
    from test_fewshot import micro_batching_matches_one_batch

    from promptability.data.batching import collate
    from promptability.data.tokenize import tokenize_records

    data = tokenize_records(records("t", 8), tiny_tokenizer, use_cache=False, progress=False, continuation=True)
    batch = collate(data.dataset.select_columns(["input_ids", "labels"])[:8], tiny_tokenizer.pad_token_id)
    micro_batching_matches_one_batch(tiny_llama(tiny_tokenizer, kind).eval(), batch, accelerator, 16, "token")
