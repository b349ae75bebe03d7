"""Two processes (gloo, CPU) x half the global batch == one process x the whole batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from promptability.data.tokenize import tokenize_records

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dist_worker  # noqa: E402
from conftest import make_records  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(
    root: Path, worker: str, tokenizer, timeout: int
) -> tuple[Path, Path, Path, subprocess.CompletedProcess]:
    """The shared inputs (tokenizer, 32 tokenized records) under ``root`` and ``worker`` run on 2 gloo processes.

    Returns (inputs, one, two, the finished process): ``two`` holds the workers' outputs, ``one`` is for the
    caller's one-process reference.
    """
    inputs, one, two = root / "inputs", root / "one", root / "two"
    for d in (inputs, one, two):
        d.mkdir()
    tokenizer.save_pretrained(inputs / "tokenizer")
    tokenize_records(make_records(32), tokenizer, use_cache=False).dataset.save_to_disk(str(inputs / "data"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / worker), "--inputs", str(inputs), "--out", str(two)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return inputs, one, two, proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer):
    from promptability.train.loop import make_accelerator

    inputs, one, two, proc = launch_two(tmp_path_factory.mktemp("dist"), "dist_worker.py", tiny_tokenizer, 240)
    # The one-process reference runs in this process: same inputs, same code.
    accelerator = make_accelerator("fp32", cpu=True)
    losses = {name: dist_worker.run(name, inputs, one, accelerator)["loss"] for name in dist_worker.VARIANTS}
    return one, two, losses, proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("method", list(dist_worker.VARIANTS))
def test_two_processes_equal_one(runs, method):
    one, two, losses, stdout = runs
    assert f"{method} world=2" in stdout
    single, double = load_file(str(one / f"{method}.safetensors")), load_file(str(two / f"{method}.safetensors"))
    assert single.keys() == double.keys() and len(single) > 20
    worst = max(float((single[k] - double[k]).abs().max()) for k in single)
    assert worst <= 1e-6, f"largest parameter difference {worst}"
    # ...and they did train: every trainable tensor moved away from the initialisation.
    init = dict(dist_worker.build_model(one.parent / "inputs").named_parameters())
    moved = [k for k in single if not torch.equal(single[k], init[k].detach())]
    assert moved == list(single)
    loss_two = float(stdout.split(f"{method} world=2 loss=")[1].split()[0])
    assert loss_two == pytest.approx(losses[method], abs=1e-5)
