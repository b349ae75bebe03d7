"""Render promptsource templates over raw dataset rows into project records, without promptsource.

Templates are promptsource's ``DATASET/[SUBSET/]templates.yaml`` files (shipped in the package for the
registry's datasets, ``shipped_templates()``; or any promptsource checkout's ``templates`` folder) (``!Template`` entries,
each a jinja ``source ||| target``). Rendering reproduces ``promptsource.templates.Template.apply``:
a jinja2 environment (here the immutable sandbox: templates are data and never run code) with its filters ``choice``, ``most_frequent``, ``highlight`` and the
global ``zip``; "-" in example keys becomes "_" (``removeHyphen``, which P3 applied); ``answer_choices``
rendered as a template of its own, split on ``|||`` and stripped; ``| string | truncate(2048)``
appended to every ``}}`` of the main template, as ``apply`` does by default (a field longer than
2053 characters is cut at a word and ends in "..."); ``|||`` inside top-level string fields hidden
behind a placeholder while rendering. One deliberate difference: ``choice`` draws from a
``random.Random`` seeded per example instead of the global ``random``, so renderings reproduce.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import yaml

from promptability.data import registry
from promptability.data.schema import validate

TEXT_VAR_LENGTH = 2048  # promptsource's truncation of every substituted value, in characters
PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"  # promptsource's placeholder for "|||"
_RNG = "__promptability_rng"  # render variable holding the per-example random.Random


class TemplateError(ValueError):
    """A template that cannot be found, read or rendered."""


@jinja2.pass_context
def _choice(context: jinja2.runtime.Context, choices: Any) -> Any:
    rng = context.get(_RNG)
    return (rng if rng is not None else random).choice(choices)


def _most_frequent(items: Any) -> list[Any] | None:
    """The items that occur most often (all of them on a tie), as promptsource's filter."""
    if not items:
        return None
    counts = Counter(items).most_common()
    return [item for item, n in counts if n == counts[0][1]]


# Templates are data: the immutable sandbox refuses attribute access to internals (``__globals__``,
# ``__class__``...) and any method that mutates a value, so a template cannot run code. Every
# promptsource template renders identically in it (tests/data/test_promptsource.py).
_ENV = jinja2.sandbox.ImmutableSandboxedEnvironment(loader=jinja2.BaseLoader())
_ENV.filters.update(choice=_choice, most_frequent=_most_frequent, highlight=lambda text: text)
_ENV.globals.update(zip=zip)


@lru_cache(maxsize=4096)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def _protect(example: Mapping[str, Any]) -> dict[str, Any]:
    """removeHyphen on the keys, then the pipe placeholder in top-level strings (nested ones are left)."""
    return {
        key.replace("-", "_"): value.replace("|||", PIPE_PROTECTOR) if isinstance(value, str) else value
        for key, value in example.items()
    }


@dataclass(frozen=True)
class Template:
    name: str
    id: str
    jinja: str
    answer_choices: str | None
    original_task: bool | None
    choices_in_prompt: bool | None

    def _choices(self, variables: dict[str, Any], rng: random.Random) -> list[str] | None:
        """The rendered answer choices, or None where the template has none."""
        if self.answer_choices is None:
            return None
        text = _run(self.answer_choices, {**variables, _RNG: rng}, f"{self.name} (answer_choices)")
        return [part.strip().replace(PIPE_PROTECTOR, "|||") for part in text.split("|||")]

    def render(self, example: Mapping[str, Any], seed: int | str = 0) -> tuple[str, str, list[str]] | None:
        """(source, target, choices) or None where the template yields no target for this example.

        ``seed`` seeds the ``choice`` filter. ``choices`` is [] for templates without answer choices.
        """
        variables = _protect(example)
        if "answer_choices" in variables:
            raise TemplateError(f"template '{self.name}': the example has the reserved key 'answer_choices'")
        rng = random.Random(seed)
        # Choices reach the main template unprotected, as in promptsource: a choice holding "|||"
        # that the template prints splits the output in three, which gives no example.
        choices = self._choices(variables, rng)
        jinja = self.jinja.replace("}}", f" | string | truncate({TEXT_VAR_LENGTH}) }}}}")
        text = _run(jinja, {**variables, "answer_choices": choices, _RNG: rng}, self.name)
        parts = [part.replace(PIPE_PROTECTOR, "|||").strip() for part in text.split("|||")]
        # As P3's apply_template: anything but exactly "source ||| non-empty target" is no example.
        if len(parts) != 2 or not parts[0] or not parts[1]:
            return None
        return parts[0], parts[1], choices or []


def _run(source: str, variables: dict[str, Any], name: str) -> str:
    try:
        return _compile(source).render(**variables)
    except jinja2.sandbox.SecurityError as err:
        raise TemplateError(f"template '{name}' tried an unsafe operation, refused: {err}") from err
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, IndexError, KeyError) as err:
        raise TemplateError(f"template '{name}' failed to render: {type(err).__name__}: {err}") from err


class _Loader(yaml.SafeLoader):
    """A SafeLoader that reads promptsource's ``!Template``/``!TemplateMetadata`` as plain mappings."""


for _tag in ("!Template", "!TemplateMetadata"):
    _Loader.add_constructor(_tag, lambda loader, node: loader.construct_mapping(node, deep=True))


def shipped_templates() -> Path:
    """The promptsource templates shipped in the package: the registry's 55 datasets (see its NOTICE)."""
    return Path(str(resources.files("promptability.assets").joinpath("promptsource")))


def templates_path(root: str | Path | None, dataset: str, subset: str | None = None) -> Path:
    """``root``'s templates.yaml of a dataset; ``root`` None means the shipped templates."""
    return Path(root if root is not None else shipped_templates(), dataset, *([subset] if subset else []),
                "templates.yaml")  # fmt: skip


@lru_cache(maxsize=256)
def _load(path: Path) -> dict[str, Template]:
    if not path.is_file():
        raise TemplateError(f"{path}: no promptsource templates file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        entries = data["templates"].values()
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise TemplateError(f"{path}: not a promptsource templates file ({err})") from None
    out: dict[str, Template] = {}
    for entry in entries:
        meta = entry.get("metadata") or {}
        out[entry["name"]] = Template(
            entry["name"], str(entry["id"]), entry["jinja"], entry.get("answer_choices"),
            meta.get("original_task"), meta.get("choices_in_prompt"),
        )  # fmt: skip
    return out


def load_templates(root: str | Path | None, dataset: str, subset: str | None = None) -> dict[str, Template]:
    """The templates of one dataset (and subset), keyed by promptsource name."""
    return dict(_load(templates_path(root, dataset, subset).resolve()))


def normalise(name: str) -> str:
    """A template name as P3 config names spell it: each non-alphanumeric character becomes "_"."""
    return re.sub(r"[^A-Za-z0-9]", "_", name)


def template_for(root: str | Path | None, p3_name: str) -> Template:
    """The promptsource template behind a P3/T0 template name of the registry.

    Held-out names end in "_score_eval" (P3's one-row-per-choice variant), which is dropped.
    ANLI's subsets r1-r3 share one file, ``anli/templates.yaml``. Names are matched literally,
    else on their normalised forms (a few registry names differ from the YAML's by punctuation).
    """
    try:
        info = registry.template_info(p3_name)
    except KeyError as err:
        raise TemplateError(str(err.args[0])) from None
    dataset, name = info["dataset_name"], info["template_name"].removesuffix("_score_eval")
    subset = None if dataset == "anli" else info["subset_name"]
    templates = load_templates(root, dataset, subset)
    if name in templates:
        return templates[name]
    matches = [t for key, t in templates.items() if normalise(key) == normalise(name)]
    if len(matches) == 1:
        return matches[0]
    raise TemplateError(
        f"P3 template '{p3_name}': no unique promptsource template '{name}' in "
        f"{templates_path(root, dataset, subset)}; candidates: {sorted(templates)}"
    )


def render_records(
    template: Template, rows: Iterable[Mapping[str, Any]], task: str, seed: int = 0
) -> list[dict[str, Any]]:
    """Project records (``schema.validate``d) for the rows that the template gives a target.

    Row i seeds ``choice`` with "seed:i". A template with answer choices gives label =
    choices.index(target), and rows whose target is not one of the choices are skipped
    (an evaluation record needs a valid label); one without gives choices=[] and label=-1
    (generation data, for training only).
    """
    records: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        out = template.render(row, seed=f"{seed}:{i}")
        if out is None:
            continue
        source, target, choices = out  # choices is [] exactly when the template has no answer choices
        if template.answer_choices is not None and target not in choices:
            continue
        label = choices.index(target) if choices else -1
        record = {"task": task, "source": source, "target": target, "choices": choices, "label": label}
        records.append(dict(validate(record, origin=f"{task} (promptsource)", row=i)))
    return records
