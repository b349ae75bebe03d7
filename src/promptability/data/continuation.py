"""Token ids of the decoder-only layout: a source, then an answer (target or choice) that continues it.

A decoder-only LM scores an answer by the log-probabilities of its tokens after the source. Those tokens
must be the ones the answer has in the running text ``source + answer``, as the model would read it, or
the scores depend on tokenizer quirks rather than on the model. Three rules (``encode_pairs``), those of
lm-evaluation-harness:

- whitespace at the end of the source moves to the start of the answer (``split_pair``); without any, the
  answer gets one space. The source/answer boundary is then where running text has a word boundary, so the
  source's tokens are the same for every answer and are a prefix of the joined text's tokens;
- the answer's ids are the joined text's ids after the source's: encoding the answer alone would give
  legacy SentencePiece tokenizers (Llama-2, Mistral v0.1) an extra ``▁`` token in front of it;
- the special ids the tokenizer puts before any text by default (``special_prefix``: BOS of Llama-3,
  Gemma, Llama-2) come first, as in training; GPT-2-style tokenizers put none.

``joined=False`` restores the earlier rule (source and `` answer`` encoded separately, nothing moved, no
BOS), which equals the joined one for byte-level BPE tokenizers without BOS (GPT-2, SmolLM2) and sources
that do not end in whitespace.
"""

from __future__ import annotations

import itertools
from typing import Any

__all__ = ["as_continuation", "encode_pairs", "regroup", "special_prefix", "split_pair"]


def as_continuation(text: str) -> str:
    """``text`` with a leading space unless it is empty or already starts with whitespace."""
    return text if not text or text[0].isspace() else " " + text


def split_pair(source: str, answer: str) -> tuple[str, str]:
    """(context, continuation): the source's trailing whitespace moved to the answer (one space when none).

    An empty answer stays empty: it is scored as one EOS (``tokenize.continuation_ids``).
    """
    context = source.rstrip()
    if not answer:
        return context, ""
    space = source[len(context) :]
    return context, (space + answer if space else as_continuation(answer))


def special_prefix(tokenizer: Any) -> list[int]:
    """The special token ids ``tokenizer`` puts before text by default ([BOS] for Llama-3 or Gemma, [] for GPT-2).

    Read from the tokenizer itself (its post-processor, or ``add_bos_token`` of slow tokenizers) by encoding a
    probe with and without special tokens; ids added after the text (T5's EOS) are not a prefix.
    """
    probe = "a"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            prefix = list(full[:start])
            return prefix if all(i in special for i in prefix) else []
    return []


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def encode_pairs(
    tokenizer: Any, sources: list[str], answers: list[list[str]], joined: bool = True
) -> tuple[list[list[int]], list[list[list[int]]]]:
    """(source ids, each source's answers' ids) in the decoder-only layout; no special ids (see ``special_prefix``).

    ``answers[i]`` are the continuations of ``sources[i]`` (a target, choices). With ``joined``, answer j's ids
    are ``encode(context + continuation)[len(encode(context)):]`` (``split_pair``); where a tokenizer merged
    across the boundary, so the context's ids are not a prefix of the joined ids, this still takes the ids
    past that length, as lm-evaluation-harness does. ``joined=False``: the earlier rule (module docstring).
    """
    if len(sources) != len(answers):
        raise ValueError(f"{len(sources)} sources but {len(answers)} answer lists")
    if not joined:
        source_ids = encode_texts(tokenizer, sources)
        flat = encode_texts(tokenizer, [as_continuation(a) for group in answers for a in group])
    else:
        pairs = [[split_pair(s, a) for a in group] for s, group in zip(sources, answers, strict=True)]
        source_ids = encode_texts(tokenizer, [s.rstrip() for s in sources])
        # one per non-empty continuation, in order
        joined_ids = iter(
            encode_texts(tokenizer, [context + rest for group in pairs for context, rest in group if rest])
        )
        flat = [
            next(joined_ids)[len(src) :] if rest else []
            for src, group in zip(source_ids, pairs, strict=True)
            for _, rest in group
        ]
    return source_ids, regroup(flat, answers)


def regroup(flat: list[list[int]], groups: list[list[str]]) -> list[list[list[int]]]:
    """``flat`` (the ids of every text of ``groups``, in order) cut back into one list per group."""
    items = iter(flat)
    return [list(itertools.islice(items, len(group))) for group in groups]
