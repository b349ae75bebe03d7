"""The offline tiny model: its tokenizer is deterministic across processes and T5-shaped; the model is small."""

import subprocess
import sys

import pytest

from promptability.model.tiny import build_tokenizer, tiny_t5

SCRIPT = (
    "import hashlib; from promptability.model.tiny import build_tokenizer;"
    "t = build_tokenizer(['b a c , d', 'a c c . e f', 'z y x w'] * 3);"
    "print(hashlib.md5(t.backend_tokenizer.to_str().encode()).hexdigest())"
)


@pytest.mark.slow
def test_tokenizer_is_identical_in_separate_processes():
    runs = {
        subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(runs) == 1


def test_tokenizer_has_t5_special_tokens_and_appends_eos():
    tok = build_tokenizer(["the cat sat . the dog ran"], vocab_size=100)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("the cat ran").input_ids
    assert ids[-1] == 1 and ids.count(1) == 1 and len(ids) == 4
    assert tok("the zebra").input_ids[1] == 2  # unknown word
    # most frequent first, ties alphabetical: "the" (2) then ".", "cat", "dog", "ran", "sat"
    assert [tok.convert_ids_to_tokens(i) for i in range(3, 9)] == ["▁the", "▁.", "▁cat", "▁dog", "▁ran", "▁sat"]


def test_tiny_t5_is_a_few_million_parameters_with_unit_scale_logits():
    model = tiny_t5(2000)
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n < 5_000_000
    assert model.config.decoder_start_token_id == 0 and model.config.eos_token_id == 1
