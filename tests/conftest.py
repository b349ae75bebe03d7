"""Shared fixtures: tiny models built offline, and the path to ../shared when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

CORPUS = [
    "the cat sat on the mat . is this review positive ? yes no maybe",
    "a dog ran in the park with a red ball and the sun was warm",
    "premise : anna is tall . hypothesis : anna is short . true false neither",
    "question : where is the book ? answer : the book is on the table",
] * 40


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from promptability.model.tiny import build_tokenizer

    return build_tokenizer(CORPUS, vocab_size=120)


@pytest.fixture
def make_model(tiny_tokenizer):
    """``make_model(prompt, length=4, seed=0)`` → a small PromptedSeq2SeqLM (2 layers, d_model 32), in eval mode."""
    from promptability.model.prompted import PromptedSeq2SeqLM
    from promptability.model.tiny import tiny_t5

    def make(prompt: str = "none", length: int = 4, seed: int = 0, **overrides):
        small = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2)
        transformer = tiny_t5(len(tiny_tokenizer), seed=seed, **{**small, **overrides})
        model = PromptedSeq2SeqLM(transformer, tiny_tokenizer, prompt, length, seed=seed, base_model="tiny-test")
        return model.eval()

    return make


@pytest.fixture
def batch(tiny_tokenizer):
    src = tiny_tokenizer(["the cat sat on the mat", "is this review positive ? yes"], return_tensors="pt", padding=True)
    tgt = tiny_tokenizer(["yes", "the red ball"], return_tensors="pt", padding=True)
    return {
        "input_ids": src.input_ids,
        "attention_mask": src.attention_mask,
        "labels": tgt.input_ids,
        "decoder_attention_mask": tgt.attention_mask,
    }


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared is only beside the repository in development and CI)")
    return path


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def p3_samples() -> Path:
    """``../shared/p3/samples`` (real P3 rows saved with save_to_disk); skips the test where it is absent."""
    return shared_path("p3", "samples")


@pytest.fixture
def realdata_root() -> Path:
    """../shared/realdata: real held-out and training data in original formats (skips where absent)."""
    return shared_path("realdata")


@pytest.fixture
def promptsource_root() -> Path:
    """../shared/promptsource: promptsource's template YAMLs (skips where absent)."""
    return shared_path("promptsource")
