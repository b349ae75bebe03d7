"""The deep-prompt seam against the attention equations, and each site's effect and gradient."""

import pytest
import torch

from promptability.model.prompted import attention_sites


def reference_attention(module, x, pad_mask, key_prefix, value_prefix, causal=False):
    """T5 attention written from its equations, with a prefix: no scaling, relative bias only on real keys."""
    b, n, _ = x.shape
    h, dkv = module.n_heads, module.key_value_proj_dim
    q = module.q(x).view(b, n, h, dkv).transpose(1, 2)
    k = module.k(x).view(b, n, h, dkv).transpose(1, 2)
    v = module.v(x).view(b, n, h, dkv).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) + module.compute_bias(n, n)
    visible = pad_mask[:, None, None, :].bool()
    if causal:
        visible = visible & torch.ones(n, n, dtype=torch.bool).tril()
    scores = scores.masked_fill(~visible, float("-inf"))
    prefix_scores = q @ key_prefix.unsqueeze(0).transpose(-1, -2)
    weights = torch.softmax(torch.cat([prefix_scores, scores], dim=-1), dim=-1)
    values = torch.cat([value_prefix.unsqueeze(0).expand(b, -1, -1, -1), v], dim=2)
    out = (weights @ values).transpose(1, 2).reshape(b, n, h * dkv)
    return module.o(out)


@pytest.mark.parametrize("base", ["eager", "sdpa"])
def test_encoder_self_attention_with_prefix_matches_equations(make_model, base):
    model = make_model("deep", length=3)
    sites, modules = attention_sites(model.transformer)
    module = modules[0]
    module._promptability_prefix.base = base
    x = torch.randn(2, 5, model.transformer.config.d_model)
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    additive = (1.0 - pad[:, None, None, :].float()) * torch.finfo(torch.float32).min
    out, _, _ = module(x, mask=additive)
    kp, vp = model.prompt.kv(0)
    expected = reference_attention(module, x, pad, kp, vp)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base", ["eager", "sdpa"])
def test_decoder_causal_self_attention_with_prefix_matches_equations(make_model, base):
    model = make_model("deep", length=3)
    sites, modules = attention_sites(model.transformer)
    index = [s.kind for s in sites].index("decoder_self")
    module = modules[index]
    module._promptability_prefix.base = base
    x = torch.randn(2, 4, model.transformer.config.d_model)
    out, _, _ = module(x, mask=None)  # no mask: causality must come from the seam itself
    kp, vp = model.prompt.kv(index)
    expected = reference_attention(module, x, torch.ones(2, 4), kp, vp, causal=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_eager_and_sdpa_agree_on_whole_model(make_model, batch):
    model = make_model("deep")
    sdpa = model(**batch).logits
    for module in attention_sites(model.transformer)[1]:
        module._promptability_prefix.base = "eager"
    eager = model(**batch).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)


def test_every_site_changes_output_and_gets_gradient(make_model, batch):
    model = make_model("deep")
    sites, _ = attention_sites(model.transformer)
    assert {s.kind for s in sites} == {"encoder", "decoder_self", "decoder_cross"}
    assert len(sites) == 2 + 2 * 2  # 2 encoder layers, 2 decoder layers with self and cross
    before = model(**batch).logits.detach()
    for i, site in enumerate(sites):
        with torch.no_grad():
            model.prompt.values[i].add_(1.0)
        after = model(**batch).logits.detach()
        assert (after - before).abs().max() > 1e-4, f"prefix of {site} has no effect"
        with torch.no_grad():
            model.prompt.values[i].sub_(1.0)
    model.zero_grad()
    model(**batch).loss.backward()
    for i, site in enumerate(sites):
        assert model.prompt.keys[i].grad.abs().sum() > 0, f"no key gradient at {site}"
        assert model.prompt.values[i].grad.abs().sum() > 0, f"no value gradient at {site}"


@pytest.mark.parametrize("kind", ["none", "shallow", "deep"])
def test_padding_in_a_batch_changes_nothing(make_model, batch, kind):
    """Each row of a padded batch gives the logits it gives alone: padding is masked at every site."""
    model = make_model(kind)
    together = model(**batch).logits
    for i in range(batch["input_ids"].shape[0]):
        n_src = int(batch["attention_mask"][i].sum())
        n_tgt = int(batch["decoder_attention_mask"][i].sum())
        alone = model(
            batch["input_ids"][i : i + 1, :n_src],
            batch["attention_mask"][i : i + 1, :n_src],
            labels=batch["labels"][i : i + 1, :n_tgt],
        ).logits
        torch.testing.assert_close(together[i : i + 1, :n_tgt], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_per_example_prompts_equal_separate_runs(make_model, batch, kind):
    """Swapping in (batch, ...) prompt tensors gives row i the output of a model holding prompt i."""
    model = make_model(kind)
    names = [n for n, _ in model.named_parameters() if n.startswith("prompt.")]
    params = dict(model.named_parameters())
    other = {n: params[n].detach() + 0.05 * torch.randn_like(params[n]) for n in names}
    stacked = {n: torch.stack([params[n].detach(), other[n]]) for n in names}
    together = torch.func.functional_call(model, stacked, args=(), kwargs=batch).logits
    first = model(**batch).logits
    second = torch.func.functional_call(model, other, args=(), kwargs=batch).logits
    torch.testing.assert_close(together[0], first[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together[1], second[1], atol=1e-5, rtol=1e-5)
    assert (first[1] - second[1]).abs().max() > 1e-4
