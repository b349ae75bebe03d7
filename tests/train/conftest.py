"""Fixtures of the training tests: small tokenized data, one CPU thread, a shared Accelerator."""

from __future__ import annotations

import pytest
import torch

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park with a red ball",
    "premise : anna is tall . hypothesis : anna is short",
    "question : where is the book ? answer : the book is on the table",
    "is this review positive ? yes",
    "the sun was warm and the dog sat in the park",
]


def make_records(n: int = 24, tasks: int = 3, prefix: str = "task") -> list[dict]:
    """Training records of varied lengths over ``tasks`` templates (deterministic)."""
    out = []
    for i in range(n):
        words = SENTENCES[i % len(SENTENCES)].split()
        source = " ".join(words[: 3 + (i * 5) % len(words)])
        target = " ".join(words[-1 - i % 3 :])
        out.append({"task": f"{prefix}_{i % tasks}", "source": source, "target": target, "choices": [], "label": -1})
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from threads, and on a busy 2-core machine threads thrash.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTABILITY_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def accelerator():
    from promptability.train.loop import make_accelerator

    return make_accelerator("fp32", cpu=True)


@pytest.fixture
def train_data(tiny_tokenizer):
    from promptability.data.tokenize import tokenize_records

    return tokenize_records(make_records(), tiny_tokenizer, use_cache=False).dataset
