"""Decoder-only choice scores equal scoring the joined text token by token, for three tokenizer families.

Each tokenizer is built offline with the behaviour that broke the earlier rule (source and " choice" encoded
apart): (a) a post-processor that puts BOS first (Llama-3, Gemma), (b) a legacy SentencePiece-style
pre-tokenizer that gives a separately encoded continuation an extra "▁" (Llama-2, Mistral v0.1), (c) a
GPT-2-style byte-level one scoring sources that end in whitespace. The reference runs the bare LM on the
joined text, encoded with the tokenizer's defaults, and takes the choice's tokens by character offsets.
"""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from promptability.data.batching import collate_eval
from promptability.data.continuation import encode_pairs, special_prefix, split_pair
from promptability.data.tokenize import tokenize_records
from promptability.eval.rank import evaluate, score_choices
from promptability.model.causal import PromptedCausalLM

CORPUS = [
    "question : is the sky blue ? answer : yes",
    "question : is the grass red ? answer : no",
    "premise : the cat sat on the mat . hypothesis : a cat sat . true false neither",
    "the dog ran in the park and the sun was warm",
    "where is the book ? on the table , in the park , under the bed",
] * 3

RECORDS = [
    {"task": "t", "source": "question : is the sky blue ? answer :", "target": "yes", "choices": ["yes", "no"],
     "label": 0},
    {"task": "t", "source": "question : is the grass red ? answer : ", "target": "no", "choices": ["yes", "no"],
     "label": 1},
    {"task": "t", "source": "where is the book ?\n", "target": "on the table",
     "choices": ["on the table", "in the park", "under the bed"], "label": 0},
    {"task": "t", "source": "premise : the cat sat on the mat . hypothesis : a cat sat .  ", "target": "true",
     "choices": ["true", "false", "neither"], "label": 0},
]  # fmt: skip


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _train(tok: Tokenizer, alphabet: list[str]) -> None:
    special = ["<pad>", "</s>", "<s>", "<unk>"]
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + 150, special_tokens=special, initial_alphabet=alphabet)
    tok.train_from_iterator(CORPUS, trainer)
    assert [tok.token_to_id(t) for t in special] == [0, 1, 2, 3]


def bos_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE whose post-processor adds BOS, as Llama-3's and Gemma's do."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    _train(tok, pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return _wrap(tok)


def legacy_sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-2's legacy layout: normalizers that prepend "▁" and turn spaces into "▁", no pre-tokenizer, so
    " yes" alone becomes "▁▁yes" = "▁" "▁yes". Trained with a Metaspace split, so no merge crosses a word."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    _train(tok, ["▁"])
    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    return _wrap(tok)


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2-style: no special tokens added; a trailing space of the source is a token of its own."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    _train(tok, pre_tokenizers.ByteLevel.alphabet())
    return _wrap(tok)


TOKENIZERS = {"bos": bos_tokenizer, "legacy-sentencepiece": legacy_sentencepiece_tokenizer,
              "trailing-space": byte_level_tokenizer}  # fmt: skip


def causal_model(tokenizer: PreTrainedTokenizerFast) -> PromptedCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=2)  # fmt: skip
    return PromptedCausalLM(LlamaForCausalLM(config), tokenizer, "none", base_model="tiny").eval()


def joined_reference(model: PromptedCausalLM, record: dict, score: str) -> list[float]:
    """Per choice: the bare LM over the joined text; the log-probs of the tokens that start past the source."""
    tok, out = model.tokenizer, []
    boundary = len(record["source"].rstrip())
    for choice in record["choices"]:
        gap = "" if record["source"][-1:].isspace() else " "
        enc = tok(record["source"] + gap + choice, return_offsets_mapping=True)  # the tokenizer's own specials
        ids = torch.tensor([enc["input_ids"]])
        first = next(i for i, (start, end) in enumerate(enc["offset_mapping"]) if end > start and start >= boundary)
        with torch.no_grad():
            logp = torch.log_softmax(model.transformer(input_ids=ids).logits[0].float(), -1)
        picked = [logp[i - 1, ids[0, i]].item() for i in range(first, ids.shape[1])]
        out.append(sum(picked) / len(picked) if score == "mean" else sum(picked))
    return out


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tokenizer(request):
    return TOKENIZERS[request.param]()


@pytest.mark.parametrize("score", ["mean", "sum"])
def test_scores_equal_the_joined_text_scored_token_by_token(tokenizer, score):
    model = causal_model(tokenizer)
    rows = evaluate(model, RECORDS, batch_size=3, score=score, progress=False)
    for row, record in zip(rows, RECORDS, strict=True):
        assert row["scores"] == pytest.approx(joined_reference(model, record, score), rel=1e-5, abs=1e-5)


def test_the_earlier_rule_scores_differently(tokenizer):
    """The parity above needs the new rule: the earlier one (``joined=False``) misses it on these tokenizers."""
    model = causal_model(tokenizer)
    old = tokenize_records(RECORDS, tokenizer, use_cache=False, progress=False, continuation=True, joined=False)
    with torch.no_grad():
        scores = score_choices(model, collate_eval(list(old.dataset), pad_id=0))
    gaps = [
        max(abs(a - b) for a, b in zip(row[: len(r["choices"])].tolist(), joined_reference(model, r, "mean")))
        for row, r in zip(scores, RECORDS, strict=True)
    ]
    assert max(gaps) > 1e-3


def test_each_tokenizer_shows_its_quirk():
    bos, legacy, byte_level = bos_tokenizer(), legacy_sentencepiece_tokenizer(), byte_level_tokenizer()
    assert special_prefix(bos) == [2] and special_prefix(legacy) == [] and special_prefix(byte_level) == []
    alone = legacy(" yes", add_special_tokens=False).input_ids
    assert legacy.convert_ids_to_tokens(alone) == ["▁", "▁yes"]  # the extra "▁" the joined rule avoids
    sources, answers = encode_pairs(legacy, ["answer :"], [["yes", "no"]])
    assert [legacy.convert_ids_to_tokens(a) for a in answers[0]] == [["▁yes"], ["▁no"]]
    assert sources[0] + answers[0][0] == legacy("answer : yes", add_special_tokens=False).input_ids
    spaced = byte_level("answer : ", add_special_tokens=False).input_ids
    assert byte_level.convert_ids_to_tokens(spaced)[-1] == "Ġ"  # what the old rule put before " yes"
    sources, answers = encode_pairs(byte_level, ["answer : "], [["yes"]])
    assert byte_level.convert_ids_to_tokens(answers[0][0]) == ["Ġyes"]


def test_bos_stays_first_when_the_source_is_cut():
    tok = bos_tokenizer()
    ds = tokenize_records(RECORDS, tok, max_source_len=4, use_cache=False, progress=False, continuation=True).dataset
    for row, record in zip(ds, RECORDS, strict=True):
        tail = tok(record["source"].rstrip(), add_special_tokens=False).input_ids[-3:]
        assert row["input_ids"] == [2, *tail]


@pytest.mark.parametrize(
    ("source", "answer", "expected"),
    [
        ("q :", "yes", ("q :", " yes")),
        ("q : ", "yes", ("q :", " yes")),
        ("q :\n", "yes", ("q :", "\nyes")),
        ("q :  ", " yes", ("q :", "   yes")),
        ("q :", "\nyes", ("q :", "\nyes")),
        ("q : ", "", ("q :", "")),
    ],
)
def test_split_pair_moves_the_source_whitespace_to_the_answer(source, answer, expected):
    assert split_pair(source, answer) == expected
