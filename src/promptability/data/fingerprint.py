"""Content fingerprints: what a tokenized cache entry (or a resumable result) is keyed on.

A key hashes content, never a path's size or mtime: an edit that keeps both must not reuse
stale tokens. Tokenizers are identified by class, name, size, special ids and a vocabulary hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from promptability.data.schema import validate_all


def sha256_hex(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """What identifies a tokenizer's output: class, name, size, special ids and a vocab hash."""
    info: dict[str, Any] = {
        "class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
        "name": str(getattr(tokenizer, "name_or_path", "") or ""),
        "size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # tokenizer.json holds the model, normalizer and added tokens: all that changes ids.
        info["tokenizer_json"] = sha256_hex(backend.to_str())
    else:
        vocab = json.dumps(tokenizer.get_vocab(), sort_keys=True, ensure_ascii=False)
        kwargs = json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str)
        info["vocab"] = sha256_hex(vocab)
        info["init_kwargs"] = sha256_hex(kwargs)
        vocab_file = getattr(tokenizer, "vocab_file", None)
        if isinstance(vocab_file, (str, os.PathLike)) and os.path.isfile(vocab_file):
            info["vocab_file"] = sha256_hex(Path(vocab_file).read_bytes())
    return info


def records_fingerprint(records: Iterable[Mapping[str, Any]]) -> str:
    """Hash of the (validated, normalised) record content, in order."""
    digest = hashlib.sha256()
    for record in validate_all(records):  # one JSON line per record
        line = [record["task"], record["source"], record["target"], record["choices"], record["label"]]
        digest.update(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def _file_sha(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def files_fingerprint(files: Sequence[str | os.PathLike]) -> str:
    """Hash of absolute paths and contents (directories are walked, e.g. save_to_disk folders).

    Content, not size and mtime: an edit that keeps both (a copy with ``cp -p``, a
    same-length fix) must not reuse stale tokens. Paths stay in: a JSONL file's name can
    be its records' task.
    """
    entries = []
    for given in files:
        path = Path(given).resolve()
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist (named in files=)")
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        entries += [[str(p), _file_sha(p)] for p in found]
    return sha256_hex(json.dumps(entries))
