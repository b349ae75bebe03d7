"""How a fresh prompt starts: distinct sampled-vocab tokens (shallow), N(0, 1) or token k/v (deep), and where it
is recorded."""

from __future__ import annotations

import json

import pytest
import torch

from promptability import load_model
from promptability.model.prompted import attention_sites
from promptability.model.prompts import init_token_ids


def test_init_token_ids_are_distinct_among_the_first_5000():
    for seed in range(20):
        ids = init_token_ids(32128, 20, torch.Generator().manual_seed(seed))
        assert len(set(ids.tolist())) == 20 and int(ids.min()) >= 0 and int(ids.max()) < 5000
    # Drawn with replacement, 20 of 5000 repeat an id in about 4% of seeds; without it, never (above). A pool
    # smaller than the prompt (a tiny vocabulary) is used up before any id repeats.
    ids = init_token_ids(7, 10, torch.Generator().manual_seed(0)).tolist()
    assert sorted(ids[:7]) == list(range(7)) and len(set(ids[7:])) == 3


def test_shallow_prompt_starts_as_distinct_tokens_embeddings(make_model):
    model = make_model("shallow", length=20, seed=3)
    table = model.transformer.get_input_embeddings().weight
    ids = init_token_ids(table.shape[0], 20, torch.Generator().manual_seed(3))
    assert len(set(ids.tolist())) == 20
    assert torch.equal(model.prompt.weight.detach(), table[ids].detach())


def test_deep_prompt_starts_normal_in_the_reference_layout(make_model):
    """Each site kind's prefixes are one N(0, 1) (length, layers * 2 * heads * d_kv) table, as the reference's
    ``prefix_embed`` tables, drawn from the model's seed: encoder, decoder self, decoder cross, in that order."""
    model = make_model("deep", length=3, seed=7)
    assert model.deep_init == "normal" and model.settings()["deep_init"] == "normal"
    sites, _ = attention_sites(model.transformer)
    gen = torch.Generator().manual_seed(7)
    tables = {kind: torch.randn(3, 2 * 2 * 4 * 8, generator=gen).view(3, 2, 2, 4, 8) for kind in
              ("encoder", "decoder_self", "decoder_cross")}  # fmt: skip
    for i, site in enumerate(sites):
        key, value = model.prompt.kv(i)
        assert torch.equal(key.detach(), tables[site.kind][:, site.layer, 0].transpose(0, 1)), site
        assert torch.equal(value.detach(), tables[site.kind][:, site.layer, 1].transpose(0, 1)), site
    big = make_model("deep", length=64, seed=1)
    every = torch.cat([t.detach().flatten() for t in big.prompt_parameters()])
    assert abs(float(every.mean())) < 0.02 and abs(float(every.std()) - 1) < 0.02  # 12288 draws


def test_deep_prompt_tokens_init_projects_distinct_tokens(make_model):
    model = make_model("deep", length=3, seed=7)
    model.deep_init = "tokens"
    model.init_prompt(7)
    table = model.transformer.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(7)
    for i, module in enumerate(attention_sites(model.transformer)[1]):
        hidden = table[init_token_ids(table.shape[0], 3, gen)]
        want = module.k(hidden).view(3, 4, 8).transpose(0, 1)
        torch.testing.assert_close(model.prompt.keys[i].detach(), want.detach(), atol=0, rtol=0)
    normal = make_model("deep", length=3, seed=7)
    assert not torch.equal(normal.prompt.keys[0], model.prompt.keys[0])
    model.deep_init = "zeros"
    with pytest.raises(ValueError, match="deep_init must be one of"):
        model.init_prompt(0)


def test_deep_init_reaches_a_fresh_prompt_and_is_recorded(make_model, batch, tmp_path):
    make_model("none").save(tmp_path / "mtl-t")
    fresh = {init: load_model(tmp_path / "mtl-t", prompt="deep", prompt_length=3, seed=2, deep_init=init)
             for init in ("normal", "tokens")}  # fmt: skip
    for init, model in fresh.items():
        again = load_model(tmp_path / "mtl-t", prompt="deep", prompt_length=3, seed=5, deep_init=init)
        again.init_prompt(2)  # few-shot tuning's fresh prompt of seed 2: the constructor's
        assert all(torch.equal(a, b) for a, b in zip(again.prompt_parameters(), model.prompt_parameters()))
        model.save(tmp_path / init)
        assert json.loads((tmp_path / init / "promptability.json").read_text())["deep_init"] == init
        # A saved prompt keeps the init it records, whatever a fresh one would get.
        assert load_model(tmp_path / init, deep_init="normal").deep_init == init
    assert not torch.equal(fresh["normal"].prompt.keys[0], fresh["tokens"].prompt.keys[0])
    assert "deep_init" not in make_model("shallow").settings()
    with pytest.raises(ValueError, match="deep_init must be one of"):
        load_model(tmp_path / "mtl-t", prompt="deep", deep_init="uniform")
