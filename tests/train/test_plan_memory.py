"""`plan`'s memory per GPU: exact bytes of what the loop keeps, and activations as autograd saves them."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from torch import nn

from promptability.cli import main
from promptability.train.config import TrainConfig
from promptability.train.distributed import FSDPConfig
from promptability.train.loop import build_optimizer
from promptability.train.memory import activation_bytes, gathered, memory_per_gpu, model_state
from promptability.train.plan import make_plan, shape_model


def _tensor_bytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    return sum(_tensor_bytes(v) for v in obj.values()) if isinstance(obj, dict) else 0


def _one_step(model: nn.Module) -> torch.optim.Optimizer:
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad])
    ids = torch.randint(2, 20, (2, 6))
    model.train()
    model(input_ids=ids, labels=ids[:, :3].contiguous()).loss.backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("preset", ["all", "mtl-p"])
def test_params_grads_and_adafactor_state_are_the_bytes_training_holds(make_model, preset):
    model = make_model("shallow")
    model.freeze(preset)
    optimizer = _one_step(model)
    state = model_state(model)
    assert state["params"] == sum(p.numel() * p.element_size() for p in model.parameters())
    assert state["grads"] == sum(_tensor_bytes(p.grad) for p in model.parameters() if p.grad is not None)
    assert state["optimizer"] == sum(_tensor_bytes(s) for s in optimizer.state.values())
    # by hand, for the prompt only: a 4 x 32 matrix: 4 row + 32 column second moments and the RMS scalar
    if preset == "mtl-p":
        assert state == {"params": state["params"], "grads": 4 * 32 * 4, "optimizer": (4 + 32 + 1) * 4}


def test_fsdp_shards_are_ceil_rows_and_the_columns_stay_whole(make_model):
    model = make_model("shallow")
    shards = model_state(model, gpus=3)
    by_hand = by_hand_params = 0
    for p in model.parameters():
        rows = math.ceil(p.shape[0] / 3)
        by_hand_params += rows * (p.numel() // p.shape[0]) * 4
        by_hand += 4 * (rows + p.shape[1] + 1 if p.dim() == 2 else rows + 1)
    assert shards == {"params": by_hand_params, "grads": by_hand_params, "optimizer": by_hand}
    # the root unit (embeddings, LM head, prompt, final norms) stays gathered, and two blocks at a time: the largest
    # are the first of each stack (they also hold the relative position bias), of the decoder (cross-attention too)
    from transformers.models.t5.modeling_t5 import T5Block

    sizes = [sum(p.numel() for p in b.parameters()) * 4 for b in model.modules() if isinstance(b, T5Block)]
    total = sum(p.numel() for p in model.parameters()) * 4
    largest = sum(p.numel() for p in model.transformer.decoder.block[0].parameters()) * 4
    assert len(sizes) == 4 and largest == max(sizes)
    blocks = sum(sizes)
    assert gathered(model, FSDPConfig()) == {"params": total - blocks + 2 * largest, "grads": total - blocks + largest}
    assert gathered(model, FSDPConfig(reshard_after_forward=False))["params"] == total
    assert gathered(model, FSDPConfig(wrap="model")) == {"params": total, "grads": total}


def _saved_on_cpu(model: nn.Module, batch: int, source: int, target: int) -> int:
    """What a real forward pass on CPU makes autograd save, parameters excepted."""
    saved: list[weakref.ref] = []

    def pack(t):
        saved.append(weakref.ref(t))  # alive at the end: held by the graph for the backward
        return t

    ids = torch.randint(2, 20, (batch, source))
    mask = torch.ones_like(ids)
    mask[0, -1] = 0  # padding, so that Transformers builds the attention masks, as it does on fake tensors
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, attention_mask=mask, labels=ids[:, :target].contiguous())
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    alive = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for ref in saved if (t := ref()) is not None}
    del out  # (live storages never share an address)
    return sum(n for ptr, n in alive.items() if ptr not in params)


@pytest.mark.parametrize(("prompt", "preset"), [("shallow", "all"), ("deep", "mtl-p"), ("none", "mtl-t")])
def test_activations_measured_on_the_meta_device_are_what_a_real_pass_saves(make_model, prompt, preset):
    real = make_model(prompt)
    real.freeze(preset)
    with torch.device("meta"):
        shaped = make_model(prompt)
    shaped.freeze(preset)
    measured, saved = activation_bytes(shaped, 3, 12, 5), _saved_on_cpu(real, 3, 12, 5)
    # Fake tensors lay out a few of attention's reshaped copies differently (and keep a frozen norm weight apart
    # from the parameter): within 12% on this model, where attention is a large part (the frozen deep case
    # measured 10.3% under a real pass once T5's GELU became one kernel, 8% before).
    assert abs(measured - saved) <= 0.12 * saved, (measured, saved)
    assert abs(activation_bytes(shaped, 6, 12, 5) - 2 * measured) <= 0.02 * measured  # linear in the batch


def test_plan_extrapolates_the_activations_of_deep_stacks_exactly(tmp_path, tiny_tokenizer):
    from promptability.model.prompted import PromptedSeq2SeqLM
    from promptability.model.tiny import tiny_t5

    small = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=5, num_decoder_layers=5)
    PromptedSeq2SeqLM(tiny_t5(len(tiny_tokenizer), seed=0, **small), tiny_tokenizer).save(tmp_path / "m")
    config = TrainConfig(method="mtl-tp", prompt="deep", prompt_length=3, model=str(tmp_path / "m"),
                         micro_batch_size=2).validate()  # fmt: skip
    config.data.max_source_len, config.data.max_target_len = 16, 4
    plan = make_plan(config, gpus=2)
    full = shape_model(config)
    full.freeze("all")
    assert plan["memory"]["ddp"]["activations"] == activation_bytes(full, 2, 16, 4)  # measured at full depth
    m = plan["memory"]
    assert m["ddp"]["total"] == sum(v for k, v in m["ddp"].items() if k != "total")
    assert m["ddp"]["ddp_buckets"] == m["ddp"]["grads"] and m["fsdp"]["params"] < m["ddp"]["params"] / 2 + 4096


def test_memory_per_gpu_checks_gpus_and_cli_prints_both_strategies(capsys):
    with pytest.raises(ValueError, match="gpus must be >= 1"):
        memory_per_gpu(nn.Linear(2, 2), gpus=0, activations=0)
    assert memory_per_gpu(nn.Linear(2, 2), gpus=1, activations=0)["ddp"]["ddp_buckets"] == 0  # no DDP alone
    assert main(["plan", "configs/t5-large-mtl-tp-shallow.yaml", "--gpus", "16", "--set", "micro_batch_size=1"]) == 0
    text = capsys.readouterr().out
    assert "per GPU on 16 GPUs, micro-batch 1 at 768+192 tokens" in text
    assert "  ddp      " in text and "  fsdp     " in text
