"""Step composition: i.i.d. global steps sorted inside vs length bands; statistics, padding, ranks, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptability.data.sampler import LengthGroupedBatchSampler

# A T0-like mixture in miniature: (share, source length range, target length range) per template. Short
# classification prompts with one-token labels up to long contexts with long summaries, so a step's length
# band decides which templates it holds.
TEMPLATES = [
    (0.35, (6, 20), (1, 2)),
    (0.25, (20, 60), (1, 4)),
    (0.15, (60, 160), (2, 10)),
    (0.15, (160, 400), (1, 3)),
    (0.10, (400, 768), (60, 192)),
]
N, BATCH, MICRO = 20 * 4096, 4096, 32  # the paper's global batch and T5-Large's micro-batch: 20 steps


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    """(template of each example [n], lengths [n, 2]) in shuffled order."""
    rng = np.random.default_rng(0)
    sizes = [int(share * N) for share, _, _ in TEMPLATES]
    template = np.repeat(np.arange(len(TEMPLATES)), sizes)
    lengths = np.concatenate(
        [
            np.stack([rng.integers(*src, size=n, endpoint=True), rng.integers(*tgt, size=n, endpoint=True)], 1)
            for n, (_, src, tgt) in zip(sizes, TEMPLATES, strict=True)
        ]
    )
    order = rng.permutation(len(template))
    return template[order], lengths[order]


def chi_square(template: np.ndarray, batches: list[np.ndarray]) -> tuple[float, int, float]:
    """Pearson's statistic of every step's template counts against the mixture's shares, summed over steps.

    Returns (statistic, degrees of freedom, p-value). A step drawn without replacement from the mixture
    varies a little less than the multinomial this assumes, so i.i.d. steps pass with room to spare.
    """
    k = int(template.max()) + 1
    shares = np.bincount(template, minlength=k) / len(template)
    stat, dof = 0.0, 0
    for b in batches:
        observed = np.bincount(template[b], minlength=k)
        expected = shares * len(b)
        stat += float(((observed - expected) ** 2 / expected).sum())
        dof += k - 1
    p = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2)))
    return stat, dof, p


def padding(lengths: np.ndarray, micro_batches: list[np.ndarray]) -> float:
    """Padded / all positions over sources and targets when each micro-batch pads to its longest."""
    padded = total = 0
    for idx in micro_batches:
        lens = lengths[idx]
        full = lens.max(axis=0) * len(lens)
        total += int(full.sum())
        padded += int((full - lens.sum(axis=0)).sum())
    return padded / total


def micro_batches(sampler: LengthGroupedBatchSampler) -> list[np.ndarray]:
    """The micro-batches MTLStep runs: every rank's share of every step, cut into MICRO consecutive rows."""
    out = []
    for batch in sampler.global_batches(0):
        for share in sampler.shares(batch):
            out += [share[i : i + MICRO] for i in range(0, len(share), MICRO)]
    return out


def test_iid_steps_keep_the_mixture_and_pad_like_length_bands(mixture):
    template, lengths = mixture
    iid = LengthGroupedBatchSampler(lengths, BATCH, seed=0, composition="iid", micro_batch_size=MICRO)
    bands = LengthGroupedBatchSampler(lengths, BATCH, seed=0, composition="length_bands")
    stat_iid, dof, p_iid = chi_square(template, iid.global_batches(0))
    stat_bands, _, p_bands = chi_square(template, bands.global_batches(0))
    print(f"chi-square over {dof} dof: iid {stat_iid:.0f} (p={p_iid:.3f}), length bands {stat_bands:.0f}")
    assert p_iid > 0.01  # i.i.d. draws of the mixture, step after step
    assert stat_bands > 50 * dof and p_bands < 1e-100  # a step holds the templates of one length band
    # No template's share of any step strays beyond sampling noise (5 binomial standard deviations).
    shares = np.bincount(template) / len(template)
    worst = max(
        float(
            (
                np.abs(np.bincount(template[b], minlength=len(shares)) / len(b) - shares)
                / np.sqrt(shares * (1 - shares) / len(b))
            ).max()
        )
        for b in iid.global_batches(0)
    )
    assert worst < 5, worst

    # Padding: sorting inside one step of 4,096 against sorting chunks of 50 steps (here: all 20); both far below
    # random. Measured: iid 6.4%, length bands 4.5%, random 82%.
    perm = np.random.default_rng(0).permutation(N)
    pad_iid, pad_bands = padding(lengths, micro_batches(iid)), padding(lengths, micro_batches(bands))
    pad_random = padding(lengths, [perm[i : i + MICRO] for i in range(0, N, MICRO)])
    print(f"padding: iid {pad_iid:.3%}, length bands {pad_bands:.3%}, random {pad_random:.3%}; "
          f"iid / bands = {pad_iid / pad_bands:.2f}")  # fmt: skip
    assert pad_iid < 1.6 * pad_bands and pad_iid - pad_bands < 0.03
    assert pad_iid < 0.1 * pad_random


def test_iid_ranks_share_each_step_in_lockstep_and_balanced(mixture):
    _, lengths = mixture
    lengths = lengths[:1000]
    single = LengthGroupedBatchSampler(lengths, 64, seed=2, composition="iid", micro_batch_size=4)
    ranks = [
        LengthGroupedBatchSampler(lengths, 64, seed=2, composition="iid", micro_batch_size=4, num_replicas=4, rank=r)
        for r in range(4)
    ]
    steps = list(single)
    per_rank = [list(r) for r in ranks]
    assert len(steps) == len(single) == 16 and all(len(r) == 16 for r in per_rank)
    # The epoch is the shuffled data cut into consecutive steps, each sorted to pad at most as sorting by source.
    perm = np.random.default_rng([2, 0]).permutation(1000)
    for i, step in enumerate(steps):
        assert sorted(step) == sorted(perm[i * 64 : (i + 1) * 64].tolist())
        by_source = sorted(step, key=lambda j: (-lengths[j, 0], -lengths[j, 1]))
        assert padded_cost(lengths, np.array(step), 4) <= padded_cost(lengths, np.array(by_source), 4)
    for i, step in enumerate(steps[:-1]):
        shares = [r[i] for r in per_rank]
        assert [len(s) for s in shares] == [16] * 4 and sorted(sum(shares, [])) == sorted(step)
        # Dealt in rounds of one micro-batch per rank (odd rounds from the last rank): micro-batch j of every
        # rank is a quarter of the j-th band of 16.
        for j in range(4):
            band = step[16 * j : 16 * (j + 1)]
            order = range(4) if j % 2 == 0 else range(3, -1, -1)
            assert [shares[r][4 * j : 4 * (j + 1)] for r in order] == [band[4 * q : 4 * q + 4] for q in range(4)]
    # The last step (1000 = 15 x 64 + 40) has 40 examples, 10 per rank: 2 rounds of 4, then 2 each.
    last = [r[-1] for r in per_rank]
    assert [len(s) for s in last] == [10] * 4 and sorted(sum(last, [])) == sorted(steps[-1])
    assert [s[:8] for s in last] == [
        steps[-1][4 * r : 4 * r + 4] + steps[-1][28 - 4 * r : 32 - 4 * r] for r in range(4)
    ]
    # Tops up a last step that does not divide among the ranks, as length_bands does.
    odd = LengthGroupedBatchSampler(lengths[:70], 64, composition="iid", num_replicas=4, rank=3)
    assert [len(b) for b in odd] == [16, 2]


def padded_cost(lengths: np.ndarray, share: np.ndarray, micro: int) -> int:
    """Positions a rank computes for its share: each micro-batch padded to its longest source and target."""
    return sum(
        len(m) * int(lengths[m].max(0).sum()) for m in (share[i : i + micro] for i in range(0, len(share), micro))
    )


def test_iid_ranks_get_balanced_work(mixture):
    """Ranks wait for the slowest at each step's gradient sync: the dealt shares cost about the same."""
    _, lengths = mixture
    sampler = LengthGroupedBatchSampler(lengths[:10_240], 512, composition="iid", micro_batch_size=8, num_replicas=4)
    dealt, contiguous = [], []
    for batch in sampler.global_batches(0):
        costs = [padded_cost(lengths, share, 8) for share in sampler.shares(batch)]
        dealt.append(max(costs) / min(costs))
        costs = [padded_cost(lengths, batch[128 * r : 128 * (r + 1)], 8) for r in range(4)]
        contiguous.append(max(costs) / min(costs))
    print(f"slowest / fastest rank: dealt {max(dealt):.3f}, contiguous slices of the sorted step {min(contiguous):.1f}")
    assert max(dealt) < 1.15 and min(contiguous) > 10


def test_iid_is_deterministic_and_resumes(mixture):
    _, lengths = mixture
    lengths = lengths[:300]

    def make(seed: int = 5) -> LengthGroupedBatchSampler:
        return LengthGroupedBatchSampler(lengths, 32, seed=seed, composition="iid", micro_batch_size=8)

    run = make()
    epoch0, epoch1 = list(run), list(run)
    assert epoch0 != epoch1 and epoch0 == list(make()) and epoch0 != list(make(6))
    assert sorted(i for b in epoch0 for i in b) == list(range(300))
    first = make()
    it = iter(first)
    seen = [next(it) for _ in range(4)]
    resumed = make(seed=99)
    resumed.load_state_dict(first.state_dict())
    assert seen + list(resumed) == epoch0 and list(resumed) == epoch1
    with pytest.raises(ValueError, match="composition must be one of iid, length_bands, got 'bands'"):
        LengthGroupedBatchSampler(lengths, 32, composition="bands")
    with pytest.raises(ValueError, match="micro_batch_size"):
        LengthGroupedBatchSampler(lengths, 32, composition="iid", micro_batch_size=0)


def test_a_step_is_sorted_in_both_lengths():
    """Sources of 20-59 tokens, targets of 1 or 40: sorting by source alone mixes the targets (measured: 24.4%
    padding, 6.8% as sorted)."""
    rng = np.random.default_rng(1)
    lengths = np.stack([rng.integers(20, 60, 256), rng.choice([1, 40], 256)], 1)
    (step,) = LengthGroupedBatchSampler(lengths, 256, composition="iid", micro_batch_size=16).global_batches(0)
    by_source = step[np.lexsort((-lengths[step, 1], -lengths[step, 0]))]
    assert sorted(step) == list(range(256))
    assert padding(lengths, [step[i : i + 16] for i in range(0, 256, 16)]) < 0.08
    assert padding(lengths, [by_source[i : i + 16] for i in range(0, 256, 16)]) > 0.2
    assert list(lengths[step[:16], 1]) == [40] * 16  # long ones first: a step that runs out of memory does so early
