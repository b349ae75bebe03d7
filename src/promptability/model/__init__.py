"""T5-family models with soft prompts: the prompt modules, the prompted model, loading."""

from promptability.model.loading import load_model
from promptability.model.prompted import PRESETS, PromptedSeq2SeqLM, PromptSettingsError
from promptability.model.prompts import PROMPT_KINDS

__all__ = ["PRESETS", "PROMPT_KINDS", "PromptSettingsError", "PromptedSeq2SeqLM", "load_model"]
