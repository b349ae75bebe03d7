"""Prompted examples: records, readers (P3, JSONL/Parquet, the offline suite) and batching."""

from promptability.data.schema import DataError, Example, validate

__all__ = ["DataError", "Example", "validate"]
