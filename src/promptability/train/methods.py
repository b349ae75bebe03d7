"""The method registry: every continued-pretraining method, in the paper's Table 1 order.

A method is a train step (one file under ``train/steps/``) plus one line here:
the name used in configs and on the command line, its Table 1 label, the
freeze preset of ``model.freeze`` (what trains), whether it needs a soft prompt,
and the function that builds its step. ``TrainConfig`` validation, the CLI's
``--method`` choices and the demo's rows read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from promptability.train.loop import TrainStep
from promptability.train.steps.meta import build_meta_step
from promptability.train.steps.mtl import build_mtl_step

if TYPE_CHECKING:
    from promptability.model.prompted import PromptedModel
    from promptability.train.config import TrainConfig


class BuiltStep(TrainStep, Protocol):
    """A train step as the registry builds it: it also knows how many steps make one pass over its data."""

    steps_per_epoch: int


StepBuilder = Callable[[str, "PromptedModel", Any, "TrainConfig", Any], BuiltStep]


@dataclass(frozen=True)
class Method:
    name: str  # in configs and on the command line
    label: str  # the row of Table 1
    freeze: str  # the model.freeze preset: what this method trains
    prompted: bool  # trains a soft prompt (so needs one)
    build: StepBuilder

    @property
    def meta(self) -> bool:
        """A meta-learning method (FOMAML, Reptile): its step draws episodes, not batches."""
        return self.build is build_meta_step


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("mtl-t", "MTL-T", freeze="mtl-t", prompted=False, build=build_mtl_step),
        Method("mtl-p", "MTL-P", freeze="mtl-p", prompted=True, build=build_mtl_step),
        Method("mtl-tp", "MTL-TP", freeze="mtl-tp", prompted=True, build=build_mtl_step),
        # The outer loop updates transformer and prompt; the inner loop only a copy of the prompt.
        Method("fomaml", "FOMAML", freeze="mtl-tp", prompted=True, build=build_meta_step),
        Method("reptile", "Reptile", freeze="mtl-tp", prompted=True, build=build_meta_step),
    )
}


def build_step(method: str, model: PromptedModel, data: Any, config: TrainConfig, accelerator: Any = None) -> BuiltStep:
    """Freezes ``model`` for ``method`` and returns its train step over the tokenized ``data``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    model.freeze(METHODS[method].freeze)
    return METHODS[method].build(method, model, data, config, accelerator)


# The rows of a Table 1 report (eval.report's row order and labels): "none" is the model without
# continued pretraining, then every method in registry order.
TABLE1_LABELS: dict[str, str] = {"none": "No continued pretraining", **{m.name: m.label for m in METHODS.values()}}
