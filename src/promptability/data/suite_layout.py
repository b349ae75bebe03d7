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


def find_meta(path: str | os.PathLike, parents: int = 0) -> dict[str, Any] | None:
    """suite.json of the suite folder ``path`` is (or lies in, up to ``parents`` levels up), else None.

    The one way to find a suite: readers ask about the folder itself; ARG groups also look above a
    split folder (``--data suite/validation``).
    """
    here = Path(path)
    for folder in [here, *here.parents][: parents + 1]:
        if (folder / META_FILE).is_file():
            return read_meta(folder)
    return None
