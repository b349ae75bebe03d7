"""``load_model``: one entry point for Hub ids, Hugging Face directories, saved prompted models and "tiny"."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, T5ForConditionalGeneration

from promptability.io import BadFileError, blame_file, read_json_file
from promptability.model.causal import PromptedCausalLM
from promptability.model.named import NAMED_MODELS, installed_path
from promptability.model.prompted import (
    CONFIG_FILE,
    PROMPT_FILE,
    STAGING,
    STAGING_COMPLETE,
    PromptedSeq2SeqLM,
    PromptSettingsError,
)
from promptability.model.prompts import NO_PROMPT
from promptability.model.prompts.deep import DEFAULT_DEEP_INIT


def load_model(
    name_or_path: str | os.PathLike,
    prompt: str | None = None,
    prompt_length: int | None = None,
    seed: int = 0,
    deep_init: str = DEFAULT_DEEP_INIT,
    **kwargs,
) -> PromptedSeq2SeqLM | PromptedCausalLM:
    """Loads a T5-family model (or a decoder-only causal LM) with an optional soft prompt.

    - ``"tiny"``: the offline default, a freshly initialised tiny T5 and a tokenizer trained on the offline suite.
    - a named model (``"smollm2-135m"``, see ``promptability.model.named``) once ``promptability model install`` put it
      in the model home.
    - a saved PromptedSeq2SeqLM directory: prompt settings come from its ``promptability.json``; asking for
      a different prompt kind or length than it holds raises PromptSettingsError naming both. A checkpoint
      without a prompt may be given a fresh one (few-shot tuning of an ``mtl-t`` model does that).
    - a prompt-only save: its base model is loaded first, then the prompt.
    - any other Hugging Face directory or Hub id: ``T5ForConditionalGeneration.from_pretrained``, or, when its
      config is not an encoder-decoder (Llama, GPT-2, ...), ``AutoModelForCausalLM.from_pretrained`` wrapped in a
      PromptedCausalLM. Saved PromptedCausalLM directories record ``"architecture": "causal"``.
    ``prompt`` defaults to the checkpoint's kind (or "none"), ``prompt_length`` to 20. ``deep_init``: how a
    fresh deep prompt starts (``DEEP_INITS``); a checkpoint's saved deep prompt keeps the init it records.
    """
    name = resolve_named(str(name_or_path))
    path = Path(name)
    if (path / STAGING / STAGING_COMPLETE).is_file():
        raise BadFileError(
            f"{path}: its final save was interrupted half-way; run the same `promptability pretrain ... --resume` "
            "to finish it"
        )
    if not (path / CONFIG_FILE).is_file():
        return _load_plain(name, prompt or NO_PROMPT, prompt_length or 20, seed, deep_init, **kwargs)
    settings = read_json_file(path / CONFIG_FILE, "model settings", ("prompt", "prompt_length"))
    saved_kind, saved_length = settings["prompt"], settings["prompt_length"]
    kind = prompt or saved_kind
    length = prompt_length or (saved_length if saved_kind != NO_PROMPT else 20)
    if saved_kind != NO_PROMPT and (kind != saved_kind or length != saved_length):
        raise PromptSettingsError(
            f"{name} holds a {saved_kind} prompt of length {saved_length}, "
            f"but a {kind} prompt of length {length} was requested"
        )
    if settings.get("prompt_only"):
        base = saved_base(path, settings)
        model = load_model(base, prompt=kind, prompt_length=length, seed=seed, deep_init=deep_init, **kwargs)
        model.base_model = settings["base_model"]
    else:
        causal = settings.get("architecture") == "causal"
        reading = blame_file(path / "model.safetensors", "the model's weights")
        model = _from_pretrained(name, causal, reading, kind, length, seed, deep_init, **kwargs)
    if saved_kind != NO_PROMPT:
        model.deep_init = settings.get("deep_init", model.deep_init)
        with blame_file(path / PROMPT_FILE, "the prompt"):
            state = load_file(str(path / PROMPT_FILE))
        assert model.prompt is not None  # a saved prompt kind builds a prompt
        missing, unexpected = model.prompt.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise PromptSettingsError(
                f"{path / PROMPT_FILE} does not fit the model: missing {missing}, unexpected {unexpected}"
            )
    return model


def _load_plain(
    name: str, prompt: str, prompt_length: int, seed: int, deep_init: str, **kwargs
) -> PromptedSeq2SeqLM | PromptedCausalLM:
    """A model that is not a promptability folder: "tiny", a Hugging Face folder or a Hub id."""
    if name == "tiny":
        from promptability.model.tiny import build_tokenizer, default_corpus, tiny_t5

        corpus, vocab_size = kwargs.pop("corpus", None), kwargs.pop("vocab_size", 4000)
        tokenizer = build_tokenizer(corpus if corpus is not None else default_corpus(), vocab_size=vocab_size)
        transformer = tiny_t5(len(tokenizer), seed=seed, **kwargs)
        return PromptedSeq2SeqLM(
            transformer, tokenizer, prompt, prompt_length, seed=seed, base_model=base_name(name), deep_init=deep_init
        )
    if not Path(name).exists():
        # a path (not an "owner/name" Hub id) that is not there
        if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
            raise FileNotFoundError(f"model path {name} does not exist")
        fail_fast_offline(name)
    return _from_pretrained(name, _is_causal(name), nullcontext(), prompt, prompt_length, seed, deep_init, **kwargs)


def _from_pretrained(
    name: str, causal: bool, reading: AbstractContextManager, prompt: str, prompt_length: int, seed: int,
    deep_init: str, **kwargs,
) -> PromptedSeq2SeqLM | PromptedCausalLM:  # fmt: skip
    """The Hugging Face model ``name`` (its weights read inside ``reading``) and its tokenizer, with a fresh prompt."""
    auto = AutoModelForCausalLM if causal else T5ForConditionalGeneration
    with reading:
        transformer = auto.from_pretrained(name, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name)
    wrapper = PromptedCausalLM if causal else PromptedSeq2SeqLM
    return wrapper(transformer, tokenizer, prompt, prompt_length, seed, base_name(name), deep_init)


class HubUnreachableError(OSError):
    """A model named by Hub id that is neither local nor cached, while the Hub cannot be reached."""


def fail_fast_offline(hub_id: str) -> None:
    """A Hub id that is not cached, with no network: say so at once, not after a minute of download retries."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        return  # offline mode fails fast by itself; a cached model needs no network
    try:
        HfApi().model_info(hub_id, timeout=10)
    except HfHubHTTPError:
        return  # the Hub answered (a missing or gated repository): transformers' own error says which
    except Exception as err:  # no answer at all: no network, DNS, refused connection, timeout
        raise HubUnreachableError(
            f"{hub_id}: not a local folder, not in the Hugging Face cache, and the Hub cannot be reached "
            f"({type(err).__name__}: {err}); pass a local folder, or download it where the Hub is reachable"
        ) from err


def _is_causal(name: str) -> bool:
    """True for a decoder-only model (its config is not an encoder-decoder)."""
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return False  # let T5ForConditionalGeneration.from_pretrained raise its own error
    return not getattr(config, "is_encoder_decoder", False)


def resolve_named(name: str) -> str:
    """An installed named model's folder for its name (``installed_path``); any other name or path as it is."""
    return str(installed_path(name)) if name in NAMED_MODELS and not Path(name).exists() else name


def saved_base(path: Path, settings: dict) -> str:
    """The base model a prompt-only save at ``path`` names; a folder given relative to the save is found there."""
    base = str(settings["base_model"])
    return str(path / base) if not Path(base).exists() and (path / base).exists() else base


def base_name(name: str) -> str:
    return str(Path(name).resolve()) if Path(name).exists() else name


def model_info(path: str | os.PathLike) -> dict:
    """What a model directory says about itself: promptability.json, then train.json (from pretrain) over it."""
    info: dict = {}
    for name in (CONFIG_FILE, "train.json"):
        f = Path(path) / name
        if f.is_file():
            info.update(read_json_file(f, "model description"))
    return info


def model_size(name_or_path: str | os.PathLike, info: dict | None = None) -> str:
    """The size label reports group runs by: the ``model_size`` a trained model dir records, else the name of the
    model it starts from (its ``base_model``, or itself). ``info``: its ``model_info``, when already read."""
    info = model_info(name_or_path) if info is None else info
    return info.get("model_size") or Path(str(info.get("base_model") or name_or_path)).name
