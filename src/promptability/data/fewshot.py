"""Few-shot training sets: seeded k-shot samples and the paper's reference 16-shot subsamples.

Pools come from each template's training split (``train_split_for``: StoryCloze has no
train split, so its validation split is the pool). The reference subsamples
(``registry.reference_fewshot``) list 16 instance indices per template; for
``_score_eval`` templates they count instances after grouping the per-choice rows.
Their checksum is the hex md5 of the concatenation, over the chosen instances in the
listed order, of ``str(inputs + targets)``: the token-id list ``inputs`` followed by
``targets`` (the target id list, or for ``_score_eval`` one id list per choice).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from promptability.data import registry
from promptability.data.p3 import P3Instance, group_p3_rows, instance_to_example, p3_format, read_p3_instances
from promptability.data.readers import train_split_for
from promptability.data.schema import DataError, Example


class ChecksumError(DataError):
    """The selected few-shot instances do not match the reference checksum."""


def sample_fewshot(
    records: Iterable[Example], k: int = 16, seed: int = 0, *, strict: bool = True
) -> dict[str, list[Example]]:
    """``k`` records per template, drawn without replacement from that template's pool.

    Each template gets its own generator seeded with ``(seed, template)``, so a sample
    does not change when other templates are added or removed. A pool smaller than ``k``
    is an error, or (``strict=False``) is returned whole in shuffled order.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    pools: dict[str, list[Example]] = {}
    for record in records:
        pools.setdefault(record["task"], []).append(record)
    out: dict[str, list[Example]] = {}
    for task, pool in pools.items():
        if len(pool) < k and strict:
            raise DataError(f"template '{task}': its few-shot pool has {len(pool)} examples, fewer than k={k}")
        rng = random.Random(f"{seed}:{task}")  # str seeds hash with sha512: stable across runs
        out[task] = [pool[i] for i in rng.sample(range(len(pool)), min(k, len(pool)))]
    return out


def _as_ids(value: Any) -> Any:
    return [_as_ids(v) for v in value] if isinstance(value, (list, tuple)) else int(value)


def fewshot_md5(instances: Iterable[Mapping[str, Any]]) -> str:
    """Hex md5 of the concatenated ``str(inputs + targets)`` of ``instances`` (token ids)."""
    digest = hashlib.md5()
    for inst in instances:
        # int() first: str() of numpy integers would read "np.int64(…)" and change the sum
        ids = _as_ids(list(inst["inputs"])) + _as_ids(list(inst["targets"]))
        digest.update(str(ids).encode("utf-8"))
    return digest.hexdigest()


def _reference(template: str, kind: str | None) -> dict[str, Any]:
    kinds = [kind] if kind else ["heldout", "dev"]
    for name in kinds:
        ref = registry.reference_fewshot(name)
        if template in ref:
            return dict(ref[template])
    raise DataError(
        f"no reference few-shot subsample for template '{template}' (looked in: {', '.join(kinds)}); "
        "they exist for the held-out and dev templates"
    )


def has_reference_subsample(template: str) -> bool:
    """Whether the package holds the paper's reference 16-shot subsample of ``template`` (held-out or dev)."""
    return any(template in registry.reference_fewshot(kind) for kind in ("heldout", "dev"))


def p3_template_folder(template: str, path: str | os.PathLike[str]) -> Path | None:
    """The P3 folder of ``template`` at ``path`` (that folder itself, or ``path/[data/]template``), else None."""
    p = Path(path)
    for folder in (p, p / template, p / "data" / template):
        if p3_format(folder) is not None and (folder == p or folder.name == template):
            return folder
    return None


def _train_instances(template: str, rows: str | os.PathLike[str] | Iterable[dict[str, Any]]) -> list[P3Instance]:
    if not isinstance(rows, (str, os.PathLike)):
        return list(group_p3_rows(rows, origin=f"training rows of '{template}'"))
    folder = p3_template_folder(template, rows)
    if folder is None:
        raise DataError(f"{rows}: neither a P3 template folder nor a directory holding '{template}'")
    return read_p3_instances(folder, train_split_for(template))


def reference_fewshot_subsample(
    template: str,
    p3_train_rows: str | os.PathLike[str] | Iterable[dict[str, Any]],
    *,
    kind: str | None = None,
) -> list[Example]:
    """The reference 16-shot records of ``template``, checked against the reference md5.

    ``p3_train_rows``: the template's P3 folder (or a directory holding it), or its raw
    training-split rows (the ``_score_eval`` per-choice rows ungrouped). ``kind`` is
    "heldout" or "dev"; by default both are searched. Raises ``ChecksumError`` when the
    data is not the P3 release the subsample was drawn from.
    """
    ref = _reference(template, kind)
    instances = _train_instances(template, p3_train_rows)
    indices = [int(i) for i in ref["indices"]]
    split = train_split_for(template)
    beyond = [i for i in indices if not 0 <= i < len(instances)]
    if beyond:
        raise DataError(
            f"template '{template}': reference few-shot indices {beyond} are outside its {split} split, which has "
            f"{len(instances)} instances (is this the full P3 split?)"
        )
    chosen = [instances[i] for i in indices]
    got = fewshot_md5(chosen)
    if got != ref["md5"]:
        raise ChecksumError(
            f"template '{template}': the reference few-shot instances {indices} of the {split} split have md5 {got}, "
            f"expected {ref['md5']}; the data differs from the P3 release the subsample was drawn from"
        )
    return [instance_to_example(inst, template, f"{template} [{split}]") for inst in chosen]
