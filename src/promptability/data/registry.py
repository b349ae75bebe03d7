"""The T0/P3 split registry, shipped inside the package (users do not have ../shared).

313 training templates, 116 held-out templates (with dataset group, number of
choices and evaluation-instance count) and 42 dev templates, as in Sanh et al.
(2022) and Wu et al. (2022).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _registry() -> dict[str, Any]:
    return json.loads(resources.files("promptability.assets").joinpath("t0_registry.json").read_text())


def train_templates() -> list[str]:
    """The 313 P3 training templates of the T0 mixture."""
    return list(_registry()["train"])


def heldout_templates() -> dict[str, dict[str, Any]]:
    """The 116 held-out templates: ``{name: {"group", "num_choices", "eval_instances"}}``.

    ANLI R1-R3 share the group "ANLI" (9 groups in all), as the paper pools them for ARG.
    """
    return {name: dict(info) for name, info in _registry()["heldout"].items()}


def dev_templates() -> list[str]:
    """The 42 development templates, disjoint from training and held-out."""
    return list(_registry()["dev"])


def all_templates() -> list[str]:
    """Every template of the registry: the held-out ones, then dev, then training."""
    return [*_registry()["heldout"], *_registry()["dev"], *_registry()["train"]]


def template_info(name: str) -> dict[str, str]:
    """Dataset, subset and promptsource template name behind a P3 config name."""
    try:
        return dict(_registry()["tasks"][name])
    except KeyError:
        raise KeyError(f"unknown P3 template '{name}'; `promptability data list` shows the known ones") from None


def template_dataset(name: str) -> str:
    """The ``dataset[/subset]`` a P3 template renders: "super_glue/rte", "anli/r1", "hellaswag"."""
    info = template_info(name)
    return info["dataset_name"] + (f"/{info['subset_name']}" if info["subset_name"] else "")


@cache
def reference_fewshot(kind: str = "heldout") -> dict[str, dict[str, Any]]:
    """The reference 16-shot subsamples: ``{template: {"indices": [...], "md5": hex}}``.

    ``kind`` is "heldout" or "dev". See ``promptability.data.fewshot`` for how the md5 is checked.
    """
    if kind not in ("heldout", "dev"):
        raise ValueError(f"kind must be 'heldout' or 'dev', got {kind!r}")
    return json.loads(resources.files("promptability.assets").joinpath(f"fewshot_16shot_{kind}.json").read_text())
