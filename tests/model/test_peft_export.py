"""export_peft: PEFT (PeftModel.from_pretrained on the exported folder) gives our logits within 1e-5."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file
from tests.model.test_causal import concat, tiny_causal
from transformers import AutoModelForCausalLM, T5ForConditionalGeneration

from promptability.cli import main
from promptability.model.causal import PromptedCausalLM
from promptability.model.peft_export import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BASE_FOLDER,
    PeftExportError,
    export_peft,
    peft_adapter,
)

peft = pytest.importorskip("peft")


def peft_model(out, auto, base_path=None):
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    base = auto.from_pretrained(base_path or config["base_model_name_or_path"])
    return peft.PeftModel.from_pretrained(base, str(out)).eval(), config


def perturbed(model, scale=0.05):
    """The transformer moved away from its start, as continued pretraining of MTL-T/MTL-TP moves it."""
    with torch.no_grad():
        for p in model.transformer.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@pytest.mark.parametrize("saved", ["full", "prompt-only"])
def test_t5_shallow_prompt_tuning_adapter_gives_our_logits(make_model, batch, tmp_path, saved):
    model = make_model("shallow", length=5)
    with torch.no_grad():
        model.prompt.weight.add_(torch.randn_like(model.prompt.weight))
    if saved == "full":
        perturbed(model).save(tmp_path / "model")
    else:  # few-shot tuning's save: the prompt alone, naming a plain Transformers folder as its base
        model.transformer.save_pretrained(tmp_path / "hf")
        model.base_model = str(tmp_path / "hf")
        model.save(tmp_path / "model", prompt_only=True)
    out = export_peft(tmp_path / "model", tmp_path / "adapter")
    reference, config = peft_model(out, T5ForConditionalGeneration)
    expected_base = out / BASE_FOLDER if saved == "full" else tmp_path / "hf"
    assert config["base_model_name_or_path"] == str(expected_base.resolve())
    assert (config["peft_type"], config["num_virtual_tokens"], config["num_transformer_submodules"]) == (
        "PROMPT_TUNING",
        5,
        1,
    )
    assert (out / BASE_FOLDER).is_dir() == (saved == "full")
    assert torch.equal(load_file(str(out / ADAPTER_WEIGHTS))["prompt_embeddings"], model.prompt.weight)
    labels = batch["labels"].masked_fill(batch["decoder_attention_mask"] == 0, -100)
    with torch.no_grad():
        ours = model(**batch).logits
        theirs = reference(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=labels,
            decoder_attention_mask=batch["decoder_attention_mask"],
        ).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_llama_prompt_adapter_gives_our_logits(tiny_tokenizer, batch, tmp_path, kind):
    """GQA (4 heads, 2 key/value heads); the transformer is trained (full save), so DIR/base holds its weights."""
    lm = tiny_causal("llama", len(tiny_tokenizer))
    model = PromptedCausalLM(lm, tiny_tokenizer, kind, 5, base_model="tiny-causal").eval()
    perturbed(model).save(tmp_path / "model")
    out = export_peft(tmp_path / "model", tmp_path / "adapter")
    reference, config = peft_model(out, AutoModelForCausalLM)
    assert config["base_model_name_or_path"] == str((out / BASE_FOLDER).resolve())
    assert config["peft_type"] == ("PROMPT_TUNING" if kind == "shallow" else "PREFIX_TUNING")
    virtual = 5 if kind == "shallow" else 0  # prompt tuning's logits include its virtual positions
    with torch.no_grad():
        ours = model(**batch).logits
        for i in range(batch["input_ids"].shape[0]):
            src, tgt = concat(batch, i)
            theirs = reference(input_ids=torch.cat([src, tgt])[None]).logits[0]
            expected = theirs[virtual + len(src) - 1 : virtual + len(src) + len(tgt) - 1]
            assert (ours[i, : len(tgt)] - expected).abs().max() < 1e-5


def test_prefix_keys_are_rotated_and_values_kept(tiny_tokenizer):
    """Row p of the table is (layers, 2, kv_heads, head_dim): values exactly ours, keys ours turned by RoPE."""
    lm = tiny_causal("llama", len(tiny_tokenizer))
    model = PromptedCausalLM(lm, tiny_tokenizer, "deep", 3).eval()
    _, table = peft_adapter(model, "base")
    layers, heads, head_dim = 2, 2, 8
    view = table.view(3, layers, 2, heads, head_dim)
    for layer in range(layers):
        keys, values = model.prompt.kv(layer)
        assert torch.equal(view[:, layer, 1], values.transpose(0, 1))
        # a rotation: each key keeps its norm but moves
        exported = view[:, layer, 0].transpose(0, 1)
        assert torch.allclose(exported.norm(dim=-1), keys.norm(dim=-1), atol=1e-5)
        assert (exported - keys).abs().max() > 1e-2


def test_t5_deep_prompt_is_refused_with_the_reason(make_model, tmp_path, capsys):
    model = make_model("deep", length=3)
    with pytest.raises(PeftExportError, match="encoder"):
        peft_adapter(model, "base")
    model.save(tmp_path / "model")
    assert main(["export", "peft", str(tmp_path / "model"), "--out", str(tmp_path / "adapter")]) == 2
    assert "cannot be exported to PEFT" in capsys.readouterr().err
    assert not (tmp_path / "adapter").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp folder left behind


def test_absolute_position_deep_prompt_is_refused(tiny_tokenizer):
    model = PromptedCausalLM(tiny_causal("gpt2", len(tiny_tokenizer)), tiny_tokenizer, "deep", 3)
    with pytest.raises(PeftExportError, match="absolute position"):
        peft_adapter(model, "base")


def test_no_prompt_is_refused(make_model, tmp_path):
    make_model("none").save(tmp_path / "model")
    with pytest.raises(PeftExportError, match="no prompt"):
        export_peft(tmp_path / "model", tmp_path / "adapter")


def test_cli_refuses_a_non_empty_out_unless_forced(make_model, tmp_path, capsys):
    model = make_model("shallow", length=4)
    model.save(tmp_path / "model")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "keep.txt").write_text("mine")
    args = ["export", "peft", str(tmp_path / "model"), "--out", str(tmp_path / "adapter")]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "adapter" / "keep.txt").read_text() == "mine"
    assert main([*args, "--force"]) == 0
    assert "PeftModel.from_pretrained" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == sorted(
        [ADAPTER_CONFIG, ADAPTER_WEIGHTS, BASE_FOLDER, "promptability-export.json"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "model"]
    saved = load_file(str(tmp_path / "adapter" / ADAPTER_WEIGHTS))["prompt_embeddings"]
    assert torch.equal(saved, model.prompt.weight)


def test_missing_peft_is_a_clear_error(make_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(PeftExportError, match="pip install"):
        peft_adapter(make_model("shallow"), "base")
