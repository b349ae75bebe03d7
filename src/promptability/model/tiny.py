"""The offline default: a tiny T5 (a few million parameters) and a tokenizer built offline.

The tokenizer is a byte-pair-encoding model with SentencePiece-style word
boundaries, trained with Hugging Face ``tokenizers`` on the texts it will see (by default the offline suite), with
T5's special-token layout: <pad>=0 (also the decoder start), </s>=1, <unk>=2,
and </s> appended to every encoded text as T5 does.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]

# T5 v1.1 layout (gated GELU, untied head) at a size two CPU cores train in minutes.
TINY_CONFIG = dict(
    d_model=128,
    d_kv=32,
    num_heads=4,
    d_ff=512,
    num_layers=4,
    num_decoder_layers=4,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.0,
)


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """Trains a BPE tokenizer on ``corpus``; deterministic for the same corpus.

    On the suite's small vocabulary BPE ends with whole words as pieces (about 2,000),
    which keeps sequences half as long as a unigram model's sub-word pieces.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Strip()])
    # Punctuation split off words, so the vocabulary is spent on words rather than "word," variants.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace()])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
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

    config = T5Config(
        vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **{**TINY_CONFIG, **overrides}
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():
        # T5's untied head is initialised with std 1, which makes first logits ~sqrt(d_model) large
        # and the first hundred steps of a tiny run pure recovery; start at unit scale instead.
        model.lm_head.weight.mul_(config.d_model**-0.5)
    return model


def default_corpus(seed: int = 0) -> Iterable[str]:
    """The texts of the offline suite, which the tiny tokenizer is trained on."""
    from promptability.data.suite import tokenizer_corpus

    return tokenizer_corpus(seed=seed)
