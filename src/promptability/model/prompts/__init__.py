"""Soft prompt kinds, one file each, and the registry that names them.

A kind is a :class:`Prompt` subclass that builds, initialises and attaches
itself (as a PEFT tuner is one folder). Adding one is its file here and one
line in ``PROMPT_KINDS``; the models, the configs' validation, the CLI's
``--prompt`` choices and the report's columns all read the registry
(docs/extending.md walks through an example). ``"none"`` is not a kind: it is
the absence of a prompt (``model.prompt is None``).
"""

from promptability.model.prompts.base import Prompt, init_token_ids
from promptability.model.prompts.deep import DeepPrompt
from promptability.model.prompts.shallow import ShallowPrompt

NO_PROMPT = "none"
# Name -> kind. The order is the report's column order.
PROMPT_KINDS: dict[str, type[Prompt]] = {
    "shallow": ShallowPrompt,
    "deep": DeepPrompt,
}
# The kind trained when a method needs a prompt and none was named.
DEFAULT_PROMPT = "shallow"


def prompt_names() -> tuple[str, ...]:
    """Every value a ``prompt`` setting may take: "none", then the registered kinds."""
    return (NO_PROMPT, *PROMPT_KINDS)


def kind_of(name: str | None) -> type[Prompt] | None:
    """The registered kind called ``name``; None for "none" (and for no name)."""
    return None if name in (None, NO_PROMPT) else PROMPT_KINDS[name]


__all__ = [
    "DEFAULT_PROMPT",
    "NO_PROMPT",
    "PROMPT_KINDS",
    "DeepPrompt",
    "Prompt",
    "ShallowPrompt",
    "init_token_ids",
    "kind_of",
    "prompt_names",
]
