"""Run by tests/train/test_distributed.py under `torch.distributed.run` (2 processes, gloo, CPU).

Trains the small test model with MTL (mtl-tp; the config's defaults, i.i.d. steps and example
weighting, and the other choices, length bands and token weighting) and FOMAML for a few steps on the tokenizer and
tokenized data the test saved in --inputs (training a tokenizer is not deterministic across
processes), and has rank 0 save the final parameters into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from datasets import load_from_disk
from safetensors.torch import save_file
from transformers import AutoTokenizer

from promptability.model.prompted import PromptedSeq2SeqLM
from promptability.model.tiny import tiny_t5
from promptability.train.config import MetaConfig, TrainConfig, apply_overrides
from promptability.train.loop import make_accelerator, train
from promptability.train.methods import build_step

SMALL = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2)
# name -> (method, settings over the config below)
VARIANTS = {
    "mtl-tp": ("mtl-tp", {}),
    "mtl-tp-token-bands": ("mtl-tp", {"loss_weighting": "token", "data.step_composition": "length_bands"}),
    "fomaml": ("fomaml", {}),
}


def build_model(inputs: Path) -> PromptedSeq2SeqLM:
    tokenizer = AutoTokenizer.from_pretrained(inputs / "tokenizer")
    return PromptedSeq2SeqLM(tiny_t5(len(tokenizer), seed=0, **SMALL), tokenizer, "shallow", 4, seed=0, base_model="t")


def run(name: str, inputs: Path, out: Path, accelerator, steps: int = 3) -> dict[str, float]:
    method, overrides = VARIANTS[name]
    model = build_model(inputs)
    data = load_from_disk(str(inputs / "data"))
    config = TrainConfig(method=method, prompt="shallow", batch_size=8, micro_batch_size=2,
                         # carried inner-optimizer state would depend on which rank saw which task
                         meta=MetaConfig(meta_batch_size=4, inner_steps=1, task_batch_size=2, carry_inner_state=False))  # fmt: skip
    apply_overrides(config, overrides)
    step = build_step(method, model, data, config, accelerator)
    result = train(model, step, accelerator, max_steps=steps, progress=False, seed=0)
    if accelerator.is_main_process:
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, str(out / f"{name}.safetensors"))
    return result.last


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    accelerator = make_accelerator("fp32", cpu=True)
    out = Path(args.out)
    for name in VARIANTS:
        last = run(name, Path(args.inputs), out, accelerator)
        if accelerator.is_main_process:
            print(f"{name} world={accelerator.num_processes} loss={last['loss']:.6f}", flush=True)


if __name__ == "__main__":
    main()
