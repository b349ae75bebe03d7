"""Rank classification: shared-encoder scoring equals naive per-choice scoring, for every prompt kind."""

import json

import pytest
import torch

from promptability.eval.rank import evaluate, score_choices, write_run

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


def naive_scores(model, record, score, source_eos=True):
    """The paper's way: one full forward (source re-encoded) per choice."""
    tok = model.tokenizer
    src = torch.tensor([tok(record["source"], add_special_tokens=source_eos).input_ids])
    out = []
    for choice in record["choices"]:
        labels = torch.tensor([tok(choice).input_ids])
        logits = model(src, torch.ones_like(src), labels=labels).logits
        logp = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        out.append((logp.mean() if score == "mean" else logp.sum()).item())
    return out


@pytest.mark.parametrize("kind", ["none", "shallow", "deep"])
@pytest.mark.parametrize("score", ["mean", "sum"])
def test_shared_encoder_scores_equal_naive_per_choice(make_model, kind, score):
    model = make_model(kind)
    rows = evaluate(model, RECORDS, batch_size=3, score=score, progress=False)
    assert [(r["task"], r["index"]) for r in rows] == sorted((r["task"], i) for r, i in zip(RECORDS, [0, 1, 0, 1, 0]))
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


def test_without_source_eos_the_scores_are_those_of_the_bare_source(make_model):
    model = make_model("deep")
    rows = evaluate(model, RECORDS, batch_size=3, progress=False, source_eos=False)
    with_eos = evaluate(model, RECORDS, batch_size=3, progress=False)
    by_key = {(r["task"], r["index"]): r["scores"] for r in rows}
    assert model.tokenizer("a dog").input_ids[-1] == model.tokenizer.eos_token_id  # the naive source has an EOS
    for key, record in zip([("t_nli", 0), ("t_nli", 1), ("t_yn", 0), ("t_yn", 1), ("t_4", 0)], RECORDS, strict=True):
        assert by_key[key] == pytest.approx(naive_scores(model, record, "mean", source_eos=False), rel=2e-5, abs=2e-5)
    assert all(a["scores"] != b["scores"] for a, b in zip(rows, with_eos, strict=True))


def test_precision_names(make_model):
    from promptability.eval.rank import precision_of

    assert (precision_of(None), precision_of(torch.bfloat16), precision_of(torch.float16)) == ("fp32", "bf16", "fp16")


def test_encoder_runs_once_per_source(make_model):
    model = make_model("deep")
    calls = []
    encoder = model.transformer.get_encoder()
    handle = encoder.register_forward_hook(lambda m, a, out: calls.append(out.last_hidden_state.shape[0]))
    evaluate(model, RECORDS, batch_size=8, progress=False)
    handle.remove()
    assert sum(calls) == len(RECORDS), "each source is encoded exactly once"


@pytest.mark.parametrize("kind", ["none", "deep"])
def test_cross_attention_keys_once_per_source_and_lm_head_on_real_tokens_only(make_model, tiny_tokenizer, kind):
    from promptability.data.batching import collate_eval
    from promptability.data.tokenize import tokenize_records

    model = make_model(kind)
    ds = tokenize_records(RECORDS, tiny_tokenizer, use_cache=False, progress=False).dataset
    batch = collate_eval([ds[i] for i in range(len(ds))], pad_id=0)
    rows: dict[str, list[int]] = {"k": [], "v": [], "head": []}
    decoder = model.transformer.get_decoder()
    modules = [(name, getattr(block.layer[1].EncDecAttention, name)) for block in decoder.block for name in "kv"]
    modules.append(("head", model.transformer.lm_head))
    handles = [
        module.register_forward_hook(
            lambda m, a, out, name=name: rows[name].append(out.reshape(-1, out.shape[-1]).shape[0])
        )
        for name, module in modules
    ]
    with torch.no_grad():
        scores = score_choices(model, batch)
    for handle in handles:
        handle.remove()
    source_positions = batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] + model.prepended)
    layers = len(decoder.block)
    assert rows["k"] == rows["v"] == [source_positions] * layers  # per source, not per choice (14 choices)
    assert rows["head"] == [int(batch["choice_mask"].sum())]
    for i, record in enumerate(RECORDS):  # the batch keeps the records' order
        n = len(record["choices"])
        assert scores[i, :n].tolist() == pytest.approx(naive_scores(model, record, "mean"), rel=1e-5, abs=1e-5)


def test_padded_choice_slots_score_minus_inf(make_model, tiny_tokenizer):
    from promptability.data.batching import collate_eval
    from promptability.data.tokenize import tokenize_records

    model = make_model("none")
    ds = tokenize_records(RECORDS[2:], tiny_tokenizer, use_cache=False).dataset
    batch = collate_eval([ds[i] for i in range(len(ds))], pad_id=0)
    with torch.no_grad():
        scores = score_choices(model, batch)
    assert scores.shape == (3, 4)
    assert torch.isinf(scores[0, 2:]).all() and torch.isfinite(scores[2]).all()


def test_write_run_files(make_model, tmp_path):
    rows = evaluate(make_model("shallow"), RECORDS, progress=False)
    acc = write_run(tmp_path / "run", rows, {"method": "mtl-tp", "prompt": "shallow", "shots": 0, "model": "x"})
    lines = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(RECORDS)
    assert json.loads((tmp_path / "run" / "accuracy.json").read_text()) == acc
    expected = sum(r["prediction"] == r["label"] for r in rows if r["task"] == "t_yn") / 2
    assert acc["t_yn"] == expected
    assert json.loads((tmp_path / "run" / "run.json").read_text())["method"] == "mtl-tp"


def test_records_without_choices_are_refused(make_model):
    with pytest.raises(ValueError, match="no choices"):
        evaluate(
            make_model(), [{"task": "x", "source": "a", "target": "b", "choices": [], "label": -1}], progress=False
        )
