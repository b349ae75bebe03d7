"""distributed=fsdp: two processes (gloo, CPU) with sharded parameters, gradients and Adafactor state == one process."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from promptability.train.config import ConfigError, TrainConfig, apply_overrides
from promptability.train.distributed import FSDPConfig, prepare_model, transformer_blocks
from promptability.train.memory import model_state
from promptability.train.methods import METHODS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fsdp_worker  # noqa: E402
from test_distributed import launch_two  # noqa: E402

import dist_worker  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer):
    from promptability.train.loop import make_accelerator

    inputs, one, two, proc = launch_two(tmp_path_factory.mktemp("fsdp"), "fsdp_worker.py", tiny_tokenizer, 300)
    # The reference: one process, plain (unsharded) training of the same model on the same data.
    accelerator = make_accelerator("fp32", cpu=True)
    for method in fsdp_worker.METHODS:
        model = fsdp_worker.run(method, inputs, one / method, accelerator, fsdp_worker.STEPS, None)
        fsdp_worker.save_params(model, one / f"{method}.safetensors")
    return inputs, one, two, proc.stdout


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("method", fsdp_worker.METHODS)
def test_two_sharded_processes_equal_one_and_resume(runs, method):
    inputs, one, two, stdout = runs
    assert f"{method} world=2 done" in stdout and "sharded" in stdout
    single = load_file(str(one / f"{method}.safetensors"))
    assert _worst(single, load_file(str(two / f"{method}.safetensors"))) <= 1e-6
    assert _worst(single, load_file(str(two / f"{method}-resumed.safetensors"))) <= 1e-6
    # the trained tensors moved (all of them for mtl-tp, the prompt only for mtl-p), the frozen ones did not
    init = {n: p.detach() for n, p in dist_worker.build_model(inputs).named_parameters()}
    moved = {k for k in single if not torch.equal(single[k], init[k])}
    assert moved == (set(single) if method == "mtl-tp" else {k for k in single if k.startswith("prompt")})
    # The sharded run's checkpoint has the one-process format and numbers: the model and Adafactor's factored state.
    ckpt_one, ckpt_two = one / method / "checkpoints" / "step-3", two / method / "checkpoints" / "step-3"
    files = sorted(f.name for f in ckpt_one.rglob("*") if f.is_file() and not f.name.startswith("rng"))
    assert files == sorted(f.name for f in ckpt_two.rglob("*") if f.is_file() and not f.name.startswith("rng"))
    for name in ("optimizer.safetensors", *(f"model/{f.name}" for f in (ckpt_one / "model").glob("*.safetensors"))):
        a, b = load_file(str(ckpt_one / name)), load_file(str(ckpt_two / name))
        assert all(a[k].shape == b[k].shape for k in a) and _worst(a, b) <= 1e-6, name
    rows = [k for k in load_file(str(ckpt_two / "optimizer.safetensors")) if k.endswith("exp_avg_sq_row")]
    assert rows  # Adafactor factored the matrices (a shallow prompt is one) under FSDP as in one process
    assert (two / f"{method}-resumed" / "checkpoints" / "step-3" / "trainer.json").is_file()
    # one plain process resumes the 2-process FSDP checkpoint of step 2 and ends where one process does
    from promptability.train.loop import make_accelerator

    plain = two.parent / f"plain-from-fsdp-{method}"
    shutil.copytree(two / f"{method}-resumed" / "checkpoints" / "step-2", plain / "checkpoints" / "step-2")
    model = fsdp_worker.run(method, inputs, plain, make_accelerator("fp32", cpu=True), 3, None, resume=True)
    assert _worst(single, {n: p.detach() for n, p in model.named_parameters()}) <= 1e-6
    # plan's memory per GPU: exactly the shards rank 0 (the larger ones: ceil rows) held
    model = dist_worker.build_model(inputs)
    model.freeze(METHODS[method].freeze)
    held = model_state(model, gpus=2)
    assert f"{method} rank0 trained-param-bytes={held['grads']} adafactor-bytes={held['optimizer']}" in stdout


def test_fsdp_settings_are_checked():
    config = TrainConfig(method="mtl-tp")
    apply_overrides(config, {"distributed": "fsdp", "fsdp.wrap": "model", "fsdp.reshard_after_forward": False})
    assert config.validate().fsdp == FSDPConfig(reshard_after_forward=False, wrap="model")
    with pytest.raises(ConfigError, match="distributed must be one of ddp, fsdp, got 'zero3'"):
        TrainConfig(distributed="zero3").validate()
    with pytest.raises(ConfigError, match="fsdp.wrap must be one of block, model"):
        apply_overrides(TrainConfig(), {"fsdp.wrap": "layer"}).validate()
    for method in ("fomaml", "reptile"):
        with pytest.raises(ConfigError, match=f"{method} \\(meta-learning\\).*use distributed=ddp"):
            TrainConfig(method=method, distributed="fsdp").validate()


def test_one_process_trains_unsharded_and_blocks_are_found(make_model):
    from transformers.models.t5.modeling_t5 import T5Block

    model = make_model()
    assert {type(m) for m in transformer_blocks(model)} == {T5Block}

    class Step:  # a step that wraps the model as MTLStep does
        def prepare(self, model, accelerator):
            return ("prepared", model)

    class OneProcess:
        num_processes, process_index, device = 1, 0, torch.device("cpu")

    base, wrapped = prepare_model(Step(), model, OneProcess(), FSDPConfig())
    assert base is model and wrapped == ("prepared", model)  # nothing to shard over: the DDP path, untouched


def test_prepare_model_refuses_what_fsdp_cannot_shard_for_direct_callers():
    """TrainConfig.validate refuses both for training runs; prepare_model guards direct calls (no process group
    is needed: the checks come before any sharding)."""
    from types import SimpleNamespace

    from promptability.train.distributed import FSDPConfig, prepare_model

    two = SimpleNamespace(num_processes=2, process_index=0, device=torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="distributed=fsdp needs a step that trains through the model's own"):
        prepare_model(object(), model, two, FSDPConfig())
    with pytest.raises(ValueError, match="fsdp.wrap must be one of block, model, got 'layer'"):
        prepare_model(SimpleNamespace(prepare=None), model, two, FSDPConfig(wrap="layer"))
