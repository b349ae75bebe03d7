"""Global batches of a shuffled mixture for multi-task training.

``LengthGroupedBatchSampler``: per epoch, shuffles and cuts global batches.
``composition="iid"`` (the paper's reference code): each global batch is the
next slice of the shuffled mixture, so a step is an i.i.d. draw of it; only
inside the step are its examples sorted by length (by source, then windows of
it by target, whichever window pads least), so that consecutive micro-batches
pad little. ``composition="length_bands"``: chunks of
``megabatch_mult * batch_size`` examples are sorted by length and cut into
batches (then shuffled), so one step holds one length band: least padding,
but a step of only short sources or only long contexts. Deterministic for
(seed, epoch) and resumable from ``state_dict()``. ``batch_size`` is the
*global* batch size; with ``num_replicas > 1`` all ranks step through the
same global batches in lockstep, each receives ``batch_size // num_replicas``
of its examples and their union is exactly the single-process batch
(``length_bands``: rank ``r`` takes the r-th contiguous slice; ``iid``: the
sorted step is dealt in rounds of ``micro_batch_size`` examples per rank, odd
rounds in reverse rank order, so every rank's j-th micro-batch comes from the
same length band and no rank gets all the long ones). Use it as ``DataLoader(dataset, batch_sampler=sampler,
collate_fn=partial(collate, pad_id=...))``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

STEP_COMPOSITIONS = ("iid", "length_bands")  # LengthGroupedBatchSampler's composition (see the module docstring)


class LengthGroupedBatchSampler:
    """Shuffled, length-sorted, resumable batches of indices (see the module docstring).

    ``lengths``: [n] or [n, 2] (sorted by the first column, ties by the second).
    All batches are full except possibly the last of an epoch; with several replicas
    that last batch is topped up with the epoch's first examples to a multiple of
    ``num_replicas`` so no rank idles.
    ``composition``: "iid" or "length_bands" (``STEP_COMPOSITIONS``; the
    default keeps the sampler's original behaviour, the training config chooses
    for training runs). ``megabatch_mult`` only matters for "length_bands",
    ``micro_batch_size`` (the dealing unit across ranks) only for "iid".
    ``state_dict()`` counts batches *handed out*; a DataLoader with workers
    prefetches, so a trainer should save ``state_dict(batch_index=steps_done)``.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        megabatch_mult: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
        composition: str = "length_bands",
        micro_batch_size: int = 1,
    ) -> None:
        lengths = np.asarray(lengths)
        if lengths.ndim == 1:
            lengths = lengths[:, None]
        if batch_size < 1 or megabatch_mult < 1 or micro_batch_size < 1:
            raise ValueError(
                f"batch_size, megabatch_mult and micro_batch_size must be >= 1, "
                f"got {batch_size}, {megabatch_mult} and {micro_batch_size}"
            )
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        if batch_size % num_replicas:
            raise ValueError(
                f"batch_size={batch_size} is the global batch size and must be divisible by num_replicas={num_replicas}"
            )
        if composition not in STEP_COMPOSITIONS:
            raise ValueError(f"composition must be one of {', '.join(STEP_COMPOSITIONS)}, got {composition!r}")
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.megabatch_mult = megabatch_mult
        self.num_replicas = num_replicas
        self.rank = rank
        self.composition = composition
        self.micro_batch_size = micro_batch_size
        self.epoch = 0
        self.batch_index = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _longest_first(self, idx: np.ndarray) -> np.ndarray:
        lens = self.lengths[idx]
        # lexsort's last key is the primary one; it is stable, so ties keep the shuffled order.
        return idx[np.lexsort([-lens[:, c] for c in reversed(range(lens.shape[1]))])]

    def _padded(self, idx: np.ndarray) -> int:
        """Positions (all columns) of ``idx`` cut into micro-batches, each padded to its longest."""
        starts = np.arange(0, len(idx), self.micro_batch_size)
        longest = np.maximum.reduceat(self.lengths[idx], starts, axis=0).sum(1)
        return int((longest * np.diff(np.append(starts, len(idx)))).sum())

    def _sort_step(self, idx: np.ndarray) -> np.ndarray:
        """A step's examples in the order that pads its micro-batches least among a few two-dimensional orders.

        Sorting by source length alone leaves targets mixed (a one-token label next to a long answer of the
        same source length); sorting by target alone mixes sources. So: longest sources first, then every
        window of ``w`` examples re-sorted by target, for ``w`` = micro_batch_size (no change), twice that,
        and so on up to the whole step; the order with the fewest padded positions wins (deterministic).
        """
        if self.lengths.shape[1] != 2:
            return self._longest_first(idx)
        # One stable argsort of a combined integer key instead of lexsort: the same order, several times faster
        # (a T0 epoch has tens of thousands of steps, each sorted ~8 times).
        src, tgt = (self.lengths[idx, c].astype(np.int64) for c in (0, 1))
        span = int(tgt.max()) + 1
        best = by_source = idx[np.argsort((src.max() - src) * span + (tgt.max() - tgt), kind="stable")]
        least, w = self._padded(best), 2 * self.micro_batch_size
        shorter = tgt.max() - self.lengths[by_source, 1].astype(np.int64)
        while w < 2 * len(idx):
            order = by_source[np.argsort(np.arange(len(idx)) // w * span + shorter, kind="stable")]
            padded = self._padded(order)
            if padded < least:
                best, least = order, padded
            w *= 2
        return best

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """All global batches of an epoch, in order (independent of rank)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(n)
        bands = self.composition == "length_bands"
        chunk = self.batch_size * self.megabatch_mult if bands else self.batch_size
        full: list[np.ndarray] = []
        rest: list[np.ndarray] = []
        for start in range(0, n, chunk):
            part = self._longest_first(perm[start : start + chunk]) if bands else perm[start : start + chunk]
            for b in range(0, len(part), self.batch_size):
                batch = part[b : b + self.batch_size]
                (full if len(batch) == self.batch_size else rest).append(batch)
        if bands and full:
            full = [full[i] for i in rng.permutation(len(full))]
        if rest:  # the epoch's one short batch, topped up to a multiple of num_replicas
            full.append(np.concatenate([rest[0], np.resize(perm, -len(rest[0]) % self.num_replicas)]))
        batches = full if bands else [self._sort_step(b) for b in full]  # iid: lengths grouped inside each step
        self._cache = (epoch, batches)
        return batches

    def shares(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every rank's examples of a global batch, rank by rank (their union is the batch)."""
        per = len(batch) // self.num_replicas
        if self.composition == "length_bands":
            return [batch[r * per : (r + 1) * per] for r in range(self.num_replicas)]
        # Deal the sorted step in rounds: each rank takes micro_batch_size consecutive examples per round, so
        # micro-batch j of every rank lies in the same length band; the last, short round is split evenly. Odd
        # rounds deal in reverse rank order, so no rank gets the longest chunk of every round (ranks wait for the
        # slowest at the step's gradient sync).
        rounds = per // self.micro_batch_size
        dealt = rounds * self.micro_batch_size * self.num_replicas
        head = batch[:dealt].reshape(rounds, self.num_replicas, self.micro_batch_size).copy()
        head[1::2] = head[1::2, ::-1]
        tail = batch[dealt:].reshape(self.num_replicas, per - rounds * self.micro_batch_size)
        return [np.concatenate([head[:, r].reshape(-1), tail[r]]) for r in range(self.num_replicas)]

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches(self.epoch)
        while self.batch_index < len(batches):
            batch = batches[self.batch_index]
            self.batch_index += 1
            yield self.shares(batch)[self.rank].tolist()
        self.epoch += 1
        self.batch_index = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.batch_index = epoch, 0

    def state_dict(self, batch_index: int | None = None) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "batch_index": self.batch_index if batch_index is None else batch_index,
            "seed": self.seed,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.batch_index = int(state["batch_index"])
        self._cache = None
