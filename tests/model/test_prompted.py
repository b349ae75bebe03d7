"""The prompted model: PEFT parity for shallow prompts, freeze presets, save/load round trips."""

import copy
import json

import pytest
import torch

from promptability import PromptSettingsError, load_model


def test_shallow_prompt_matches_peft_prompt_tuning(make_model, batch):
    peft = pytest.importorskip("peft")
    model = make_model("shallow", length=5)
    reference = peft.get_peft_model(
        copy.deepcopy(model.transformer),
        peft.PromptTuningConfig(
            task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=5, num_transformer_submodules=1
        ),
    ).eval()
    with torch.no_grad():
        reference.prompt_encoder.default.embedding.weight.copy_(model.prompt.weight)
    ours = model(**batch)
    labels = batch["labels"].masked_fill(batch["decoder_attention_mask"] == 0, -100)
    theirs = reference(**{**batch, "labels": labels})
    assert (ours.logits - theirs.logits).abs().max() < 1e-5
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5


def test_shallow_prompt_from_token_embeddings_equals_those_tokens_as_text(make_model, tiny_tokenizer, batch):
    model = make_model("shallow", length=3)
    prefix = tiny_tokenizer("the red ball", add_special_tokens=False).input_ids[:3]
    assert len(prefix) == 3
    with torch.no_grad():
        model.prompt.weight.copy_(model.transformer.get_input_embeddings().weight[prefix])
    plain = make_model("none")
    plain.transformer.load_state_dict(model.transformer.state_dict())
    src = torch.tensor([prefix + tiny_tokenizer("the cat sat").input_ids])
    labels = torch.tensor([tiny_tokenizer("yes").input_ids])
    with_text = plain(src, torch.ones_like(src), labels=labels).logits
    with_prompt = model(src[:, 3:], torch.ones_like(src[:, 3:]), labels=labels).logits
    torch.testing.assert_close(with_prompt, with_text, atol=1e-5, rtol=1e-5)


def test_shallow_prompt_shape_and_init_from_first_5000_tokens(make_model):
    model = make_model("shallow", length=6)
    (prompt,) = model.prompt_parameters()
    assert prompt.shape == (6, 32)
    table = model.transformer.get_input_embeddings().weight
    for row in prompt:
        assert (table == row).all(dim=1).any(), "each prompt vector starts as some token's embedding"


@pytest.mark.parametrize(
    ("preset", "trained"), [("mtl-p", "prompt"), ("prompt-only", "prompt"), ("mtl-t", "transformer")]
)
@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_freeze_presets_train_only_their_group(make_model, batch, preset, trained, kind):
    model = make_model(kind).train()
    params = model.freeze(preset)
    groups = model.parameter_groups()
    assert {id(p) for p in params} == {id(p) for p in groups[trained]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(params, lr=0.1)
    model(**batch).loss.backward()
    frozen = "transformer" if trained == "prompt" else "prompt"
    assert all(p.grad is None for p in groups[frozen]), "frozen parameters must get no gradient"
    optimizer.step()
    assert not optimizer.state or all(id(p) in {id(q) for q in params} for p in optimizer.state)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(trained) for n in changed), changed


def test_mtl_tp_trains_both_and_mtl_t_needs_no_prompt(make_model):
    model = make_model("deep")
    assert len(model.freeze("mtl-tp")) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="prompt='none'"):
        make_model("none").freeze("mtl-p")
    with pytest.raises(ValueError, match="unknown freeze preset"):
        model.freeze("mtl-x")


@pytest.mark.parametrize("kind", ["none", "shallow", "deep"])
def test_save_load_round_trip_is_exact(make_model, batch, tmp_path, kind):
    model = make_model(kind)
    with torch.no_grad():  # move the prompt away from its init so the test sees the saved values
        for p in model.prompt_parameters():
            p.add_(0.01)
    expected = model(**batch).logits
    model.save(tmp_path / "ckpt")
    assert not list(tmp_path.glob(".ckpt.tmp-*")), "no temp directory left behind"
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"config.json", "model.safetensors", "promptability.json"}
    assert not list((tmp_path / "ckpt").glob("*.bin")), "weights are safetensors, never pickle"
    loaded = load_model(tmp_path / "ckpt").eval()
    assert loaded.prompt_kind == kind
    assert torch.equal(loaded(**batch).logits, expected)


@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_prompt_only_save_is_small_and_reloads_over_its_base(make_model, batch, tmp_path, kind):
    model = make_model(kind)
    model.save(tmp_path / "base")
    base = load_model(tmp_path / "base")
    with torch.no_grad():
        for p in base.prompt_parameters():
            p.mul_(1.5)
    expected = base.eval()(**batch).logits
    base.save(tmp_path / "fewshot", prompt_only=True)
    files = {p.name for p in (tmp_path / "fewshot").iterdir()}
    assert files == {"prompt.safetensors", "promptability.json"}
    assert json.loads((tmp_path / "fewshot" / "promptability.json").read_text())["base_model"] == str(tmp_path / "base")
    loaded = load_model(tmp_path / "fewshot").eval()
    assert torch.equal(loaded(**batch).logits, expected)


def test_mismatched_prompt_settings_name_both(make_model, tmp_path):
    make_model("shallow", length=4).save(tmp_path / "ckpt")
    with pytest.raises(PromptSettingsError, match=r"shallow prompt of length 4.*deep prompt of length 4"):
        load_model(tmp_path / "ckpt", prompt="deep")
    with pytest.raises(PromptSettingsError, match=r"length 4.*length 8"):
        load_model(tmp_path / "ckpt", prompt_length=8)


def test_a_checkpoint_without_prompt_takes_a_fresh_one(make_model, tmp_path):
    make_model("none").save(tmp_path / "mtl-t")
    model = load_model(tmp_path / "mtl-t", prompt="shallow", prompt_length=4)
    assert model.prompt_kind == "shallow" and model.prompt_parameters()[0].shape == (4, 32)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
