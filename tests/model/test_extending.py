"""docs/extending.md's worked example: a prompt kind is one file plus one registry line.

The residual prompt is read from the document itself and registered at test time, so
the document cannot drift from what works.
"""

import re
from pathlib import Path

import pytest
import torch

from promptability.model import load_model
from promptability.model.causal import PromptedCausalLM
from promptability.model.prompts import PROMPT_KINDS, ShallowPrompt, kind_of, prompt_names

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def residual_prompt_class() -> type:
    text = DOC.read_text()
    example = text[text.index("### Worked example") :]
    code = re.search(r"```python\n(.*?)```", example, re.S).group(1)
    namespace: dict = {"__name__": "residual_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace["ResidualPrompt"]


@pytest.fixture
def residual(monkeypatch):
    """The registry line of the example, for this test only."""
    cls = residual_prompt_class()
    monkeypatch.setitem(PROMPT_KINDS, "residual", cls)
    return cls


@pytest.fixture
def make_causal(tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(prompt: str, seed: int = 0):
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=len(tiny_tokenizer), pad_token_id=0, eos_token_id=1,
                             bos_token_id=1)  # fmt: skip
        return PromptedCausalLM(LlamaForCausalLM(config), tiny_tokenizer, prompt, 4, seed=seed, base_model="t").eval()

    return make


def test_the_registry_names_the_kinds_in_report_order():
    assert list(PROMPT_KINDS) == ["shallow", "deep"]
    assert prompt_names() == ("none", "shallow", "deep")


def test_each_kinds_class_attributes_say_what_its_instances_do(residual, make_model):
    """``prepends`` and ``takes_deep_init`` are what code with only a kind's name reads (plan, run settings)."""
    for name, kind in PROMPT_KINDS.items():
        model = make_model(name)
        assert kind_of(name) is kind
        assert (model.prompt.prepended == 4) is kind.prepends and model.prepended == (4 if kind.prepends else 0)
        assert ("deep_init" in model.settings()) is kind.takes_deep_init
    assert PROMPT_KINDS["shallow"].prepends and PROMPT_KINDS["deep"].takes_deep_init
    assert not PROMPT_KINDS["deep"].prepends and not PROMPT_KINDS["shallow"].takes_deep_init
    assert kind_of("none") is None and kind_of(None) is None


def test_a_fresh_residual_prompt_is_the_shallow_prompt_of_its_seed(residual, make_model, make_causal, batch):
    for make in (make_model, lambda kind: make_causal(kind)):
        model, shallow = make("residual"), make("shallow")
        assert isinstance(model.prompt, residual) and isinstance(model.prompt, ShallowPrompt)
        torch.testing.assert_close(model.prompt.weight, shallow.prompt.weight, atol=0, rtol=0)
        torch.testing.assert_close(model(**batch).logits, shallow(**batch).logits, atol=0, rtol=0)
        assert model.prepended == 4 and model.settings()["prompt"] == "residual"


def test_init_prompt_reproduces_the_constructors_residual_prompt(residual, make_model):
    model = make_model("residual", seed=3)
    fresh = {k: v.clone() for k, v in model.prompt_state().items()}
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.add_(1.0)
    model.init_prompt(3)
    assert all(torch.equal(fresh[k], v) for k, v in model.prompt_state().items())


def test_residual_prompt_trains_saves_and_loads(residual, make_model, batch, tmp_path):
    model = make_model("residual")
    trained = model.freeze("prompt-only")
    assert {id(p) for p in trained} == {id(p) for p in model.prompt_parameters()} and len(trained) == 3
    optimizer = torch.optim.SGD(trained, lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    assert model.prompt.up.abs().sum() > 0  # the MLP is trained, not only the prompt matrix
    model.save(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt").eval()
    assert loaded.prompt_kind == "residual"
    assert all(torch.equal(v, loaded.prompt_state()[k]) for k, v in model.prompt_state().items())
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_configs_cli_and_report_read_the_registry(residual):
    from promptability.cli import build_parser
    from promptability.cli.common import settings_of
    from promptability.eval.report import _prompt_key
    from promptability.eval.runs import _parse_meta
    from promptability.train.config import FewShotConfig, TrainConfig

    assert TrainConfig(method="mtl-tp", prompt="residual").validate().prompt == "residual"
    assert FewShotConfig(prompt="residual").validate().prompt == "residual"
    args = build_parser().parse_args(["fewshot", "--model", "m", "--data", "d", "--out", "o", "--prompt", "residual"])
    assert settings_of(args)["prompt"] == "residual"
    meta = {"method": "mtl-tp", "prompt": "residual", "shots": 0, "model": "m"}
    assert _parse_meta(Path("run.json"), meta)["prompt"] == "residual"
    assert [_prompt_key(p) for p in ("shallow", "deep", "residual", "none")] == [0, 1, 2, 3]
