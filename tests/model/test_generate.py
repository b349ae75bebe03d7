"""model.generate: Transformers' generate (KV cache on) with each prompt kind, T5 and decoder-only, against a naive
greedy decode that runs the model's full prompted forward (no cache) over the whole sequence at every step."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from promptability.model.causal import PromptedCausalLM
from promptability.model.generation import generate_texts, source_ids

KINDS = ["none", "shallow", "deep"]
ARCHS = ["t5", "llama"]
STEPS = 8
SOURCES = ["the cat sat on the mat", "is this review positive ? yes no maybe"]  # different lengths


@pytest.fixture
def make(make_model, tiny_tokenizer):
    """``make(arch, kind)``: a model in eval mode whose random weights give varied greedy tokens (checked below)."""

    def build(arch: str, kind: str, length: int = 4):
        if arch == "t5":
            # T5's default init is so small that a random tiny T5 predicts <pad> forever; five times larger it does
            # not, but its activations reach the hundreds, where float32 rounding alone puts a cached and an uncached
            # pass 2e-3 apart. In float64 they agree to 3e-6 (T5's layer norm still averages in float32).
            return make_model(kind, length=length, seed=1, initializer_factor=5.0).double()
        torch.manual_seed(0)
        ids = dict(vocab_size=len(tiny_tokenizer), pad_token_id=0, eos_token_id=1, bos_token_id=1)
        if arch == "gpt2":
            lm = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids))
        else:
            config = LlamaConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
            )
            lm = LlamaForCausalLM(LlamaConfig(**{**config.to_dict(), **ids}))
        return PromptedCausalLM(lm, tiny_tokenizer, kind, length, seed=0, base_model="tiny-causal").eval()

    return build


def encode(tokenizer, texts, side="right"):
    tokenizer.padding_side = side
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"
    return batch.input_ids, batch.attention_mask


@torch.no_grad()
def naive_greedy(model, source: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy tokens and their logits, (steps,) and (steps, vocab), for one unpadded source.

    Each step runs ``model.forward`` (the training and scoring path) over the source and every token so far, plus
    one placeholder target whose logits, which cannot see the placeholder itself, predict the next token.
    """
    tokens = source.new_zeros(0)
    logits = []
    for _ in range(steps):
        labels = torch.cat([tokens, tokens.new_zeros(1)])[None]
        step = model(source[None], labels=labels, return_loss=False).logits[0, -1]
        logits.append(step)
        tokens = torch.cat([tokens, step.argmax()[None]])
    return tokens, torch.stack(logits)


def greedy(model, ids, mask, **kwargs):
    out = model.generate(
        ids, mask, max_new_tokens=STEPS, eos_token_id=None, output_logits=True, return_dict_in_generate=True, **kwargs
    )
    return out.sequences, torch.stack(out.logits, dim=1)


@pytest.mark.parametrize("arch", [*ARCHS, "gpt2"])
@pytest.mark.parametrize("kind", KINDS)
def test_cached_generate_equals_naive_greedy_over_the_full_prompted_forward(make, tiny_tokenizer, arch, kind):
    model = make(arch, kind)
    ids, mask = encode(tiny_tokenizer, SOURCES)
    tokens, logits = greedy(model, ids, mask)
    assert tokens.shape == (len(SOURCES), STEPS)
    for i in range(len(SOURCES)):
        expected_tokens, expected_logits = naive_greedy(model, ids[i][mask[i].bool()], STEPS)
        assert tokens[i].tolist() == expected_tokens.tolist()
        # generate hands its logits over in float32 whatever the model's dtype
        torch.testing.assert_close(logits[i], expected_logits.float(), atol=1e-5, rtol=1e-5)
    if arch != "gpt2":  # this random GPT-2 repeats one token; the others must exercise more than one
        assert len(set(tokens.flatten().tolist())) > 2


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch_generates_what_each_source_does_alone(make, tiny_tokenizer, arch, kind, side):
    model = make(arch, kind)
    ids, mask = encode(tiny_tokenizer, SOURCES, side)
    assert not bool(mask.all())  # the sources differ in length, so one row is padded
    together, together_logits = greedy(model, ids, mask)
    for i, text in enumerate(SOURCES):
        alone, alone_logits = greedy(model, *encode(tiny_tokenizer, [text]))
        assert together[i].tolist() == alone[0].tolist()
        torch.testing.assert_close(together_logits[i], alone_logits[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["none", "deep"])
def test_each_step_after_the_first_feeds_one_token_to_the_cached_decoder(make, tiny_tokenizer, arch, kind):
    model = make(arch, kind)
    layout = model.attention_layout()
    first_self = next(m for m, s in zip(layout.modules, layout.sites, strict=True) if s.kind == "decoder_self")
    lengths: list[int] = []
    handle = first_self.register_forward_hook(
        lambda module, args, kwargs, out: lengths.append((args or [kwargs["hidden_states"]])[0].shape[1]),
        with_kwargs=True,
    )
    try:
        ids, mask = encode(tiny_tokenizer, SOURCES[:1])
        greedy(model, ids, mask)
    finally:
        handle.remove()
    first = 1 if arch == "t5" else ids.shape[1] + model.prepended  # T5's decoder starts from its start token
    assert lengths == [first] + [1] * (STEPS - 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_stops_at_eos_and_pads_the_rest(make, tiny_tokenizer, arch):
    model = make(arch, "shallow")
    ids, mask = encode(tiny_tokenizer, SOURCES)
    free = model.generate(ids, mask, max_new_tokens=STEPS, eos_token_id=None)
    # Pretend a token row 0 emits ends a text, one it emits before row 1 does: row 0 stops there and is padded
    # until row 1 stops (at its first one, or after STEPS tokens).
    rows = [free[i].tolist() for i in range(len(SOURCES))]
    stop = next(t for t in rows[0] if (rows[1] + [t]).index(t) > rows[0].index(t))
    stopped = model.generate(ids, mask, max_new_tokens=STEPS, eos_token_id=stop)
    for i in range(len(SOURCES)):
        row = rows[i]
        end = row.index(stop) + 1 if stop in row else STEPS
        expected = row[:end] + [model.pad_token_id] * (stopped.shape[1] - end)
        assert stopped[i].tolist() == expected


def test_the_prompt_changes_what_is_generated(make, tiny_tokenizer):
    ids, mask = encode(tiny_tokenizer, SOURCES)
    plain = make("llama", "none").generate(ids, mask, max_new_tokens=STEPS, eos_token_id=None)
    for kind in ("shallow", "deep"):
        prompted = make("llama", kind).generate(ids, mask, max_new_tokens=STEPS, eos_token_id=None)
        assert prompted.tolist() != plain.tolist()


def test_bad_arguments_are_named(make, tiny_tokenizer):
    model = make("llama", "none")
    ids, mask = encode(tiny_tokenizer, SOURCES)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, mask, max_new_tokens=0)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(ids, torch.zeros_like(mask))


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_texts_decodes_the_naive_greedy_tokens_up_to_eos(make, arch):
    model = make(arch, "deep")
    texts = [SOURCES[1], SOURCES[0], "a dog"]
    eos = model.tokenizer.eos_token_id
    expected = []
    for ids in source_ids(model, texts, max_source_len=64):
        # The layout evaluation scores: a T5 source ends with EOS, a decoder-only one does not.
        assert (ids[-1] == eos) != model.is_causal
        tokens = naive_greedy(model, torch.tensor(ids), STEPS)[0].tolist()
        end = tokens.index(eos) if eos in tokens else STEPS
        expected.append(model.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip())
    assert generate_texts(model, texts, max_new_tokens=STEPS, batch_size=2, max_source_len=64) == expected
    assert all(expected)


@pytest.mark.parametrize("name", ["bos", "legacy-sentencepiece", "trailing-space"])
def test_decoder_only_sources_are_the_ids_training_and_scoring_see(name):
    """Generation must meet a tuned prompt with the inputs it was tuned on: ``tokenize_records``' sources,
    the tokenizer's BOS first where it adds one, whatever the source's length."""
    from tests.eval.test_rank_causal_tokenizers import RECORDS, TOKENIZERS, causal_model

    from promptability.data.tokenize import tokenize_records

    # Training moves a source's trailing whitespace into its answer; a text to continue is given without it.
    records = [{**r, "source": r["source"].rstrip()} for r in RECORDS]
    texts = [r["source"] for r in records]
    model = causal_model(TOKENIZERS[name]())
    for max_len in (64, 6):
        rows = tokenize_records(records, model.tokenizer, max_source_len=max_len, use_cache=False, progress=False,
                                continuation=True).dataset  # fmt: skip
        assert source_ids(model, texts, max_len) == [list(r) for r in rows["input_ids"]]
    assert all(ids[0] == 2 for ids in source_ids(model, texts, 6)) is (name == "bos")
