"""Importing the paper's released checkpoints: parity with the reference's equations, and refusing unsafe files.

Each test builds a checkpoint with exactly the reference's layout (a Lightning dict; T5 under
``transformer.model.``; a shallow prompt as ``shared.new_embed``, deep ones as three prefix tables) from a tiny
config-built T5, and computes the reference model's outputs here from the reference's equations: the shallow
prompt as input ids past the tokenizer's vocabulary looked up in ``cat(embedding[:vocab], prompt)``, the deep
prefixes by a hand-written attention patched into a plain Hugging Face T5.
"""

from __future__ import annotations

import json
import os
import tarfile
import types
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from promptability.io import BadFileError
from promptability.model.reference import ReferenceCheckpointError, import_reference

SMALL = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=3)
EXTRA_ROWS = 8  # T5 has 32,128 embedding rows for its tokenizer's 32,100 ids: rows no token id reaches
P = 5  # prompt length (the paper's is 20)
ROOT = "transformer.model."
EMBEDDING_NAMES = ("shared", "encoder.embed_tokens", "decoder.embed_tokens")  # the reference's one module, three names


def _t5(tokenizer, seed: int, tie: bool = False):
    from promptability.model.tiny import tiny_t5

    model = tiny_t5(len(tokenizer) + EXTRA_ROWS, seed=seed, tie_word_embeddings=tie, **SMALL)
    if not tie:  # LM-adapted T5 has an LM head of its own
        head = torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(seed + 7))
        model.lm_head.weight = nn.Parameter(head)
    return model.eval()


def _tables(model, prompt: str, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = model.config
    if prompt == "shallow":
        return {"shallow": torch.randn(P, c.d_model, generator=g)}
    width = 2 * c.num_heads * c.d_kv
    return {
        "encoder.prefix_embed.weight": torch.randn(P, c.num_layers * width, generator=g),
        "decoder.prefix_embed.weight": torch.randn(P, c.num_decoder_layers * width, generator=g),
        "decoder.prefix_embed_cross.weight": torch.randn(P, c.num_decoder_layers * width, generator=g),
    }


def _lightning(model, prompt: str, tables: dict[str, torch.Tensor], meta: bool = False) -> dict:
    """A checkpoint dict as the reference's Lightning 1.5 run writes it."""
    state = OrderedDict(model.state_dict())
    if prompt == "shallow":
        for module in EMBEDDING_NAMES:
            state[f"{module}.embed.weight"] = state.pop(f"{module}.weight")
            state[f"{module}.new_embed.weight"] = tables["shallow"]
    else:
        state.update(tables)
    prefix = ("model." if meta else "") + ROOT
    return {
        "epoch": 0,
        "global_step": 7,
        "pytorch-lightning_version": "1.5.5",
        "state_dict": OrderedDict((prefix + k, v) for k, v in state.items()),
        "callbacks": {
            "ModelCheckpoint{'monitor': 'categorical_accuracy', 'mode': 'max'}": {
                "best_model_score": torch.tensor(0.61), "best_model_path": "/work/epoch=0-step=7.ckpt"}
        },
        "optimizer_states": [{"state": {0: {"step": 7, "exp_avg_sq_row": torch.ones(4)}},
                              "param_groups": [{"lr": 1e-3, "eps": (1e-30, 1e-3), "params": [0]}]}],
        "lr_schedulers": [],
        "custom_optimizer_states": {"transformer.model.shared.weight": {"step": 7}},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1}}}},
        "hyper_parameters": {"deep": prompt == "deep", "num_prefix": P, "model": None},
    }  # fmt: skip


def _base(tokenizer, folder: Path, tie: bool = False) -> Path:
    """The T5 a checkpoint was trained from: a Hugging Face folder (seed 0; the checkpoints use seed 1)."""
    _t5(tokenizer, seed=0, tie=tie).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def base(tiny_tokenizer, tmp_path) -> Path:
    """An LM-adapted T5 (a head of its own)."""
    return _base(tiny_tokenizer, tmp_path / "base")


def _write(checkpoint: dict, path: Path) -> Path:
    torch.save(checkpoint, path)
    return path


# ----- the reference's equations -----------------------------------------------------------------------------
def shallow_reference_logits(model, prompt: torch.Tensor, cut: int, batch) -> torch.Tensor:
    """Prompt tokens are ids cut..cut+P-1 prepended to the source; the table is cat(embed[:cut], prompt)."""
    n = batch["input_ids"].shape[0]
    ids = torch.cat([torch.arange(cut, cut + P).expand(n, -1), batch["input_ids"]], dim=1)
    mask = torch.cat([torch.ones(n, P, dtype=torch.long), batch["attention_mask"]], dim=1)
    embeds = F.embedding(ids, torch.cat([model.shared.weight[:cut], prompt]))
    return model(
        inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=model._shift_right(batch["labels"]),
        decoder_attention_mask=batch["decoder_attention_mask"], use_cache=False,
    ).logits  # fmt: skip


def _reference_prefixes(table: torch.Tensor, config, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As the reference's generate_prefix_item: view (1, P, L, 2, H, d), permute to (2, L, 1, H, P, d)."""
    prefix = table.unsqueeze(0).view(1, P, layers, 2, config.num_heads, config.d_kv).permute([3, 2, 0, 4, 1, 5])
    return prefix[0], prefix[1]


def deep_reference_logits(model, tables: dict[str, torch.Tensor], batch) -> torch.Tensor:
    """Every attention gets P key/value prefixes: always attendable (also under causality), zero position bias."""
    c = model.config
    enc_k, enc_v = _reference_prefixes(tables["encoder.prefix_embed.weight"], c, c.num_layers)
    dec_k, dec_v = _reference_prefixes(tables["decoder.prefix_embed.weight"], c, c.num_decoder_layers)
    cross_k, cross_v = _reference_prefixes(tables["decoder.prefix_embed_cross.weight"], c, c.num_decoder_layers)
    src_mask, tgt_mask = batch["attention_mask"].bool(), batch["decoder_attention_mask"].bool()
    t = tgt_mask.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    enc_bias = model.encoder.block[0].layer[0].SelfAttention
    dec_bias = model.decoder.block[0].layer[0].SelfAttention
    sites = [(b.layer[0].SelfAttention, enc_k[i], enc_v[i], enc_bias, src_mask[:, None, None, :])
             for i, b in enumerate(model.encoder.block)]  # fmt: skip
    for i, b in enumerate(model.decoder.block):
        sites.append((b.layer[0].SelfAttention, dec_k[i], dec_v[i], dec_bias, causal & tgt_mask[:, None, None, :]))
        sites.append((b.layer[1].EncDecAttention, cross_k[i], cross_v[i], None, src_mask[:, None, None, :]))

    def patched(module, key_prefix, value_prefix, bias_module, allowed):
        def forward(hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kwargs):
            n, q_len, _ = hidden_states.shape
            source = hidden_states if key_value_states is None else key_value_states

            def heads(x):
                return x.view(n, -1, c.num_heads, c.d_kv).transpose(1, 2)

            q, k, v = heads(module.q(hidden_states)), heads(module.k(source)), heads(module.v(source))
            k_len = k.shape[2]
            bias = torch.zeros(1, c.num_heads, q_len, k_len)
            if bias_module is not None:
                bias = bias_module.compute_bias(q_len, k_len)
            real = q @ k.transpose(2, 3) + bias
            real = real.masked_fill(~allowed, torch.finfo(real.dtype).min)
            scores = torch.cat([q @ key_prefix.transpose(2, 3), real], dim=-1)  # prefix: no bias, no mask
            weights = scores.float().softmax(-1)
            out = weights @ torch.cat([value_prefix.expand(n, -1, -1, -1), v], dim=2)
            return module.o(out.transpose(1, 2).reshape(n, q_len, -1)), bias, None

        return forward

    for module, key_prefix, value_prefix, bias_module, allowed in sites:
        module.forward = patched(module, key_prefix, value_prefix, bias_module, allowed)
    return model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        decoder_input_ids=model._shift_right(batch["labels"]), decoder_attention_mask=batch["decoder_attention_mask"],
        use_cache=False,
    ).logits  # fmt: skip


def _ours(folder: Path, batch) -> torch.Tensor:
    from promptability.model.loading import load_model

    model = load_model(folder).eval()
    return model(**batch, return_loss=False).logits


# ----- parity --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [False, True], ids=["own-head", "tied-head"])
@torch.no_grad()
def test_shallow_import_matches_the_reference(tiny_tokenizer, batch, tmp_path, tie):
    base = _base(tiny_tokenizer, tmp_path / "base", tie=tie)
    trained = _t5(tiny_tokenizer, seed=1, tie=tie)
    tables = _tables(trained, "shallow")
    ckpt = _write(_lightning(trained, "shallow", tables), tmp_path / "shallow.ckpt")
    out = import_reference(ckpt, str(base), "shallow", tmp_path / "imported")
    expected = shallow_reference_logits(
        _t5(tiny_tokenizer, seed=1, tie=tie), tables["shallow"], len(tiny_tokenizer), batch
    )
    ours = _ours(out, batch)
    assert ours.shape == expected.shape == (2, batch["labels"].shape[1], len(tiny_tokenizer) + EXTRA_ROWS)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    # the base's own weights (seed 0) would give other numbers: the imported ones came from the checkpoint
    assert not torch.allclose(_t5(tiny_tokenizer, seed=0, tie=tie)(**batch).logits, expected, atol=1e-3)
    info = json.loads((out / "promptability.json").read_text())
    assert info["prompt"] == "shallow" and info["prompt_length"] == P and info["method"] == "mtl-tp"
    assert info["imported_from"]["file"] == str(ckpt.resolve())
    assert info["imported_from"]["sha256"] == __import__("hashlib").sha256(ckpt.read_bytes()).hexdigest()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch folder left behind


@pytest.mark.parametrize("meta", [False, True], ids=["mtl", "meta-learner"])
@torch.no_grad()
def test_deep_import_matches_the_reference(tiny_tokenizer, base, batch, tmp_path, meta):
    trained = _t5(tiny_tokenizer, seed=1)
    tables = _tables(trained, "deep")
    ckpt = _write(_lightning(trained, "deep", tables, meta=meta), tmp_path / "deep.ckpt")
    out = import_reference(ckpt, str(base), "deep", tmp_path / "imported")
    expected = deep_reference_logits(_t5(tiny_tokenizer, seed=1), tables, batch)
    torch.testing.assert_close(_ours(out, batch), expected, atol=1e-5, rtol=0)
    # the prefixes matter: without them the same weights give other logits
    assert not torch.allclose(_t5(tiny_tokenizer, seed=1)(**batch).logits, expected, atol=1e-3)


@torch.no_grad()
def test_a_tgz_archive_is_read_in_place_of_its_checkpoint(tiny_tokenizer, base, batch, tmp_path):
    import hashlib

    trained = _t5(tiny_tokenizer, seed=1)
    tables = _tables(trained, "deep")
    ckpt = _write(_lightning(trained, "deep", tables), tmp_path / "epoch=0-step=7.ckpt")
    archive = tmp_path / "mtl_large_deep.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(ckpt, arcname="cache/TrainStep-abc/work/epoch=0-step=7-endofepoch.ckpt")
        link = tarfile.TarInfo("cache/TrainStep-abc/work/last.ckpt")  # a link is never followed
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    out = import_reference(archive, str(base), "deep", tmp_path / "imported")
    torch.testing.assert_close(_ours(out, batch), deep_reference_logits(_t5(tiny_tokenizer, seed=1), tables, batch),
                               atol=1e-5, rtol=0)  # fmt: skip
    source = json.loads((out / "promptability.json").read_text())["imported_from"]
    assert source["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert source["member"] == "cache/TrainStep-abc/work/epoch=0-step=7-endofepoch.ckpt"
    assert source["member_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "epoch=0-step=7.ckpt", "imported", archive.name]

    two = tmp_path / "two.tgz"
    with tarfile.open(two, "w:gz") as tar:
        tar.add(ckpt, arcname="a/one.ckpt")
        tar.add(ckpt, arcname="../escape.ckpt")
    with pytest.raises(ReferenceCheckpointError, match=r"2 \.ckpt files \(a/one\.ckpt, \.\./escape\.ckpt\)"):
        import_reference(two, str(base), "deep", tmp_path / "other")
    assert not (tmp_path.parent / "escape.ckpt").exists() and not (tmp_path / "other").exists()


# ----- unsafe and unusable files ------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this calls the function it names: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tiny_tokenizer, base, tmp_path):
    marker = tmp_path / "marker"
    trained = _t5(tiny_tokenizer, seed=1)
    for name, payload in [
        ("system", _RunsCode(os.system, f"touch {marker}")),
        ("write", _RunsCode(Path.write_text, marker, "pwned")),
        ("exec", _RunsCode(exec, f"open({str(marker)!r}, 'w').write('pwned')")),
    ]:
        checkpoint = _lightning(trained, "deep", _tables(trained, "deep"))
        checkpoint["hyper_parameters"] = {"payload": payload}  # outside state_dict: still never run
        with pytest.raises(
            ReferenceCheckpointError, match="refused: the file holds the object .*nothing from it was run"
        ):
            import_reference(_write(checkpoint, tmp_path / f"{name}.ckpt"), str(base), "deep", tmp_path / "out")
        assert not marker.exists(), name
    assert not (tmp_path / "out").exists()


def test_an_unknown_harmless_global_is_refused_too(tiny_tokenizer, base, tmp_path):
    trained = _t5(tiny_tokenizer, seed=1)
    checkpoint = _lightning(trained, "deep", _tables(trained, "deep"))
    checkpoint["hyper_parameters"] = {"ratio": Fraction(1, 3)}
    with pytest.raises(ReferenceCheckpointError, match=r"holds the object fractions\.Fraction"):
        import_reference(_write(checkpoint, tmp_path / "x.ckpt"), str(base), "deep", tmp_path / "out")


def test_lightning_attribute_dicts_and_class_keyed_callbacks_read_as_stand_ins(
    tiny_tokenizer, base, tmp_path, monkeypatch
):
    """Lightning's AttributeDict hyperparameters and (Lightning < 1.5) callback classes as keys load as inert data."""
    parsing = types.ModuleType("pytorch_lightning.utilities.parsing")
    checkpoint_module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    ran = []

    class AttributeDict(dict):
        def __setstate__(self, state):  # would run if the file's class were used
            ran.append(state)

    class ModelCheckpoint:
        pass

    AttributeDict.__module__, AttributeDict.__qualname__ = parsing.__name__, "AttributeDict"
    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = checkpoint_module.__name__, "ModelCheckpoint"
    parsing.AttributeDict, checkpoint_module.ModelCheckpoint = AttributeDict, ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(__import__("sys").modules, name, types.ModuleType(name))
    monkeypatch.setitem(__import__("sys").modules, parsing.__name__, parsing)
    monkeypatch.setitem(__import__("sys").modules, checkpoint_module.__name__, checkpoint_module)
    trained = _t5(tiny_tokenizer, seed=1)
    checkpoint = _lightning(trained, "deep", _tables(trained, "deep"))
    checkpoint["hyper_parameters"] = AttributeDict(lr=1e-3, deep=True)
    checkpoint["callbacks"] = {ModelCheckpoint: {"best_model_score": torch.tensor(0.5)}}
    path = _write(checkpoint, tmp_path / "pl14.ckpt")
    import_reference(path, str(base), "deep", tmp_path / "out")
    assert not ran and (tmp_path / "out" / "prompt.safetensors").is_file()


@pytest.mark.parametrize(
    ("change", "prompt", "message"),
    [
        (
            lambda s: s.pop(ROOT + "decoder.prefix_embed_cross.weight"),
            "deep",
            r"lacks transformer\.model\.decoder\.prefix_embed_cross\.weight",
        ),
        (
            lambda s: s.update({ROOT + "decoder.prefix_embed.weight": torch.zeros(P, 7)}),
            "deep",
            r"transformer\.model\.decoder\.prefix_embed\.weight has shape \[5, 7\], expected \[5, 192\]",
        ),
        (
            lambda s: s.update({ROOT + "encoder.block.1.layer.1.DenseReluDense.wo.weight": torch.zeros(32, 65)}),
            "deep",
            r"transformer\.model\.encoder\.block\.1\.layer\.1\.DenseReluDense\.wo\.weight has shape \[32, 65\]",
        ),
        (
            lambda s: s.pop(ROOT + "decoder.final_layer_norm.weight"),
            "deep",
            r"lacks transformer\.model\.decoder\.final_layer_norm\.weight",
        ),
        (
            lambda s: s.update({ROOT + "encoder.prefix_embed.0.weight": torch.zeros(P, 32)}),
            "deep",
            r"reparameterised deep prompts .* not supported",
        ),
        (
            lambda s: None,
            "shallow",
            r"no shallow prompt transformer\.model\.shared\.new_embed\.weight; .*--prompt deep",
        ),
        (
            lambda s: s.update({"optimizer.step": torch.zeros(1)}),
            "deep",
            "parameters are not under 'transformer.model.'",
        ),
    ],
    ids=["missing-table", "table-shape", "weight-shape", "missing-weight", "reparam", "wrong-kind", "foreign-key"],
)
def test_unusable_checkpoints_name_the_key(tiny_tokenizer, base, tmp_path, change, prompt, message):
    trained = _t5(tiny_tokenizer, seed=1)
    checkpoint = _lightning(trained, "deep", _tables(trained, "deep"))
    change(checkpoint["state_dict"])
    path = _write(checkpoint, tmp_path / "bad.ckpt")
    with pytest.raises(ReferenceCheckpointError, match=message) as caught:
        import_reference(path, str(base), prompt, tmp_path / "out")
    assert str(path) in str(caught.value) and not (tmp_path / "out").exists()


def test_files_that_are_no_checkpoint(tiny_tokenizer, base, tmp_path):
    (tmp_path / "text.ckpt").write_text("not a pickle")
    with pytest.raises(ReferenceCheckpointError, match="not a readable PyTorch checkpoint"):
        import_reference(tmp_path / "text.ckpt", str(base), "deep", tmp_path / "out")
    with pytest.raises(ReferenceCheckpointError, match="no 'state_dict' entry"):
        import_reference(_write({"weights": torch.zeros(1)}, tmp_path / "w.ckpt"), str(base), "deep", tmp_path / "out")
    plain = _write({"state_dict": {"a": [1, 2]}}, tmp_path / "plain.ckpt")
    with pytest.raises(ReferenceCheckpointError, match="state_dict entry 'a' is a list, not a tensor"):
        import_reference(plain, str(base), "deep", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        import_reference(tmp_path / "absent.ckpt", str(base), "deep", tmp_path / "out")
    with pytest.raises(BadFileError, match="--base"):
        import_reference(plain, str(tmp_path), "deep", tmp_path / "out")
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(300))
    with pytest.raises(ReferenceCheckpointError, match="not a readable .tgz archive.*pass the .ckpt"):
        import_reference(broken, str(base), "deep", tmp_path / "out")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model folder"):  # the save would replace it whole
        import_reference(plain, str(base), "deep", tmp_path / "work")
    assert (tmp_path / "work" / "notes.txt").read_text() == "mine"


# ----- the command, end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
@torch.no_grad()
def test_import_reference_then_evaluate_scores_as_the_reference(tiny_tokenizer, base, tmp_path, capsys):
    from promptability.cli import main

    trained = _t5(tiny_tokenizer, seed=1)
    tables = _tables(trained, "deep")
    ckpt = _write(_lightning(trained, "deep", tables), tmp_path / "deep.ckpt")
    rows = [
        {"task": "t", "source": "is this review positive ? the cat sat on the mat", "choices": ["yes", "no"], "label": 0},
        {"task": "t", "source": "question : where is the book ?", "choices": ["the table", "the park", "maybe"],
         "label": 0},
        {"task": "t", "source": "premise : anna is tall . hypothesis : anna is short", "choices": ["true", "false"],
         "label": 1},
    ]  # fmt: skip
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({**r, "target": r["choices"][r["label"]]}) + "\n" for r in rows))
    out = tmp_path / "imported"
    assert (
        main(["model", "import-reference", str(ckpt), "--base", str(base), "--prompt", "deep", "--out", str(out)]) == 0
    )
    assert f"-> {out}" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(out), "--data", str(data), "--out", str(tmp_path / "run")]) == 0
    predictions = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    reference = _t5(tiny_tokenizer, seed=1)
    for row, predicted in zip(rows, sorted(predictions, key=lambda r: r["index"]), strict=True):
        source = tiny_tokenizer([row["source"]], return_tensors="pt")  # T5's layout: source + EOS
        expected = []
        for choice in row["choices"]:
            labels = tiny_tokenizer([choice], return_tensors="pt").input_ids
            batch = {**source, "labels": labels, "decoder_attention_mask": torch.ones_like(labels)}
            logits = deep_reference_logits(reference, tables, batch)
            expected.append(logits.log_softmax(-1)[0].gather(-1, labels[0, :, None]).mean().item())
        assert predicted["scores"] == pytest.approx(expected, abs=1e-5)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["method"] == "mtl-tp" and run["prompt"] == "deep"


def test_the_command_refuses_an_unsafe_file_with_an_error_line(tiny_tokenizer, base, tmp_path, capsys):
    from promptability.cli import main

    marker = tmp_path / "marker"
    path = _write({"state_dict": {}, "x": _RunsCode(os.system, f"touch {marker}")}, tmp_path / "evil.ckpt")
    args = [
        "model",
        "import-reference",
        str(path),
        "--base",
        str(base),
        "--prompt",
        "shallow",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: refused: the file holds the object ") and not marker.exists()
    assert ".system," in err  # posix.system (nt.system on Windows), named, never called


def test_unusable_shallow_checkpoints_name_the_key(tiny_tokenizer, base, tmp_path):
    trained = _t5(tiny_tokenizer, seed=1)
    for name, change, message in [
        ("width", dict.fromkeys([f"{m}.new_embed.weight" for m in EMBEDDING_NAMES], torch.zeros(P, 31)),
         r"transformer\.model\.shared\.new_embed\.weight has shape \[5, 31\], expected \[prompt length, 32\]"),
        ("copy", {"decoder.embed_tokens.embed.weight": torch.zeros(len(tiny_tokenizer) + EXTRA_ROWS, 32)},
         r"transformer\.model\.decoder\.embed_tokens\.embed\.weight differs from transformer\.model\.shared\.embed"),
    ]:  # fmt: skip
        checkpoint = _lightning(trained, "shallow", _tables(trained, "shallow"))
        checkpoint["state_dict"].update({ROOT + k: v for k, v in change.items()})
        with pytest.raises(ReferenceCheckpointError, match=message):
            import_reference(_write(checkpoint, tmp_path / f"{name}.ckpt"), str(base), "shallow", tmp_path / "out")
        checkpoint["state_dict"].pop(ROOT + "shared.new_embed.weight")  # a prompt-less file is no shallow one
    with pytest.raises(
        ReferenceCheckpointError, match=r"no shallow prompt transformer\.model\.shared\.new_embed\.weight$"
    ):
        import_reference(_write(checkpoint, tmp_path / "none.ckpt"), str(base), "shallow", tmp_path / "out")
