"""Run by tests/train/test_distributed_fsdp.py under `torch.distributed.run` (2 processes, gloo, CPU).

Trains the small test model of dist_worker.py with ``distributed=fsdp`` for 3 steps (one run through; one run of
2 steps, then resumed from its checkpoint to step 3) and has rank 0 save the final parameters into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from datasets import load_from_disk
from safetensors.torch import save_file

from promptability.train import distributed, loop
from promptability.train.config import TrainConfig
from promptability.train.distributed import FSDPConfig
from promptability.train.loop import make_accelerator, train
from promptability.train.methods import build_step

import dist_worker

METHODS = ("mtl-tp", "mtl-p")
STEPS = 3


def run(method: str, inputs: Path, out: Path, accelerator, steps: int, fsdp: FSDPConfig | None, resume: bool = False):
    """``method`` on a fresh model for ``steps`` steps, checkpoints in ``out``; returns the trained model."""
    model = dist_worker.build_model(inputs)
    config = TrainConfig(method=method, prompt="shallow", batch_size=8, micro_batch_size=2,
                         distributed="fsdp" if fsdp else "ddp")  # fmt: skip
    config.validate()
    step = build_step(method, model, load_from_disk(str(inputs / "data")), config, accelerator)
    train(model, step, accelerator, max_steps=steps, out_dir=out, save_every=0, resume=resume, progress=False,
          seed=0, fsdp=fsdp)  # fmt: skip
    return model


def _checked_prepare(step, model, accelerator, fsdp):
    """The loop's ``prepare_model``, asserting that every parameter it trains is split over the two processes."""
    from torch.distributed.tensor import DTensor

    base, wrapped = _prepare(step, model, accelerator, fsdp)
    for name, p in base.named_parameters():
        first = -(-p.shape[0] // 2)  # rank 0 holds ceil(rows / 2), rank 1 the rest
        rows = first if torch.distributed.get_rank() == 0 else p.shape[0] - first
        assert isinstance(p, DTensor) and p.to_local().shape[0] == rows, name
    print("sharded", flush=True)
    return base, wrapped


_prepare = distributed.prepare_model
OPTIMIZERS: list[torch.optim.Optimizer] = []  # the loop's, to measure the sharded state it holds


def _kept_optimizer(params, lr):
    OPTIMIZERS.append(_build(params, lr))
    return OPTIMIZERS[-1]


_build = loop.build_optimizer


def local_bytes(optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(parameter bytes, Adafactor state bytes) this process holds: the local shards."""

    def local(t):
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    params = sum(local(p) for g in optimizer.param_groups for p in g["params"])
    return params, sum(local(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))


def save_params(model: torch.nn.Module, path: Path) -> None:
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, str(path))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    distributed.prepare_model, loop.build_optimizer = _checked_prepare, _kept_optimizer  # here only, not on import
    accelerator = make_accelerator("fp32", cpu=True)
    inputs, out = Path(args.inputs), Path(args.out)
    fsdp = FSDPConfig()
    for method in METHODS:
        model = run(method, inputs, out / method, accelerator, STEPS, fsdp)
        params, state = local_bytes(OPTIMIZERS[-1])
        if accelerator.is_main_process:
            print(f"{method} rank0 trained-param-bytes={params} adafactor-bytes={state}", flush=True)
        run(method, inputs, out / f"{method}-resumed", accelerator, STEPS - 1, fsdp)
        resumed = run(method, inputs, out / f"{method}-resumed", accelerator, STEPS, fsdp, resume=True)
        if accelerator.is_main_process:
            save_params(model, out / f"{method}.safetensors")
            save_params(resumed, out / f"{method}-resumed.safetensors")
            print(f"{method} world={accelerator.num_processes} done", flush=True)


if __name__ == "__main__":
    main()
