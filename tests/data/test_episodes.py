"""TaskBatcher: the reference's one pass over the mixture without replacement, and sampled episodes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from datasets import Dataset

from promptability.data.episodes import TaskBatcher

PAD = 0


@pytest.fixture(scope="module")
def task_data() -> Dataset:
    """Task "big" (60 examples) and "small" (20); example n's source is [n + 3, EOS] (n unique), varied targets."""
    rows: dict[str, list] = {"task": [], "input_ids": [], "labels": []}
    for n in range(80):
        rows["task"].append("big" if n < 60 else "small")
        rows["input_ids"].append([n + 3, 1])
        rows["labels"].append([5] * (1 + n % 3) + [1])
    return Dataset.from_dict(rows)


def ids(batch) -> list[int]:
    return (batch["input_ids"][:, 0] - 3).tolist()


def episode_ids(episode) -> list[int]:
    return [n for b in [*episode.support, episode.query] for n in ids(b)]


def test_one_pass_covers_each_example_at_most_once(task_data):
    tb = TaskBatcher(task_data, pad_id=PAD, support_batches=2, batch_size=4, seed=0)  # 12 examples an episode
    assert tb.order == "pass" and tb.episodes_per_pass == 60 // 12 + 20 // 12 == 6
    episodes = [tb.episode(i) for i in range(6)]
    seen = [n for e in episodes for n in episode_ids(e)]
    assert len(seen) == len(set(seen)) == 6 * 12  # no example twice in the pass
    for e in episodes:  # an episode is one task's, in 2 support batches and a query batch of 4
        assert [b["input_ids"].shape[0] for b in [*e.support, e.query]] == [4, 4, 4]
        assert all((n < 60) == (e.task == "big") for n in episode_ids(e))
    assert Counter(e.task for e in episodes) == {"big": 5, "small": 1}  # in proportion to the tasks' episodes
    # The next pass goes over the mixture again, in another order and other cuts.
    second = [tb.episode(i) for i in range(6, 12)]
    again = [n for e in second for n in episode_ids(e)]
    assert len(again) == len(set(again)) and again != seen
    assert Counter(e.task for e in second) == {"big": 5, "small": 1}
    # Within a pass the episodes come in a random order: over passes, the small task's episode moves.
    positions = {[e.task for e in (tb.episode(6 * p + j) for j in range(6))].index("small") for p in range(12)}
    assert len(positions) > 2


def test_one_pass_is_deterministic_for_the_seed_and_resumable(task_data):
    def make(seed: int) -> TaskBatcher:
        return TaskBatcher(task_data, pad_id=PAD, support_batches=2, batch_size=4, seed=seed)

    a, b = make(3), make(3)
    first = [episode_ids(a.episode(i)) for i in range(14)]
    assert [episode_ids(b.episode(i)) for i in reversed(range(14))] == first[::-1]  # random access, any order
    assert [episode_ids(make(4).episode(i)) for i in range(14)] != first
    a.episode_index = 7  # as a MetaStep keeps it: the episodes read so far
    state = a.state_dict()
    assert state == {"episode": 7, "seed": 3}
    resumed = make(0)
    resumed.load_state_dict(state)
    assert [episode_ids(resumed.episode(resumed.episode_index + i)) for i in range(7)] == first[7:]
    e1, e2 = a.episode(9), resumed.episode(9)
    assert all(torch.equal(x[k], y[k]) for x, y in zip([*e1.support, e1.query], [*e2.support, e2.query]) for k in x)


def test_one_pass_needs_a_task_of_one_episode(task_data):
    with pytest.raises(ValueError, match="no task has the 84 examples"):
        TaskBatcher(task_data, pad_id=PAD, support_batches=6, batch_size=12)


def test_bad_options_are_refused_for_direct_use(task_data):
    """Training runs check them in TrainConfig.validate (tests/train/test_issue12_options.py); these guard direct use."""
    for options, message in [
        ({"task_sampling": "uniform"}, "episodes='sample'"),
        ({"episodes": "shuffle"}, "episodes must be"),
        ({"task_sampling": "zipf", "episodes": "sample"}, "task_sampling must be"),
        ({"batch_size": 0, "episodes": "sample"}, "batch_size >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            TaskBatcher(task_data, pad_id=PAD, **options)


def test_sampled_episodes(task_data):
    tb = TaskBatcher(task_data, pad_id=PAD, support_batches=2, batch_size=16, seed=0, episodes="sample")
    assert tb.episodes_per_pass is None
    ep = tb.episode(0)
    assert len(ep.support) == 2 and all(s["input_ids"].shape[0] == 16 for s in ep.support)
    assert ep.query["input_ids"].shape[0] == 16
    if ep.task == "big":  # 48 <= 60: every example different
        assert len(set(episode_ids(ep))) == 48
    assert all((n < 60) == (ep.task == "big") for n in episode_ids(ep))

    eps = [tb.episode(i) for i in range(3)]
    tb.episode_index = 3  # as a MetaStep keeps it: the episodes read so far
    state = tb.state_dict()
    assert state == {"episode": 3, "seed": 0}
    again = TaskBatcher(task_data, pad_id=PAD, support_batches=2, seed=0, episodes="sample")
    again.load_state_dict(state)
    nxt, ref = again.episode(again.episode_index), tb.episode(3)
    assert nxt.task == ref.task and torch.equal(nxt.query["input_ids"], ref.query["input_ids"])
    assert eps[0].task == ep.task and torch.equal(eps[0].support[1]["labels"], ep.support[1]["labels"])

    prop = TaskBatcher(task_data, pad_id=PAD, support_batches=0, batch_size=1, seed=0, episodes="sample")
    uni = TaskBatcher(
        task_data, pad_id=PAD, support_batches=0, batch_size=1, seed=0, task_sampling="uniform", episodes="sample"
    )
    assert prop.probs.tolist() == [0.75, 0.25] and uni.probs.tolist() == [0.5, 0.5]
    share = np.mean([prop.episode(i).task == "big" for i in range(400)])
    assert 0.68 < share < 0.82
    assert 0.42 < np.mean([uni.episode(i).task == "big" for i in range(400)]) < 0.58


def test_sampled_small_task_batches_have_no_repeats_inside(task_data):
    small = task_data.select(range(60, 80))
    ep = TaskBatcher(small, pad_id=PAD, support_batches=2, batch_size=16, seed=5, episodes="sample").episode(0)
    assert ep.task == "small"
    assert [len(set(ids(x))) for x in [*ep.support, ep.query]] == [16, 16, 16]
    tiny = small.select(range(5))
    ep = TaskBatcher(tiny, pad_id=PAD, support_batches=1, batch_size=8, seed=5, episodes="sample").episode(0)
    assert [len(ids(x)) for x in [*ep.support, ep.query]] == [8, 8]
    assert all(set(ids(x)[:5]) == set(ids(ep.query)[:5]) for x in ep.support)  # each round covers all 5
