"""The offline default: a tiny T5 (a few million parameters) and a tokenizer built offline.

The tokenizer is a word-level model with SentencePiece-style word boundaries,
built with Hugging Face ``tokenizers`` from the texts it will see (by default the offline suite), with
T5's special-token layout: <pad>=0 (also the decoder start), </s>=1, <unk>=2,
and </s> appended to every encoded text as T5 does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]

# T5 v1.1 layout (gated GELU) with the embedding shared by the LM head and T5's output scaling by
# d_model**-0.5 (transformers 5 ties T5's head in any case), about 1.3M parameters: the whole offline study (ten
# continued-pretraining runs, 36 few-shot runs) has to fit in minutes on two CPU cores.
TINY_CONFIG = dict(
    d_model=128,
    d_kv=32,
    num_heads=4,
    d_ff=512,
    num_layers=2,
    num_decoder_layers=2,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.0,
)


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``corpus``: the ``vocab_size`` - 3 most frequent words.

    Deterministic by construction (ties broken alphabetically): the trainers in ``tokenizers``
    break ties in hash order, so two processes would build different vocabularies, and a
    resumed or distributed run would not match its checkpoint. The suite's language is small
    (about 2,000 words), so whole words are the natural pieces; anything else maps to <unk>.
    """
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Strip()])
    # Punctuation is split off words, so the vocabulary is spent on words rather than "word," variants.
    pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace()]
    )
    counts: Counter[str] = Counter()
    for text in corpus:
        counts.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    words = sorted(counts, key=lambda w: (-counts[w], w))[: max(vocab_size - len(SPECIAL_TOKENS), 0)]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=1024
    )


def tiny_t5(vocab_size: int, seed: int = 0, **overrides) -> T5ForConditionalGeneration:
    """A randomly initialised tiny T5 whose vocabulary matches the tokenizer's."""
    import torch

    # transformers 5 declares T5Config as a dataclass without decoder_start_token_id; it is accepted as a kwarg
    config = T5Config(  # type: ignore[call-arg]
        vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **{**TINY_CONFIG, **overrides}
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def default_corpus(seed: int = 0) -> Iterable[str]:
    """The texts of the offline suite, which the tiny tokenizer is trained on."""
    from promptability.suite.generate import generate_suite, tokenizer_texts

    return tokenizer_texts(generate_suite(seed))
