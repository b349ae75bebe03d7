"""The mixing cap's unit: per template, or per dataset shared by the dataset's templates.

The paper's reference code caps every template (a P3 config) at 500k examples, and that produced the
paper's numbers. T0 (and the paper's text) speak of a cap per dataset: T0 gave each template of a
dataset with n templates ``500_000 // n`` (``MAX_EXAMPLES_PER_DATASET // num_templates``; T0 counted
every promptsource template of the dataset and applied it only to datasets of over 500k examples).
``cap_per="dataset"`` here splits the cap evenly over the dataset's templates present in the mixture,
so that no dataset contributes more than ``cap`` examples.

Which dataset a template renders (``template_datasets``): for a P3 name, its (dataset, subset) from
the registry; for a suite template, the dataset suite.json names; any other template is its own dataset.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping

CAP_PER = ("template", "dataset")


def template_datasets(templates: Iterable[str], path: str | os.PathLike | None = None) -> dict[str, str]:
    """``{template: dataset}``; ``path`` is the data, where a suite's suite.json says its datasets."""
    from promptability.data import registry
    from promptability.data.suite_layout import find_meta

    suite = (find_meta(path) or {}).get("templates", {}) if path is not None else {}
    out = {}
    for template in templates:
        try:
            out[template] = registry.template_dataset(template)
        except KeyError:
            known = suite.get(template, {}).get("dataset")
            out[template] = f"suite:{known}" if known else template
    return out


def template_caps(
    templates: Iterable[str], cap: int | None, cap_per: str = "template", datasets: Mapping[str, str] | None = None
) -> dict[str, int | None]:
    """Each template's cap (None: uncapped). ``datasets``: ``{template: dataset}``, for ``cap_per="dataset"``.

    A template missing from ``datasets`` is its own dataset; a dataset's templates share ``cap`` as
    ``cap // n`` each (at least 1).
    """
    names = list(templates)
    if cap_per not in CAP_PER:
        raise ValueError(f"cap_per must be one of {', '.join(CAP_PER)}, got {cap_per!r}")
    if cap is None or cap_per == "template":
        return dict.fromkeys(names, cap)
    of = {t: (datasets or {}).get(t, t) for t in names}
    per_dataset = Counter(of.values())
    return {t: max(1, cap // per_dataset[of[t]]) for t in names}
