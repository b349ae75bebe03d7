"""The offline suite's folder, as its readers need it: where ``suite.json`` is and what it says per template.

Layout: ``{suite}/{split}/{template}.jsonl`` (records: task, source, target, choices, label) and
``{suite}/suite.json`` (format, seed, size, per-template cluster, role, group, num_choices and counts).
Generating and writing a suite is ``promptability.suite.generate``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT = "promptability-suite/1"
META_FILE = "suite.json"


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """suite.json of a written suite (``path`` the folder or the file)."""
    path = Path(path)
    file = path / META_FILE if path.is_dir() else path
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no suite here; write one with `promptability data suite --out DIR`") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file}: field 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def suite_groups(
    meta_or_dir: dict[str, Any] | str | os.PathLike, role: str | None = "heldout"
) -> dict[str, dict[str, Any]]:
    """``{template: {"group", "num_choices"}}`` for the metrics (held-out templates by default; None for all)."""
    meta = meta_or_dir if isinstance(meta_or_dir, dict) else read_meta(meta_or_dir)
    if "templates" not in meta:
        raise ValueError("suite metadata has no field 'templates'")
    return {
        t: {"group": info["group"], "num_choices": info["num_choices"]}
        for t, info in meta["templates"].items()
        if role is None or info["role"] == role
    }
