"""Meta-learning episodes: ``TaskBatcher`` cuts a tokenized mixture into (support batches, query batch) per task.

Two orders (``EPISODE_ORDERS``, ``MetaConfig.episodes``):

* ``"pass"`` (the reference's): the mixture is gone through in passes without
  replacement. In each pass every task's examples are shuffled and cut into
  episodes of ``(support_batches + 1) * batch_size`` examples (a remainder
  smaller than one episode is left out of that pass, as the reference's
  ``drop_last`` loaders do, and a task smaller than one episode never appears),
  and the pass visits all these episodes in a random order, which is what the
  reference's ``MixerDataLoader`` does when it draws a task in proportion to its
  remaining batches. Within a pass each example is in at most one episode.
* ``"sample"``: every episode draws its task (``task_sampling``: "proportional"
  to task size, or "uniform") and its examples afresh.

Episode ``i`` depends only on (seed, i) in both orders, so ``episode(i)`` gives
random access (each process reads only its share) and ``state_dict()`` =
{"episode", "seed"} resumes exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset

from promptability.data.batching import TRAIN_COLUMNS, collate, task_indices

EPISODE_ORDERS = ("pass", "sample")
DEFAULT_EPISODES = "pass"


@dataclass
class Episode:
    task: str
    support: list[dict[str, torch.Tensor]]
    query: dict[str, torch.Tensor]


@dataclass(frozen=True)
class _Pass:
    """One pass's plan: which task and which of its chunks each episode slot takes, and the tasks' shuffles."""

    number: int
    slot_task: np.ndarray
    slot_chunk: np.ndarray
    shuffled: list[np.ndarray]


class TaskBatcher:
    """Episodes of one task each: ``support_batches`` support batches and one query batch of ``batch_size``.

    ``episodes="pass"``: support and query examples of an episode are all
    different, and a pass holds ``episodes_per_pass`` episodes. ``"sample"``:
    they are all different when the task has at least ``(support_batches + 1) *
    batch_size`` examples; for smaller tasks each batch is drawn on its own (no
    repeats inside a batch of at most the task's size), so examples repeat
    across batches.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        pad_id: int,
        support_batches: int = 1,
        batch_size: int = 16,
        seed: int = 0,
        task_sampling: str = "proportional",
        episodes: str = DEFAULT_EPISODES,
    ) -> None:
        # Training runs check these with the rest of meta.* (TrainConfig.validate); these guard direct use.
        if task_sampling not in ("proportional", "uniform"):
            raise ValueError(f"task_sampling must be 'proportional' or 'uniform', got {task_sampling!r}")
        if episodes not in EPISODE_ORDERS:
            raise ValueError(f"episodes must be one of {EPISODE_ORDERS}, got {episodes!r}")
        if episodes == "pass" and task_sampling != "proportional":
            raise ValueError("task_sampling='uniform' needs episodes='sample': a pass draws tasks by their episodes")
        if support_batches < 0 or batch_size < 1:
            raise ValueError(f"need support_batches >= 0 and batch_size >= 1, got {support_batches}, {batch_size}")
        self.dataset = dataset.select_columns(TRAIN_COLUMNS)
        self.groups = task_indices(dataset)
        if not self.groups:
            raise ValueError("TaskBatcher needs a non-empty dataset")
        self.tasks = list(self.groups)
        sizes = np.array([len(self.groups[t]) for t in self.tasks], dtype=np.float64)
        self.probs = sizes / sizes.sum() if task_sampling == "proportional" else np.full(len(sizes), 1 / len(sizes))
        self.pad_id = pad_id
        self.support_batches = support_batches
        self.batch_size = batch_size
        self.need = (support_batches + 1) * batch_size  # examples per episode
        self.order = episodes
        self.chunks = (sizes // self.need).astype(np.int64)  # each task's episodes per pass
        if episodes == "pass" and not self.chunks.sum():
            raise ValueError(
                f"no task has the {self.need} examples one episode needs ((support_batches + 1) * batch_size); "
                f"the largest has {int(sizes.max())}: lower meta.task_batch_size or use meta.episodes=sample"
            )
        self.seed = seed
        self.episode_index = 0
        self._pass: _Pass | None = None

    @property
    def episodes_per_pass(self) -> int | None:
        """Episodes in one pass over the mixture ("pass" order; None for "sample")."""
        return int(self.chunks.sum()) if self.order == "pass" else None

    def episode(self, i: int) -> Episode:
        if self.order == "pass":
            number, slot = divmod(i, int(self.chunks.sum()))
            plan = self._plan(number)
            t, chunk = int(plan.slot_task[slot]), int(plan.slot_chunk[slot])
            picked = plan.shuffled[t][chunk * self.need : (chunk + 1) * self.need]
            task = self.tasks[t]
        else:
            rng = np.random.default_rng([self.seed, i])
            task = self.tasks[rng.choice(len(self.tasks), p=self.probs)]
            idx = self.groups[task]
            if len(idx) >= self.need:
                picked = rng.permutation(idx)[: self.need]
            else:  # too small for disjoint batches: each batch its own draw, distinct inside while possible
                picked = np.concatenate([self._draw(rng, idx) for _ in range(self.support_batches + 1)])
        batches = [
            collate(self.dataset[picked[b : b + self.batch_size].tolist()], self.pad_id)
            for b in range(0, self.need, self.batch_size)
        ]
        return Episode(task, batches[:-1], batches[-1])

    def _plan(self, number: int) -> _Pass:
        """Pass ``number``'s plan (the last one is kept: a process reads its episodes in order)."""
        if self._pass is None or self._pass.number != number:
            # a three-word seed: never one of "sample"'s two-word per-episode seeds [seed, i]
            rng = np.random.default_rng([self.seed, number, 0])
            shuffled = [rng.permutation(self.groups[t]) for t in self.tasks]
            slot_task = rng.permutation(np.repeat(np.arange(len(self.tasks)), self.chunks))
            # The c-th slot of task t takes its c-th chunk: count earlier slots of the same task.
            order = np.argsort(slot_task, kind="stable")
            starts = np.concatenate([[0], np.cumsum(self.chunks)[:-1]])
            slot_chunk = np.empty_like(slot_task)
            slot_chunk[order] = np.arange(len(slot_task)) - np.repeat(starts, self.chunks)
            self._pass = _Pass(number, slot_task, slot_chunk, shuffled)
        return self._pass

    def _draw(self, rng: np.random.Generator, idx: np.ndarray) -> np.ndarray:
        rounds = -(-self.batch_size // len(idx))
        return np.concatenate([rng.permutation(idx) for _ in range(rounds)])[: self.batch_size]

    def state_dict(self) -> dict[str, int]:
        return {"episode": self.episode_index, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.episode_index, self.seed = int(state["episode"]), int(state["seed"])
        self._pass = None
