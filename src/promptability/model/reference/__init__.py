"""Importing the paper's released MTL checkpoints (allenai/better-promptability, on the Hub as
``ZhaofengWu/better-promptability`` ``mtl/*.tgz``) as promptability model folders.

``read``: the checkpoint's tensors, read without running anything from the file (and the ``.tgz`` streamed).
``convert``: the reference's names and deep-prompt layout mapped to ours, and ``import_reference``.
docs/reference-checkpoints.md is the user's guide.
"""

from promptability.model.reference.convert import import_reference
from promptability.model.reference.read import ReferenceCheckpointError, read_state_dict

__all__ = ["ReferenceCheckpointError", "import_reference", "read_state_dict"]
