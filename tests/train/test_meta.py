"""MetaStep (FOMAML / Reptile) against a naive deep-copying reference, hand calculations, no-copy and state checks."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from datasets import Dataset
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.optimization import Adafactor

from promptability.data.episodes import Episode, TaskBatcher
from promptability.train.state import flatten_state, load_state, save_state
from promptability.train.steps import meta as M
from promptability.train.steps.meta import MetaStep

LR = 0.05  # larger than the paper's 1e-3 so that a wrong inner trajectory shows clearly


def make_batch(gen: torch.Generator, vocab: int, size: int = 2) -> dict[str, torch.Tensor]:
    """Random ids with ragged lengths (right padding, pad id 0, EOS 1 at each end)."""

    def ragged(max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        lens = torch.randint(2, max_len + 1, (size,), generator=gen)
        ids = torch.randint(3, vocab, (size, max_len), generator=gen)
        mask = (torch.arange(max_len)[None] < lens[:, None]).long()
        ids = ids * mask
        ids[torch.arange(size), lens - 1] = 1
        return ids, mask

    input_ids, attention_mask = ragged(7)
    labels, decoder_attention_mask = ragged(4)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "decoder_attention_mask": decoder_attention_mask,
    }


class Episodes(list):
    """(support batches, query batch) pairs that a MetaStep reads by index, as it reads a TaskBatcher's episodes."""

    def episode(self, i: int) -> Episode:
        support, query = self[i]
        return Episode("task", support, query)


def make_episodes(n: int, k: int, vocab: int, seed: int = 0) -> Episodes:
    gen = torch.Generator().manual_seed(seed)
    return Episodes(([make_batch(gen, vocab) for _ in range(k)], make_batch(gen, vocab)) for _ in range(n))


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def naive_meta_grads(model, method, episodes, inner_steps, lr, carry, carried=None, transformer_step="adafactor"):
    """The textbook version, as Algorithm 2 and the reference's MetaLearner: a full deep copy of the model per task
    and one inner Adafactor over all its parameters, whose state is carried from task to task. The inner loop
    tunes the prompt only; the learner is then unfrozen and the query loss's gradient is FOMAML's meta-gradient,
    or, for Reptile, takes one more inner step on the whole learner. Returns (meta-gradients, carried state)."""
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    total = {n: torch.zeros_like(p) for n, p in theta.items()}
    for support, query in episodes:
        learner = copy.deepcopy(model)
        opt = Adafactor(learner.parameters(), lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
        if carry and carried is not None:
            opt.load_state_dict(carried)
        learner.freeze("prompt-only")
        for b in support[:inner_steps]:
            learner.zero_grad(set_to_none=True)
            learner(**b).loss.backward()
            opt.step()
        learner.freeze("all")
        learner.zero_grad(set_to_none=True)
        learner(**query).loss.backward()
        if method == "fomaml":
            for n, p in learner.named_parameters():
                total[n] += p.grad
        else:
            if transformer_step == "sgd":  # the older shortcut: the transformer's part by plain SGD instead
                sgd = [(p, p.grad) for p in learner.transformer_parameters()]
                for p, _ in sgd:
                    p.grad = None
            opt.step()
            if transformer_step == "sgd":
                with torch.no_grad():
                    for p, g in sgd:
                        p -= lr * g
            for n, p in learner.named_parameters():
                total[n] += theta[n] - p.detach()
        carried = copy.deepcopy(opt.state_dict())
    return {n: t / len(episodes) for n, t in total.items()}, carried


def assert_close(actual: dict, expected: dict, atol: float = 1e-6, rtol: float = 0.0) -> None:
    assert actual.keys() == expected.keys()
    for n in actual:
        torch.testing.assert_close(actual[n], expected[n], atol=atol, rtol=rtol, msg=lambda m, n=n: f"{n}: {m}")


def run(model, method, episodes, inner_steps=2, lr=LR, carry=True, meta_batch_size=None, accelerator=None, **kwargs):
    step = MetaStep(
        method,
        Episodes(episodes) if isinstance(episodes, list) else episodes,
        meta_batch_size=meta_batch_size or len(episodes),
        inner_steps=inner_steps,
        inner_lr=lr,
        carry_inner_state=carry,
        **kwargs,
    )
    metrics = step(model, accelerator)
    return grads(model), metrics, step


@pytest.mark.parametrize("prompt", ["shallow", "deep"])
@pytest.mark.parametrize(("method", "transformer_step"), [("fomaml", "adafactor"), ("reptile", "adafactor"),
                                                          ("reptile", "sgd")])  # fmt: skip
@pytest.mark.parametrize("carry", [True, False])
def test_matches_naive_deepcopy_reference(make_model, tiny_tokenizer, prompt, method, transformer_step, carry):
    model = make_model(prompt)
    episodes = make_episodes(3, 3, len(tiny_tokenizer))
    got, metrics, _ = run(model, method, episodes, inner_steps=3, carry=carry, transformer_step=transformer_step)
    want, _ = naive_meta_grads(model, method, episodes, 3, LR, carry, transformer_step=transformer_step)
    assert_close(got, want)
    # Every parameter got a meta-gradient, and the prompt's is not the unadapted one.
    assert all(g.abs().sum() > 0 for g in got.values())
    assert metrics["tasks"] == 3 and metrics["loss"] > 0 and metrics["support_loss_last"] > 0
    every = [b for s, q in episodes for b in [*s, q]]
    tokens = sum(int(b["attention_mask"].sum() + b["decoder_attention_mask"].sum()) for b in every)
    assert metrics["tokens"] == tokens
    if carry:  # the reference is sensitive to the inner state actually being carried
        other, _ = naive_meta_grads(model, method, episodes, 3, LR, carry=False, transformer_step=transformer_step)
        name = "prompt.weight" if prompt == "shallow" else "prompt.keys.0"
        assert (other[name] - got[name]).abs().max() > 1e-4
        if method == "reptile" and transformer_step == "adafactor":  # the transformer's state is carried too
            name = "transformer.decoder.block.0.layer.0.SelfAttention.q.weight"
            assert (other[name] - got[name]).abs().max() > 1e-4


@pytest.mark.parametrize("prompt", ["shallow", "deep"])
def test_reptile_two_outer_steps_match_algorithm_2_with_its_carried_state(make_model, tiny_tokenizer, prompt):
    """Two outer steps of 2 tasks each: the parameters and the carried inner Adafactor state (prompt and
    transformer) equal those of the whole-model reference, which steps a deep copy's weights."""
    model = make_model(prompt)
    model.freeze("mtl-tp")
    naive = copy.deepcopy(model)
    episodes = make_episodes(4, 2, len(tiny_tokenizer), seed=5)
    step = MetaStep("reptile", episodes, meta_batch_size=2, inner_steps=2, inner_lr=LR)
    outer, naive_outer = torch.optim.SGD(model.parameters(), lr=0.5), torch.optim.SGD(naive.parameters(), lr=0.5)
    carried = None
    for s in range(2):
        step(model, None)
        outer.step()
        meta, carried = naive_meta_grads(naive, "reptile", episodes[2 * s : 2 * s + 2], 2, LR, True, carried)
        for n, p in naive.named_parameters():
            p.grad = meta[n]
        naive_outer.step()
    got, want = dict(model.named_parameters()), dict(naive.named_parameters())
    assert_close({n: p.detach() for n, p in got.items()}, {n: p.detach() for n, p in want.items()})
    start = {n: p.detach() for n, p in make_model(prompt).named_parameters()}
    assert min(float((p.detach() - start[n]).abs().max()) for n, p in got.items()) > 1e-4  # every tensor moved

    # The carried state: the reference's, by parameter index, against ours by prompt index and transformer name.
    names = [n for n, _ in naive.named_parameters()]
    reference = {names[i]: entry for i, entry in carried["state"].items()}
    inner = step.state_dict()["inner_optimizer"][0]
    prompt_names = [n for n, _ in model.prompt.named_parameters(prefix="prompt")]
    ours = {prompt_names[int(i)]: e for i, e in inner.items() if i != "transformer"} | inner["transformer"]
    assert ours.keys() == reference.keys() == set(names)
    for n, entry in reference.items():
        assert ours[n].keys() == entry.keys(), n
        # 4 tasks: k + 1 = 3 prompt steps and 1 transformer step each
        assert ours[n]["step"] == entry["step"] == (4 * 3 if n.startswith("prompt") else 4), n
        assert_close({k: v for k, v in ours[n].items() if k != "step"}, {k: v for k, v in entry.items() if k != "step"})


def test_zero_inner_steps_fomaml_is_the_plain_query_gradient(make_model, tiny_tokenizer):
    model = make_model("deep")
    episodes = make_episodes(2, 0, len(tiny_tokenizer))
    got, metrics, _ = run(model, "fomaml", episodes, inner_steps=0)
    model.zero_grad(set_to_none=True)
    losses = [model(**q).loss for _, q in episodes]
    (sum(losses) / 2).backward()
    assert_close(got, grads(model))
    assert metrics["loss"] == pytest.approx(sum(float(x.detach()) for x in losses) / 2, rel=1e-6)


def first_adafactor_update(g: torch.Tensor, lr: float) -> torch.Tensor:
    """Adafactor's first step from fresh state, by hand: beta2 = 1 - 1**-0.8 = 0, so the second moment is g² itself
    (factored into row and column means over the last two dims of a matrix), then RMS clipping at 1 and the
    fixed lr."""
    sq = g * g + 1e-30
    if g.dim() < 2:
        u = g / sq.sqrt()
        return lr * u / max(1.0, float(u.pow(2).mean().sqrt()))
    row, col = sq.mean(-1), sq.mean(-2)
    v = (row / row.mean(-1, keepdim=True))[..., :, None] * col[..., None, :]
    u = g / v.sqrt()
    rms = u.pow(2).mean().sqrt()
    return lr * u / max(1.0, float(rms))


def test_hand_calculation_reptile_zero_steps_and_fomaml_one_step(make_model, tiny_tokenizer):
    model = make_model("shallow")
    ((support, query),) = make_episodes(1, 1, len(tiny_tokenizer), seed=3)

    # Reptile, k = 0: the learner takes just the full step from θ: Adafactor's first step for every tensor
    # (with transformer_step="sgd": plain SGD for the transformer).
    got, _, _ = run(model, "reptile", [(support, query)], inner_steps=0)
    sgd, _, _ = run(model, "reptile", [(support, query)], inner_steps=0, transformer_step="sgd")
    model.zero_grad(set_to_none=True)
    model(**query).loss.backward()
    g = grads(model)
    for n in got:
        # rtol 1e-4: the step sums its loss per row before dividing (train.losses), HF's loss averages at once; the
        # rounding apart (~1e-7 of a gradient) moves Adafactor's update of a small element by up to 3e-5 of itself.
        torch.testing.assert_close(got[n], first_adafactor_update(g[n], LR), atol=1e-7, rtol=1e-4, msg=n)
        want = first_adafactor_update(g[n], LR) if n == "prompt.weight" else LR * g[n]
        torch.testing.assert_close(sgd[n], want, atol=1e-7, rtol=1e-5, msg=n)

    # FOMAML, k = 1: the prompt moves once by the hand Adafactor step on the support gradient; the
    # meta-gradient is the query gradient of the model with that prompt, for all parameters.
    got, _, _ = run(model, "fomaml", [([support[0]], query)], inner_steps=1)
    model.zero_grad(set_to_none=True)
    model(**support[0]).loss.backward()
    adapted = copy.deepcopy(model)
    with torch.no_grad():
        adapted.prompt.weight -= first_adafactor_update(model.prompt.weight.grad, LR)
    adapted.zero_grad(set_to_none=True)
    adapted(**query).loss.backward()
    # The hand update rounds differently from Adafactor's (~3e-8 on the prompt), hence a relative tolerance.
    assert_close(got, grads(adapted), rtol=1e-5)


def test_meta_batch_is_averaged(make_model, tiny_tokenizer):
    model = make_model("shallow")
    a, b = make_episodes(2, 2, len(tiny_tokenizer), seed=1)
    for method in ("fomaml", "reptile"):
        one, m1, _ = run(model, method, [a], carry=False)
        twice, m2, _ = run(model, method, [a, a], carry=False)
        assert_close(twice, one)
        assert m2["loss"] == pytest.approx(m1["loss"]) and m2["tokens"] == 2 * m1["tokens"]
        other, _, _ = run(model, method, [b], carry=False)
        both, _, _ = run(model, method, [a, b], carry=False)
        assert_close(both, {n: (one[n] + other[n]) / 2 for n in one})


class CopyWatch(TorchDispatchMode):
    """Records every operator call that copies the storage of one of the given tensors."""

    COPIES = {
        torch.ops.aten.clone.default,
        torch.ops.aten._to_copy.default,
        torch.ops.aten.copy_.default,
        torch.ops.aten.copy.default,
        torch.ops.aten.detach_copy.default,
    }

    def __init__(self, tensors) -> None:
        super().__init__()
        self.watched = {t.data_ptr() for t in tensors}
        self.copied: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        kwargs = kwargs or {}
        sources = args[1:] if func is torch.ops.aten.copy_.default else args
        if func in self.COPIES and any(torch.is_tensor(a) and a.data_ptr() in self.watched for a in sources):
            self.copied.append(str(func))
        return func(*args, **kwargs)


def test_the_transformer_is_never_copied(make_model, tiny_tokenizer, monkeypatch):
    model = make_model("deep")
    episodes = make_episodes(2, 2, len(tiny_tokenizer))
    want = {m: naive_meta_grads(model, m, episodes, 2, LR, True)[0] for m in ("fomaml", "reptile")}
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}

    def refuse(*args, **kwargs):
        raise AssertionError("MetaStep must not deep-copy or snapshot the model")

    original = copy.deepcopy

    def guarded(obj, *args, **kwargs):  # transformers deep-copies configs on every forward: that is fine
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else [obj]
        if any(isinstance(v, (torch.nn.Module, torch.Tensor)) for v in items):
            refuse()
        return original(obj, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", guarded)
    monkeypatch.setattr(torch.nn.Module, "__deepcopy__", refuse, raising=False)
    monkeypatch.setattr(torch.nn.Module, "state_dict", refuse)
    prompt_numel = sum(p.numel() for p in model.prompt_parameters())
    for method in ("fomaml", "reptile"):
        with CopyWatch(model.transformer_parameters()) as watch:
            got, _, step = run(model, method, episodes)
        assert watch.copied == [] and watch.ops > 1000
        assert_close(got, want[method])
        # The learner is the prompt alone; the model's own tensors are where they were, unchanged.
        assert sum(t.numel() for t in step._learner) == prompt_numel
        for n, p in model.named_parameters():
            assert p.data_ptr() == before[n][0] and torch.equal(p.detach(), before[n][1]), n


@pytest.fixture
def task_data(tiny_tokenizer):
    """Two tasks of random token sequences (tokenized-dataset columns that TaskBatcher reads)."""
    gen = torch.Generator().manual_seed(7)

    def ids(low: int, high: int) -> list[int]:
        length = int(torch.randint(low, high, (1,), generator=gen))
        return torch.randint(3, len(tiny_tokenizer), (length,), generator=gen).tolist() + [1]

    rows = {"task": [], "input_ids": [], "labels": []}
    for t, n in (("a", 40), ("b", 25)):
        for _ in range(n):
            rows["task"].append(t)
            rows["input_ids"].append(ids(2, 8))
            rows["labels"].append(ids(1, 4))
    return Dataset.from_dict(rows)


@pytest.mark.parametrize("method", ["fomaml", "reptile"])
def test_state_dict_round_trip_gives_the_same_next_meta_gradient(make_model, task_data, method, tmp_path):
    model = make_model("shallow")
    batcher = TaskBatcher(task_data, pad_id=0, support_batches=2, batch_size=4, seed=0)
    step = MetaStep(method, batcher, meta_batch_size=3, inner_steps=2, inner_lr=LR)
    step(model, None)
    save_state(tmp_path, "train_step", step.state_dict())  # the loop's pickle-free checkpoint format
    doc = json.loads((tmp_path / "train_step.json").read_text())
    assert doc["episodes_done"] == 3 and doc["task_batcher"] == {"episode": 3, "seed": 0}
    inner_steps_taken = 3 * (2 + (method == "reptile"))  # 3 tasks x (k, or k + 1 for Reptile's full step)
    assert len(doc["inner_optimizer"]) == 1 and doc["inner_optimizer"][0]["0"]["step"] == inner_steps_taken
    if method == "reptile":  # every transformer tensor's carried Adafactor state: one full step per task
        transformer = doc["inner_optimizer"][0]["transformer"]
        assert len(transformer) == len(model.transformer_parameters())
        assert all(entry["step"] == 3 for entry in transformer.values())
    else:
        assert "transformer" not in doc["inner_optimizer"][0]
    step(model, None)
    want = grads(model)

    fresh = MetaStep(
        method,
        TaskBatcher(task_data, pad_id=0, support_batches=2, batch_size=4, seed=0),
        meta_batch_size=3,
        inner_steps=2,
        inner_lr=LR,
    )
    fresh.load_state_dict(load_state(tmp_path, "train_step"))
    fresh(model, None)
    assert_close(grads(model), want, atol=0)
    assert fresh.task_batcher.state_dict() == {"episode": 6, "seed": 0}
    resumed, original = fresh.state_dict()["inner_optimizer"][0], step.state_dict()["inner_optimizer"][0]
    assert json.dumps(flatten_state(resumed)[0]) == json.dumps(flatten_state(original)[0])
    assert all(torch.equal(flatten_state(resumed)[1][k], t) for k, t in flatten_state(original)[1].items())

    # Without the inner state (only the data position) the result differs: the state matters.
    partial = MetaStep(
        method,
        TaskBatcher(task_data, pad_id=0, support_batches=2, batch_size=4, seed=0),
        meta_batch_size=3,
        inner_steps=2,
        inner_lr=LR,
    )
    partial.load_state_dict({"method": method, "episodes_done": 3, "task_batcher": {"episode": 3, "seed": 0}})
    partial(model, None)
    assert (grads(model)["prompt.weight"] - want["prompt.weight"]).abs().max() > 1e-5
    name = "transformer.encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
    assert (grads(model)[name] - want[name]).abs().max() > 1e-5


def test_resumes_at_its_episode_without_a_batcher_state(make_model, tiny_tokenizer):
    model = make_model("shallow")
    episodes = make_episodes(4, 2, len(tiny_tokenizer))
    step = MetaStep("fomaml", episodes, meta_batch_size=2, inner_steps=2, inner_lr=LR)
    step(model, None)
    state = step.state_dict()
    step(model, None)
    want = grads(model)
    fresh = MetaStep("fomaml", episodes, meta_batch_size=2, inner_steps=2, inner_lr=LR)
    fresh.load_state_dict(state)
    fresh(model, None)
    assert_close(grads(model), want, atol=0)


class FakeAccelerator:
    def __init__(self, num_processes: int, process_index: int) -> None:
        self.num_processes, self.process_index = num_processes, process_index
        self.device = torch.device("cpu")


def test_meta_batch_is_split_across_processes(make_model, task_data, monkeypatch):
    """Each rank takes its share of the episodes; the mean of the ranks' gradients is the one-process result."""
    model = make_model("deep")
    monkeypatch.setattr(M, "average_gradients", lambda params, accelerator: None)
    per_rank = []
    for rank in range(2):
        batcher = TaskBatcher(task_data, pad_id=0, support_batches=2, batch_size=4, seed=1)
        step = MetaStep("reptile", batcher, meta_batch_size=4, inner_steps=2, inner_lr=LR, carry_inner_state=False)
        metrics = step(model, FakeAccelerator(2, rank))
        assert metrics["tasks"] == 2 and batcher.state_dict()["episode"] == 4
        per_rank.append(grads(model))
    single = TaskBatcher(task_data, pad_id=0, support_batches=2, batch_size=4, seed=1)
    got, _, _ = run(model, "reptile", single, carry=False, meta_batch_size=4)
    assert_close({n: (per_rank[0][n] + per_rank[1][n]) / 2 for n in got}, got)
    with pytest.raises(ValueError, match="divisible"):
        MetaStep("fomaml", single, meta_batch_size=3)(model, FakeAccelerator(2, 0))


def test_trains_in_the_shared_loop(make_model, task_data, accelerator):
    from promptability.train.loop import train

    model = make_model("shallow")
    model.freeze("mtl-tp")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batcher = TaskBatcher(task_data, pad_id=0, support_batches=2, batch_size=4, seed=0)
    step = MetaStep("fomaml", batcher, meta_batch_size=2, inner_steps=2, inner_lr=LR)
    result = train(model, step, accelerator, max_steps=2, progress=False)
    assert result.steps == 2 and result.examples == 2 * 2 * 3 * 4 and 0 < result.last["loss"] < 10
    assert step.episodes_done == 4 and batcher.state_dict()["episode"] == 4
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert "prompt.weight" in moved and len(moved) == len(before)


def test_bad_arguments(make_model, tiny_tokenizer):
    for bad in ({"method": "maml"}, {"transformer_step": "adam"}):
        with pytest.raises(ValueError, match="method must be fomaml or reptile"):
            MetaStep(**{"method": "fomaml", "task_batcher": None, **bad})
    for bad in ({"meta_batch_size": 0}, {"inner_steps": -1}, {"inner_lr": 0.0}, {"inner_lr": float("nan")}):
        with pytest.raises(ValueError, match="need meta_batch_size >= 1"):
            MetaStep("fomaml", None, **bad)
    episodes = make_episodes(2, 1, len(tiny_tokenizer))
    with pytest.raises(ValueError, match="prompt='none'"):
        MetaStep("fomaml", episodes, meta_batch_size=1, inner_steps=1)(make_model("none"), None)
    with pytest.raises(ValueError, match="1 support batches but inner_steps=2"):
        MetaStep("fomaml", episodes, meta_batch_size=1, inner_steps=2)(make_model("shallow"), None)
    step = MetaStep("fomaml", episodes, meta_batch_size=1, inner_steps=1)
    step(make_model("shallow"), None)
    with pytest.raises(ValueError, match="of its first call"):
        step(make_model("shallow"), None)


def test_the_optimizer_refuses_a_learning_rate_that_is_not_positive():
    from promptability.train.loop import build_optimizer

    for lr in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="lr must be positive"):
            build_optimizer([torch.nn.Parameter(torch.zeros(2))], lr)


# ----- two real processes (gloo) ---------------------------------------------------------------------
def _worker(rank: int, world: int, root: str, rows: dict) -> None:
    import torch.distributed as dist

    from promptability.model.loading import load_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world)
    try:
        model = load_model(f"{root}/model").eval()
        data = Dataset.from_dict(rows)

        def make():
            batcher = TaskBatcher(data, pad_id=0, support_batches=2, batch_size=4, seed=1)
            return MetaStep("reptile", batcher, meta_batch_size=4, inner_steps=2, inner_lr=LR)

        step = make()
        metrics = step(model, None)
        first = grads(model)
        state = step.state_dict()  # a collective: every rank's inner state
        if rank == 0:
            save_state(root, "train_step", state)
        step(model, None)
        second = grads(model)
        dist.barrier()
        fresh = make()
        fresh.load_state_dict(load_state(root, "train_step"))
        fresh(model, None)
        resumed = grads(model)
        out = {f"first.{n}": g for n, g in first.items()} | {f"second.{n}": g for n, g in second.items()}
        out |= {f"resumed.{n}": g for n, g in resumed.items()}
        out["tasks"] = torch.tensor(metrics["tasks"])
        save_state(root, f"rank{rank}", out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_average_and_resume_exactly(make_model, task_data, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    model = make_model("shallow")
    model.save(tmp_path / "model")
    rows = task_data.to_dict()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, 2, str(tmp_path), rows)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    ranks = [load_state(tmp_path, f"rank{r}") for r in range(2)]
    assert float(ranks[0]["tasks"]) == 4  # metrics are summed over processes
    saved = json.loads((tmp_path / "train_step.json").read_text())
    assert len(saved["inner_optimizer"]) == 2  # each rank's carried inner state
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # all-reduced: the same on both ranks
    names = [k[len("first.") :] for k in ranks[0] if k.startswith("first.")]
    assert_close({n: ranks[0][f"resumed.{n}"] for n in names}, {n: ranks[0][f"second.{n}"] for n in names}, atol=0)

    # The first step is the mean of what each rank computes on its share (emulated in this process).
    monkeypatch.setattr(M, "average_gradients", lambda params, accelerator: None)
    per_rank = []
    for rank in range(2):
        batcher = TaskBatcher(task_data, pad_id=0, support_batches=2, batch_size=4, seed=1)
        MetaStep("reptile", batcher, meta_batch_size=4, inner_steps=2, inner_lr=LR)(model, FakeAccelerator(2, rank))
        per_rank.append(grads(model))
    want = {n: (per_rank[0][n] + per_rank[1][n]) / 2 for n in names}
    assert_close({n: ranks[0][f"first.{n}"] for n in names}, want)
