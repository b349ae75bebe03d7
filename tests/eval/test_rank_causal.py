"""Rank classification with decoder-only models: cached-source scoring equals naive per-choice scoring."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from promptability.eval.rank import evaluate, score_choices
from promptability.model.causal import PromptedCausalLM

RECORDS = [
    {
        "task": "t_nli",
        "source": "premise : anna is tall . hypothesis : anna is short",
        "target": "false",
        "choices": ["true", "false", "neither"],
        "label": 1,
    },
    {
        "task": "t_nli",
        "source": "the cat sat on the mat",
        "target": "true",
        "choices": ["true", "false", "neither"],
        "label": 0,
    },
    {
        "task": "t_yn",
        "source": "is this review positive ? the sun was warm and the dog ran in the park",
        "target": "yes",
        "choices": ["yes", "no"],
        "label": 0,
    },
    {"task": "t_yn", "source": "a dog", "target": "no", "choices": ["yes", "no"], "label": 1},
    {
        "task": "t_4",
        "source": "where is the book ?",
        "target": "on the table",
        "choices": ["on the table", "in the park", "the red ball is on the mat", "sun"],
        "label": 0,
    },
]


def tiny_causal(arch, vocab_size, seed=0):
    torch.manual_seed(seed)
    ids = dict(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if arch == "llama":
        return LlamaForCausalLM(
            LlamaConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                **ids,
            )
        )
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids))


@pytest.fixture
def make_causal(tiny_tokenizer):
    def make(arch="llama", prompt="none", length=4, seed=0):
        lm = tiny_causal(arch, len(tiny_tokenizer), seed)
        return PromptedCausalLM(lm, tiny_tokenizer, prompt, length, seed=seed, base_model="tiny-causal").eval()

    return make


def naive_scores(model, record, score):
    """One full forward over source + " " + choice per choice, with no EOS anywhere (the continuation layout)."""
    tok = model.tokenizer
    src = torch.tensor([tok(record["source"], add_special_tokens=False).input_ids])
    out = []
    for choice in record["choices"]:
        labels = torch.tensor([tok(" " + choice, add_special_tokens=False).input_ids])
        assert tok.eos_token_id not in src[0].tolist() + labels[0].tolist()
        with torch.no_grad():
            logits = model(src, torch.ones_like(src), labels=labels).logits
        logp = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        out.append((logp.mean() if score == "mean" else logp.sum()).item())
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("kind", ["none", "shallow", "deep"])
@pytest.mark.parametrize("score", ["mean", "sum"])
def test_cached_source_scores_equal_naive_per_choice(make_causal, arch, kind, score):
    model = make_causal(arch, kind)
    rows = evaluate(model, RECORDS, batch_size=3, score=score, progress=False)
    by_key = {(r["task"], r["index"]): r for r in rows}
    seen = {}
    for record in RECORDS:
        i = seen.setdefault(record["task"], 0)
        seen[record["task"]] += 1
        row = by_key[(record["task"], i)]
        expected = naive_scores(model, record, score)
        assert row["scores"] == pytest.approx(expected, rel=2e-5, abs=2e-5)
        assert row["prediction"] == max(range(len(expected)), key=expected.__getitem__)
        assert row["label"] == record["label"]


def test_sources_run_once_per_batch_and_choices_share_their_cache(make_causal, tiny_tokenizer):
    from promptability.data.batching import collate_eval
    from promptability.data.tokenize import tokenize_records

    model = make_causal("llama", "deep")
    calls = []

    def hook(module, args, kwargs):
        calls.append(
            (
                "choices" if kwargs.get("cache") is not None else "source",
                kwargs.get("input_ids", kwargs.get("inputs_embeds")).shape[0],
            )
        )

    head_rows = []
    ds = tokenize_records(RECORDS, tiny_tokenizer, use_cache=False, progress=False, continuation=True).dataset
    batch = collate_eval([ds[i] for i in range(len(ds))], pad_id=0)
    handles = [
        model.transformer.base_model.register_forward_pre_hook(hook, with_kwargs=True),
        model.transformer.get_output_embeddings().register_forward_hook(
            lambda m, args, out: head_rows.append(out.reshape(-1, out.shape[-1]).shape[0])
        ),
    ]
    with torch.no_grad():
        score_choices(model, batch)
    for handle in handles:
        handle.remove()
    # one call for the 5 sources; one for the 14 real choices (padded slots never run), since some have 2+ tokens
    assert calls == [("source", len(RECORDS)), ("choices", sum(len(r["choices"]) for r in RECORDS))]
    # the LM head runs once, on exactly the real choice tokens (none of the source, none of the padding)
    assert head_rows == [int(batch["choice_mask"].sum())]


def test_padded_choice_slots_score_minus_inf(make_causal, tiny_tokenizer):
    from promptability.data.batching import collate_eval
    from promptability.data.tokenize import tokenize_records

    model = make_causal("gpt2", "shallow")
    ds = tokenize_records(RECORDS[2:], tiny_tokenizer, use_cache=False, continuation=True).dataset
    batch = collate_eval([ds[i] for i in range(len(ds))], pad_id=0)
    with torch.no_grad():
        scores = score_choices(model, batch)
    assert scores.shape == (3, 4)
    assert torch.isinf(scores[0, 2:]).all() and torch.isfinite(scores[2]).all()


@pytest.mark.parametrize("kind", ["none", "deep"])
def test_left_padding_leaves_no_nan_and_matches_one_source_batches(make_causal, kind):
    """Sources of very different lengths in one batch: a padded row's scores equal its scores alone."""
    model = make_causal("llama", kind)
    together = evaluate(model, RECORDS, batch_size=len(RECORDS), progress=False)
    alone = evaluate(model, RECORDS, batch_size=1, progress=False)
    for a, b in zip(together, alone):
        assert all(torch.isfinite(torch.tensor(a["scores"])))
        assert a["scores"] == pytest.approx(b["scores"], rel=1e-5, abs=1e-5)
