"""promptability: continued pretraining for better zero- and few-shot promptability (Wu et al., EMNLP 2022)."""

from promptability.model import PromptedSeq2SeqLM, PromptSettingsError, load_model

__version__ = "0.1.0"
__all__ = ["PromptSettingsError", "PromptedSeq2SeqLM", "load_model"]
