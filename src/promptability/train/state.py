"""Pickle-free (de)serialisation of training state, and the random generators' state.

``save_state`` / ``load_state`` store any nested structure of dicts, lists,
tuples, numbers, strings and tensors as two files: ``NAME.safetensors`` (every
tensor, under the path it had in the structure) and ``NAME.json`` (the rest,
with tensors replaced by references). Optimizer state, a train step's data
position and RNG states all go through it, so a checkpoint never holds pickle.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from promptability.io import write_json_atomic

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"


# ----- nested state <-> (tensors, JSON) ------------------------------------------------------------
def flatten_state(
    obj: Any, tensors: dict[str, torch.Tensor] | None = None, path: str = ""
) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(skeleton, tensors)``: a JSON-able skeleton whose tensor leaves name keys of ``tensors``."""
    tensors = {} if tensors is None else tensors
    if torch.is_tensor(obj):
        key = path or "root"
        # clone: safetensors refuses tensors that share memory (e.g. views of one buffer)
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {_TENSOR: key}, tensors
    if isinstance(obj, np.ndarray):
        return flatten_state(torch.from_numpy(np.ascontiguousarray(obj)), tensors, path)
    if isinstance(obj, np.generic):
        return obj.item(), tensors
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: flatten_state(v, tensors, f"{path}.{k}" if path else k)[0] for k, v in obj.items()}, tensors
        items = [[k, flatten_state(v, tensors, f"{path}.{k}" if path else str(k))[0]] for k, v in obj.items()]
        return {_ITEMS: items}, tensors
    if isinstance(obj, tuple):
        return {_TUPLE: [flatten_state(v, tensors, f"{path}.{i}")[0] for i, v in enumerate(obj)]}, tensors
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{path}.{i}")[0] for i, v in enumerate(obj)], tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot store a {type(obj).__name__} at '{path or 'root'}' in training state (no pickle)")


def unflatten_state(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if _TUPLE in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton[_TUPLE])
        if _ITEMS in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton[_ITEMS]}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(directory: str | os.PathLike, name: str, obj: Any) -> None:
    """Writes ``name.safetensors`` and ``name.json`` in ``directory``."""
    directory = Path(directory)
    skeleton, tensors = flatten_state(obj)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    write_json_atomic(directory / f"{name}.json", skeleton, indent=None)


def load_state(directory: str | os.PathLike, name: str) -> Any:
    import json

    directory = Path(directory)
    skeleton = json.loads((directory / f"{name}.json").read_text())
    tensors = load_file(str(directory / f"{name}.safetensors"))
    return unflatten_state(skeleton, tensors)


# ----- optimizer state ----------------------------------------------------------------------------
def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    groups = state["param_groups"]
    if len(groups) != len(optimizer.param_groups) or any(
        len(g["params"]) != len(h["params"]) for g, h in zip(groups, optimizer.param_groups, strict=True)
    ):
        raise ValueError(
            "the checkpoint's optimizer state does not fit the trainable parameters "
            f"({[len(g['params']) for g in groups]} saved vs {[len(g['params']) for g in optimizer.param_groups]}); "
            "was it written with another --method or --prompt?"
        )
    # JSON turned Adafactor's eps tuple into a list; give the optimizer its own hyperparameters back.
    fixed = [
        {**g, **{k: v for k, v in h.items() if k != "params"}}
        for g, h in zip(groups, optimizer.param_groups, strict=True)
    ]
    optimizer.load_state_dict({"state": {int(k): v for k, v in state["state"].items()}, "param_groups": fixed})


# ----- RNG ----------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states, storable with ``save_state``."""
    # get_state() with legacy=True (the default) returns the tuple; the stub also allows a dict
    kind, keys, pos, has_gauss, gauss = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": py_gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },  # fmt: skip
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, NumPy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device's generator, CUDA's too
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
