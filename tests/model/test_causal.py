"""PromptedCausalLM on tiny random Llama- and GPT-2-style models: forward meaning, prompts, freezing, save/load."""

import copy
import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from promptability.model import load_model
from promptability.model.causal import PromptedCausalLM, self_attention_modules

ARCHS = ["llama", "gpt2"]


def tiny_causal(arch: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    ids = dict(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if arch == "llama":
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            **ids,
        )
        return LlamaForCausalLM(config)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids)
    return GPT2LMHeadModel(config)


@pytest.fixture
def make_causal(tiny_tokenizer):
    """``make_causal(arch, prompt, length=4)`` → a small PromptedCausalLM in eval mode."""

    def make(arch: str = "llama", prompt: str = "none", length: int = 4, seed: int = 0):
        lm = tiny_causal(arch, len(tiny_tokenizer), seed)
        return PromptedCausalLM(lm, tiny_tokenizer, prompt, length, seed=seed, base_model="tiny-causal").eval()

    return make


def concat(batch, i):
    n = int(batch["attention_mask"][i].sum())
    t = int(batch["decoder_attention_mask"][i].sum())
    return batch["input_ids"][i, :n], batch["labels"][i, :t]


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_are_the_lm_logits_predicting_each_target_token(make_causal, batch, arch):
    model = make_causal(arch)
    out = model(**batch)
    assert out.logits.shape == (*batch["labels"].shape, len(model.tokenizer))
    losses = []
    for i in range(batch["input_ids"].shape[0]):
        src, tgt = concat(batch, i)
        full = model.transformer(torch.cat([src, tgt])[None]).logits[0]
        expected = full[len(src) - 1 : len(src) + len(tgt) - 1]
        torch.testing.assert_close(out.logits[i, : len(tgt)], expected, atol=1e-5, rtol=1e-5)
        losses.append(torch.nn.functional.cross_entropy(expected, tgt, reduction="none"))
    torch.testing.assert_close(out.loss, torch.cat(losses).mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["none", "shallow", "deep"])
def test_padding_in_a_batch_changes_nothing(make_causal, batch, arch, kind):
    model = make_causal(arch, kind)
    together = model(**batch).logits
    for i in range(batch["input_ids"].shape[0]):
        src, tgt = concat(batch, i)
        alone = model(src[None], labels=tgt[None]).logits
        torch.testing.assert_close(together[i : i + 1, : len(tgt)], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_shallow_prompt_matches_peft_prompt_tuning(make_causal, batch, arch):
    peft = pytest.importorskip("peft")
    model = make_causal(arch, "shallow", length=5)
    reference = peft.get_peft_model(
        copy.deepcopy(model.transformer),
        peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=5),
    ).eval()
    with torch.no_grad():
        reference.prompt_encoder.default.embedding.weight.copy_(model.prompt.weight)
    ours = model(**batch).logits
    for i in range(batch["input_ids"].shape[0]):
        src, tgt = concat(batch, i)
        theirs = reference(input_ids=torch.cat([src, tgt])[None]).logits[0]  # includes the 5 virtual positions
        expected = theirs[5 + len(src) - 1 : 5 + len(src) + len(tgt) - 1]
        assert (ours[i, : len(tgt)] - expected).abs().max() < 1e-5


def test_shallow_prompt_inits_from_token_embeddings(make_causal):
    model = make_causal("llama", "shallow", length=6)
    table = model.transformer.get_input_embeddings().weight
    assert model.prompt_parameters()[0].shape == (6, 32)
    for row in model.prompt.weight:
        assert (table == row).all(-1).any()


def reference_attention(arch, module, x, pad, key_prefix, value_prefix, cos_sin=None):
    """Causal attention from its equations, with a prefix that every query sees and that carries no position."""
    b, n, _ = x.shape
    if arch == "llama":
        d = module.head_dim
        q = module.q_proj(x).view(b, n, -1, d).transpose(1, 2)
        k = module.k_proj(x).view(b, n, -1, d).transpose(1, 2)
        v = module.v_proj(x).view(b, n, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *cos_sin)
    else:
        d = module.head_dim
        q, k, v = (t.view(b, n, -1, d).transpose(1, 2) for t in module.c_attn(x).split(module.split_size, dim=2))
    groups = q.shape[1] // k.shape[1]
    assert key_prefix.shape[0] == k.shape[1], "the prefix has the key/value heads (GQA)"
    k = torch.cat([key_prefix.unsqueeze(0).expand(b, -1, -1, -1), k], dim=2).repeat_interleave(groups, dim=1)
    v = torch.cat([value_prefix.unsqueeze(0).expand(b, -1, -1, -1), v], dim=2).repeat_interleave(groups, dim=1)
    length = key_prefix.shape[1]
    visible = pad[:, None, None, :].bool() & torch.ones(n, n, dtype=torch.bool).tril()
    visible = torch.cat([torch.ones(b, 1, n, length, dtype=torch.bool), visible], dim=-1)
    scores = (q @ k.transpose(-1, -2)) * d**-0.5
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, -1)
    return module.o_proj(out) if arch == "llama" else module.c_proj(out)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("base", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_deep_prefix_attention_matches_equations(make_causal, arch, base, padded):
    model = make_causal(arch, "deep", length=3)
    module = self_attention_modules(model.transformer)[1]
    module._promptability_prefix.base = base
    x = torch.randn(2, 5, 32)
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]) if padded else torch.ones(2, 5, dtype=torch.long)
    mask = (pad[:, None, None, :].bool() & torch.ones(5, 5, dtype=torch.bool).tril()) if padded else None
    kwargs = {}
    cos_sin = None
    if arch == "llama":
        cos_sin = model.transformer.model.rotary_emb(x, torch.arange(5)[None])
        kwargs["position_embeddings"] = cos_sin
    out = module(x, attention_mask=mask, **kwargs)[0]  # no mask: causality must come from the seam itself
    kp, vp = model.prompt.kv(1)
    expected = reference_attention(arch, module, x, pad, kp, vp, cos_sin)
    real = pad.bool()
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_layer_prefix_changes_output_and_gets_gradient(make_causal, batch, arch):
    model = make_causal(arch, "deep")
    sites = model.prompt.sites
    assert len(sites) == 2
    before = model(**batch).logits.detach()
    for i in range(len(sites)):
        with torch.no_grad():
            model.prompt.values[i].add_(1.0)
        after = model(**batch).logits.detach()
        assert (after - before).abs().max() > 1e-4, f"prefix of layer {i} has no effect"
        with torch.no_grad():
            model.prompt.values[i].sub_(1.0)
    model(**batch).loss.backward()
    for i in range(len(sites)):
        assert model.prompt.keys[i].grad.abs().sum() > 0
        assert model.prompt.values[i].grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["shallow", "deep"])
@pytest.mark.parametrize("preset", ["mtl-p", "prompt-only"])
def test_prompt_presets_change_no_transformer_weight(make_causal, batch, arch, kind, preset):
    model = make_causal(arch, kind).train()
    trainable = model.freeze(preset)
    assert {id(p) for p in trainable} == {id(p) for p in model.prompt_parameters()}
    weights = {n: p.detach().clone() for n, p in model.transformer.named_parameters()}
    prompt = [p.detach().clone() for p in model.prompt_parameters()]
    opt = torch.optim.SGD(trainable, lr=0.5)
    model(**batch).loss.backward()
    opt.step()
    for n, p in model.transformer.named_parameters():
        assert torch.equal(p, weights[n]), n
    assert any(not torch.equal(a, b) for a, b in zip(prompt, model.prompt_parameters()))


def test_mtl_t_trains_only_the_transformer(make_causal):
    model = make_causal("gpt2", "none")
    assert {id(p) for p in model.freeze("mtl-t")} == {id(p) for p in model.transformer.parameters()}
    with pytest.raises(ValueError, match="prompt='none'"):
        model.freeze("mtl-p")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["none", "shallow", "deep"])
def test_save_load_round_trip_is_exact(make_causal, batch, tmp_path, arch, kind):
    model = make_causal(arch, kind)
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.add_(0.01)
    expected = model(**batch).logits
    model.save(tmp_path / "ckpt")
    settings = json.loads((tmp_path / "ckpt" / "promptability.json").read_text())
    assert settings["architecture"] == "causal" and settings["prompt"] == kind
    loaded = load_model(tmp_path / "ckpt").eval()
    assert isinstance(loaded, PromptedCausalLM)
    assert loaded.prompt_kind == kind
    assert torch.equal(loaded(**batch).logits, expected)


@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_prompt_only_save_reloads_over_its_base(make_causal, batch, tmp_path, kind):
    make_causal("llama", kind).save(tmp_path / "base")
    base = load_model(tmp_path / "base")
    with torch.no_grad():
        for p in base.prompt_parameters():
            p.mul_(1.5)
    expected = base.eval()(**batch).logits
    base.save(tmp_path / "fewshot", prompt_only=True)
    assert {p.name for p in (tmp_path / "fewshot").iterdir()} == {"prompt.safetensors", "promptability.json"}
    loaded = load_model(tmp_path / "fewshot").eval()
    assert isinstance(loaded, PromptedCausalLM)
    assert torch.equal(loaded(**batch).logits, expected)


def test_plain_hugging_face_causal_directory_loads_as_causal(tiny_tokenizer, batch, tmp_path):
    lm = tiny_causal("gpt2", len(tiny_tokenizer))
    lm.save_pretrained(tmp_path / "hf")
    tiny_tokenizer.save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf", prompt="deep", prompt_length=2).eval()
    assert isinstance(model, PromptedCausalLM) and model.prompt_kind == "deep"
    assert model(**batch).logits.shape[:2] == batch["labels"].shape


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_init_prompt_reproduces_the_constructors_prompt(make_causal, batch, arch, kind):
    model = make_causal(arch, kind, seed=3)
    fresh = [p.detach().clone() for p in model.prompt_parameters()]
    expected = model(**batch).logits
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.add_(1.0)
    model.init_prompt(3)
    assert all(torch.equal(a, b) for a, b in zip(fresh, model.prompt_parameters()))
    assert model.transformer.config._attn_implementation == ("promptability_prefix" if kind == "deep" else "sdpa")
    assert torch.equal(model(**batch).logits, expected)
