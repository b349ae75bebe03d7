"""The training steps' no-logits loss path (``forward(row_nll=True)``) equals the loss of the full logits."""

from __future__ import annotations

import pytest
import torch

from promptability.train.losses import row_nll, token_nll_per_row


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("kind", "tied"), [("shallow", True), ("shallow", False), ("deep", True), ("none", False)])
def test_row_nll_equals_the_logits_loss_and_its_gradients(make_model, batch, kind, tied):
    model = make_model(kind, tie_word_embeddings=tied)
    model.freeze("all")
    # the second row's target is padded: its padded positions must add nothing on either path
    assert int(batch["decoder_attention_mask"].sum()) < batch["decoder_attention_mask"].numel()

    logits = model(**batch, return_loss=False).logits
    reference = token_nll_per_row(logits, batch["labels"], batch["decoder_attention_mask"])
    reference.sum().backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    fast = row_nll(model, batch)
    fast.sum().backward()
    got = _grads(model)

    assert fast.shape == (2,) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, reference, rtol=1e-6, atol=0)
    assert got.keys() == expected.keys() and len(got) > 10
    for name in expected:  # float summation order differs: compare against each tensor's largest entry
        scale = float(expected[name].abs().max())
        assert float((got[name] - expected[name]).abs().max()) <= 1e-5 * scale, name


def test_row_nll_matches_hugging_face_mean_loss(make_model, batch):
    model = make_model("shallow", tie_word_embeddings=False)
    with torch.no_grad():
        hf = model(**batch).loss  # transformers' own mean over the non-padded target tokens
        fast = row_nll(model, batch)
    assert float(fast.sum() / batch["decoder_attention_mask"].sum()) == pytest.approx(float(hf), rel=1e-6)


def test_row_nll_with_swapped_parameters_and_a_model_without_the_fast_path(make_model, batch):
    model = make_model("shallow")
    other = torch.randn_like(model.prompt.weight)
    swapped = row_nll(model, batch, {"prompt.weight": other})
    with torch.no_grad():
        model.prompt.weight.copy_(other)
    torch.testing.assert_close(swapped, row_nll(model, batch), rtol=1e-6, atol=0)

    class LogitsOnly(torch.nn.Module):  # a model without computes_row_nll: reduced from its logits
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            assert "row_nll" not in kwargs
            return self.inner(**kwargs)

    torch.testing.assert_close(row_nll(LogitsOnly(model), batch), row_nll(model, batch), rtol=1e-6, atol=0)


def _leaves(root) -> set[int]:
    """ids of the tensors the autograd graph under ``root`` accumulates a gradient into."""
    seen, todo, out = set(), [root], set()
    while todo:
        fn = todo.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if type(fn).__name__ == "AccumulateGrad":
            out.add(id(fn.variable))
        todo.extend(f for f, _ in fn.next_functions)
    return out


@pytest.mark.parametrize("kind", ["shallow", "deep"])
def test_few_shot_tuning_never_computes_or_stores_transformer_gradients(make_model, batch, accelerator, kind):
    from promptability.train.steps.fixed_batch import FixedBatchStep

    model = make_model(kind).train()
    trained = model.freeze("prompt-only")
    assert {id(p) for p in trained} == {id(p) for p in model.prompt_parameters()}
    # the graph ends at the prompt alone: no weight-gradient node exists for any transformer tensor
    loss = row_nll(model, batch).sum()
    assert _leaves(loss.grad_fn) == {id(p) for p in model.prompt_parameters()}
    del loss

    FixedBatchStep(batch)(model, accelerator)
    assert all(p.grad is None for p in model.transformer.parameters())
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.prompt_parameters())
    model.zero_grad(set_to_none=True)

    model.freeze("all")  # the same graph with the transformer trainable reaches every weight
    loss = row_nll(model, batch).sum()
    assert {id(p) for p in model.transformer.parameters()} <= _leaves(loss.grad_fn)


def test_fused_gelu_is_transformers_gelu_new(make_model, batch):
    import copy

    from transformers.activations import NewGELUActivation

    model = make_model("shallow").train()
    acts = [m for m in model.transformer.modules() if hasattr(m, "act")]
    assert acts and all(type(m.act) is torch.nn.GELU and m.act.approximate == "tanh" for m in acts)
    stock = copy.deepcopy(model)
    for m in stock.transformer.modules():
        if hasattr(m, "act"):
            m.act = NewGELUActivation()
    x = torch.randn(4, 64) * 4
    torch.testing.assert_close(acts[0].act(x), NewGELUActivation()(x), rtol=1e-6, atol=1e-6)
    losses = []
    for m in (model, stock):
        loss = row_nll(m, batch).sum()
        loss.backward()
        losses.append((float(loss.detach()), m.transformer.shared.weight.grad.clone()))
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-6)
    scale = float(losses[1][1].abs().max())  # float rounding only: within 1e-5 of the largest entry
    assert float((losses[0][1] - losses[1][1]).abs().max()) <= 1e-5 * scale
