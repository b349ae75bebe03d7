"""Meta-learning train steps: first-order MAML and Reptile over soft prompts (Wu et al. 2022, Alg. 1 and 2).

One call of a ``MetaStep`` is one outer optimizer step. For each task of the
meta-batch it

1. starts a *learner* whose prompt is a copy of the model's prompt (only the
   prompt tensors are cloned; the transformer is shared, never copied: the
   learner runs as ``torch.func.functional_call(model, {prompt.*: learner})``),
2. takes ``inner_steps`` prompt-tuning steps with the inner optimizer
   (Adafactor, fixed lr ``inner_lr``), one per support batch, and
3. runs one backward pass of the query-batch loss at the adapted learner,
   which gives ``g_T`` (gradient w.r.t. the transformer, at θ_T) and ``g_P``
   (gradient w.r.t. the prompt, at the adapted prompt φ').

From that single backward pass:

* FOMAML's meta-gradient is ``(g_T, g_P)`` (first order: no second
  derivatives through the inner loop).
* Reptile's is θ − θ'' where θ'' is the learner after the k prompt steps plus
  one full-model step on the query batch (Algorithm 2, and the reference's
  ``MetaLearner``, which unfreezes its learner for that step). That full step
  is the inner Adafactor's for every parameter: the prompt's (k+1)-th step,
  and one step for each transformer tensor, whose Adafactor state is carried
  from task to task like the prompt's. The transformer's share of θ − θ'' is
  just that step's update, which depends on g_T and the state but not on θ_T
  (no parameter scaling, no weight decay), so it is formed without moving or
  copying the transformer: the real Adafactor steps a per-tensor running sum
  instead of the weights (``TransformerStep``). ``transformer_step="sgd"``
  keeps the older shortcut: plain SGD at ``inner_lr``, a share of exactly
  ``inner_lr * g_T`` that needs no extra buffer.

A batch's loss is weighted as ``loss_weighting`` says (``train.losses``: each example's mean token NLL averaged
over the batch, or the mean over its target tokens).
Meta-gradients are averaged over the meta-batch and across processes and left in ``.grad`` of every trainable
parameter (any ``.grad`` there before the call is discarded). The meta-batch is split across processes: rank r
handles the r-th contiguous share of each step's episodes, each rank carrying its own inner-optimizer state (so
with ``carry_inner_state`` the result depends on the number of processes, as in the paper's multi-GPU runs;
``state_dict`` saves every rank's state for exact resume).
Metrics (loss = mean post-adaptation query loss, support_loss_first/last, tokens, target_tokens, examples,
tasks) are summed/averaged over all processes.

Memory: the only graph alive is the current forward pass's; across tasks we
keep the learner prompt, its inner-optimizer state and a prompt-sized
meta-gradient sum, while transformer gradients accumulate in place in ``.grad``
as in a plain multi-task step. Reptile's Adafactor transformer step needs each
task's g_T on its own (the update is not linear in it), so ``.grad`` holds one
task's gradient at a time and one more fp32 transformer-sized tensor holds the
running sum of the updates, allocated once; with Adafactor's factored state
(a row and a column vector per matrix) that is the whole cost. The reference
clones the whole model, with its gradients, for every task.

Episodes come from a ``TaskBatcher``, or anything else whose ``episode(i)`` gives episode ``i`` (random access,
so each rank reads only its share) as an object with ``support`` batches and a ``query`` batch; a batch is the
model's forward kwargs (input_ids, attention_mask, labels, decoder_attention_mask).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from transformers.optimization import Adafactor

from promptability.data.episodes import TaskBatcher
from promptability.train.distributed import average_gradients, dist_world, gather_ranks, world_of
from promptability.train.loop import autocast, build_optimizer
from promptability.train.losses import loss_units, row_nll, weigh_rows
from promptability.train.steps.inner import TRANSFORMER_STATE, TransformerStep, export_state, import_state

if TYPE_CHECKING:
    from promptability.model.prompted import PromptedModel
    from promptability.train.config import TrainConfig

TRANSFORMER_STEPS = ("adafactor", "sgd")  # Reptile's full-model step on the transformer
DEFAULT_TRANSFORMER_STEP = "adafactor"  # Algorithm 2 and the reference
Batch = dict[str, torch.Tensor]


class MetaStep:
    """A train step (``promptability.train.loop.TrainStep``) doing FOMAML or Reptile over the model's prompt.

    ``task_batcher.episode(i)`` gives episodes of ``inner_steps`` support
    batches, one per inner step (``build_meta_step`` builds it so).
    ``carry_inner_state``: the inner Adafactor's state is carried from task to
    task (and across outer steps), as in the paper; off, every task starts with
    a fresh inner optimizer. ``loss_weighting``: "token"
    (the default, this step's original loss) or "example"; training runs take
    it from the config (``build_meta_step``). ``transformer_step``: Reptile's
    full-model step on the transformer, "adafactor" (Algorithm 2) or "sgd".
    """

    steps_per_epoch: int  # set by build_meta_step

    def __init__(
        self,
        method: str,
        task_batcher: Any,
        meta_batch_size: int = 128,
        inner_steps: int = 7,
        inner_lr: float = 1e-3,
        carry_inner_state: bool = True,
        loss_weighting: str = "token",
        transformer_step: str = DEFAULT_TRANSFORMER_STEP,
    ) -> None:
        # Training runs validate these in TrainConfig.validate; the checks here guard direct use of the class.
        if method not in ("fomaml", "reptile") or transformer_step not in TRANSFORMER_STEPS:
            raise ValueError(f"method must be fomaml or reptile and transformer_step one of {TRANSFORMER_STEPS}, "
                             f"got {method!r} and {transformer_step!r}")  # fmt: skip
        if meta_batch_size < 1 or inner_steps < 0 or not inner_lr > 0:
            raise ValueError(f"need meta_batch_size >= 1, inner_steps >= 0 and inner_lr > 0, "
                             f"got {meta_batch_size}, {inner_steps} and {inner_lr}")  # fmt: skip
        self.method = method
        self.task_batcher = task_batcher
        self.meta_batch_size = meta_batch_size
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.carry_inner_state = carry_inner_state
        self.loss_weighting = loss_weighting
        self.transformer_step = transformer_step
        self.episodes_done = 0  # global episode position (all ranks together)
        self._names: list[str] | None = None
        self._learner: list[torch.Tensor] | None = None
        self._bound_to: list[tuple[torch.Tensor, torch.device]] = []
        self._optimizer: Adafactor | None = None
        self._pending_inner_state: dict[str, Any] | None = None
        self._full: TransformerStep | None = None  # Reptile's Adafactor step on the transformer
        self._pending_transformer_state: dict[str, Any] = {}

    # ----- data ---------------------------------------------------------------------------------
    def _local_episodes(self, world: int, rank: int) -> Iterator[Any]:
        """This rank's share of the next meta-batch, one episode at a time (none is held for later)."""
        per = self.meta_batch_size // world
        start = self.episodes_done
        self.episodes_done += self.meta_batch_size
        if hasattr(self.task_batcher, "episode_index"):
            self.task_batcher.episode_index = self.episodes_done  # keep its own state_dict truthful
        for i in range(start + rank * per, start + (rank + 1) * per):
            yield self.task_batcher.episode(i)

    # ----- learner ------------------------------------------------------------------------------
    def _setup(self, model: nn.Module) -> None:
        """Builds the learner on the first call (and the first after ``load_state_dict``): the model's prompt,
        its shapes and device stay as they are from then on, as in the training loop."""
        if getattr(model, "prompt", None) is None:
            raise ValueError("meta-learning adapts the soft prompt, but the model has prompt='none'")
        # cast: nn.Module.__getattr__ types the prompt as Tensor | Module; it is the Prompt module checked above
        named = list(cast(nn.Module, model.prompt).named_parameters(prefix="prompt"))
        if self._learner is not None:
            if len(named) == len(self._bound_to) and all(
                p is q and p.device == device for (_, p), (q, device) in zip(named, self._bound_to, strict=True)
            ):
                return
            raise ValueError("a MetaStep trains the prompt tensors (on the device) of its first call; build a new "
                             "step for another model")  # fmt: skip
        self._names = [n for n, _ in named]
        self._learner = [p.detach().clone().requires_grad_(True) for _, p in named]
        self._bound_to = [(p, p.device) for _, p in named]
        self._optimizer = build_optimizer(self._learner, self.inner_lr)  # the inner loop's, fixed lr
        if self._pending_inner_state is not None:
            import_state(self._optimizer, self._learner_by_index(), self._pending_inner_state, "prompt tensor")
            self._pending_inner_state = None

    def _nll(self, model: nn.Module, batch: Batch, accelerator: Any) -> torch.Tensor:
        """The learner's (the model with the learner's prompt) loss numerator; divide by ``_count``'s units."""
        assert self._names is not None and self._learner is not None  # _setup ran
        with autocast(accelerator):
            params = dict(zip(self._names, self._learner, strict=True))
            per_row = row_nll(model, batch, params)
            return weigh_rows(per_row, batch["decoder_attention_mask"].sum(1), self.loss_weighting).sum()

    def _transformer_full_step(self, model: nn.Module, prompt_ids: set[int]) -> TransformerStep | None:
        """Reptile's Adafactor step on the trainable transformer tensors (None: FOMAML, "sgd", or none trainable)."""
        if self.method != "reptile" or self.transformer_step != "adafactor":
            return None
        if self._full is None:  # built once, as the learner (_setup)
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in prompt_ids]
            if not named:
                return None
            self._full = TransformerStep(named, self.inner_lr)
            self._full.load(self._pending_transformer_state)
            self._pending_transformer_state = {}
        self._full.start()
        return self._full

    # ----- the step -----------------------------------------------------------------------------
    def __call__(self, model: nn.Module, accelerator: Any = None) -> dict[str, float]:
        if accelerator is not None and hasattr(accelerator, "unwrap_model"):
            model = accelerator.unwrap_model(model)
        world, rank = world_of(accelerator)
        if self.meta_batch_size % world:
            raise ValueError(f"meta_batch_size={self.meta_batch_size} must be divisible by the {world} processes")
        self._setup(model)
        assert self._learner is not None and self._optimizer is not None  # _setup built them
        device = next(model.parameters()).device
        prompt = model.prompt_parameters()  # type: ignore[operator]  # nn.Module.__getattr__: Tensor | Module
        prompt_ids = {id(p) for p in prompt}
        transformer = [p for p in model.parameters() if p.requires_grad and id(p) not in prompt_ids]
        trainable = [p for p in model.parameters() if p.requires_grad]
        for p in trainable:
            p.grad = None
        train_prompt = any(p.requires_grad for p in prompt)
        prompt_sum = [torch.zeros_like(p, dtype=torch.float32) for p in prompt] if train_prompt else None
        full = self._transformer_full_step(model, prompt_ids)

        # query NLL/token summed over tasks, first and last support loss, tokens, target tokens, examples, tasks
        totals = torch.zeros(7, dtype=torch.float64, device=device)
        for episode in self._local_episodes(world, rank):
            if len(episode.support) < self.inner_steps:
                raise ValueError(
                    f"episode has {len(episode.support)} support batches but inner_steps={self.inner_steps}"
                )
            with torch.no_grad():
                for t, p in zip(self._learner, prompt, strict=True):
                    t.copy_(p)
            if not self.carry_inner_state:
                self._optimizer.state.clear()
                if full is not None:
                    full.optimizer.state.clear()
            for i, batch in enumerate(episode.support[: self.inner_steps]):
                count = _count(batch, totals, self.loss_weighting)
                nll = self._nll(model, _to(batch, device), accelerator)
                for t, g in zip(self._learner, torch.autograd.grad(nll / count, self._learner), strict=True):
                    t.grad = g
                if i == 0:
                    totals[1] += (nll.detach() / count).double()
                if i == self.inner_steps - 1:
                    totals[2] += (nll.detach() / count).double()
                del nll
                self._optimizer.step()
                for t in self._learner:
                    t.grad = None
            count = _count(episode.query, totals, self.loss_weighting)
            nll = self._nll(model, _to(episode.query, device), accelerator)
            # g_T accumulates unscaled in .grad (scaled once after the meta-batch, or consumed task by task by
            # Reptile's Adafactor step); g_P lands in learner.grad.
            (nll / count).backward()
            totals[0] += (nll.detach() / count).double()
            del nll
            totals[6] += 1
            if self.method == "reptile":
                self._optimizer.step()  # the prompt's part of the full-model step
                if full is not None:
                    full.step()  # the transformer's part; leaves .grad zeroed for the next task
            if prompt_sum is not None:
                for acc, t, p in zip(prompt_sum, self._learner, prompt, strict=True):
                    # cast: the query backward above set the learner's .grad
                    acc.add_(cast(torch.Tensor, t.grad) if self.method == "fomaml" else p.detach() - t.detach())
            for t in self._learner:
                t.grad = None

        tasks = max(int(totals[6]), 1)
        # FOMAML's transformer meta-gradient is g_T; Reptile's SGD full step moved the transformer by inner_lr * g_T;
        # its Adafactor step by the updates summed in ``full``.
        scale = (1.0 if self.method == "fomaml" else self.inner_lr) / tasks
        for p in transformer:
            if p.grad is None:  # outside the graph: still a (zero) meta-gradient, and part of the all-reduce
                p.grad = torch.zeros_like(p)
            elif full is None:
                p.grad.mul_(scale)
        if full is not None:
            full.write_mean_update(tasks)
        if prompt_sum is not None:
            for p, acc in zip(prompt, prompt_sum, strict=True):
                if p.requires_grad:
                    p.grad = (acc / tasks).to(p.dtype)
        if world > 1:
            average_gradients(trainable, accelerator)
            if dist_world()[0] > 1:
                torch.distributed.all_reduce(totals)
        n = max(float(totals[6]), 1.0)
        return {
            "loss": float(totals[0]) / n,
            "support_loss_first": float(totals[1]) / n if self.inner_steps else float("nan"),
            "support_loss_last": float(totals[2]) / n if self.inner_steps else float("nan"),
            "tokens": float(totals[3]),
            "target_tokens": float(totals[4]),
            "examples": float(totals[5]),
            "tasks": float(totals[6]),
        }

    # ----- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Data position and, with ``carry_inner_state``, every rank's inner-optimizer state (tensors + JSON).

        With several processes every one must call it (it gathers), as the loop's checkpointing does.
        """
        state: dict[str, Any] = {"method": self.method, "episodes_done": self.episodes_done}
        if hasattr(self.task_batcher, "state_dict"):
            state["task_batcher"] = self.task_batcher.state_dict()
        if self.carry_inner_state:
            if self._optimizer is not None:
                local = export_state(self._optimizer, self._learner_by_index())
            else:
                local = dict(self._pending_inner_state or {})
            transformer = self._full.state() if self._full is not None else self._pending_transformer_state
            if transformer:
                local[TRANSFORMER_STATE] = transformer
            state["inner_optimizer"] = gather_ranks(local)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("method", self.method) != self.method:
            raise ValueError(f"state is of a {state['method']!r} MetaStep, this one is {self.method!r}")
        self.episodes_done = int(state["episodes_done"])
        if "task_batcher" in state and hasattr(self.task_batcher, "load_state_dict"):
            self.task_batcher.load_state_dict(state["task_batcher"])
        per_rank = state.get("inner_optimizer") or []
        rank = dist_world()[1]
        inner = dict(per_rank[rank]) if self.carry_inner_state and rank < len(per_rank) else {}
        self._pending_transformer_state = dict(inner.pop(TRANSFORMER_STATE, {}))
        self._pending_inner_state = inner
        # The next call builds the learner and the inner optimizers afresh, and loads this state into them.
        self._names = self._learner = self._optimizer = self._full = None

    def _learner_by_index(self) -> dict[str, torch.Tensor]:
        assert self._learner is not None  # called once _setup built it
        return {str(i): t for i, t in enumerate(self._learner)}


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def _count(batch: Batch, totals: torch.Tensor, weighting: str) -> int:
    """Adds the batch's tokens (source + target), target tokens and examples to ``totals``; returns its loss units."""
    target = int(batch["decoder_attention_mask"].sum())
    totals[3] += int(batch["attention_mask"].sum()) + target
    totals[4] += target
    totals[5] += batch["input_ids"].shape[0]
    return max(loss_units(batch["decoder_attention_mask"].sum(1), weighting), 1)


def build_meta_step(method: str, model: PromptedModel, data: Any, config: TrainConfig, accelerator: Any) -> MetaStep:
    """The ``fomaml``/``reptile`` step over the tokenized ``data``, drawn as episodes by a ``TaskBatcher``."""
    m = config.meta
    batcher = TaskBatcher(
        data, pad_id=model.pad_token_id, support_batches=m.inner_steps, batch_size=m.task_batch_size,
        seed=config.seed, task_sampling=m.task_sampling, episodes=m.episodes,
    )  # fmt: skip
    step = MetaStep(method, batcher, meta_batch_size=m.meta_batch_size, inner_steps=m.inner_steps,
                    inner_lr=m.inner_lr, carry_inner_state=m.carry_inner_state,
                    loss_weighting=config.loss_weighting, transformer_step=m.reptile_transformer_step)  # fmt: skip
    # "One epoch": one pass over the mixture's episodes, or (sampled episodes) as many examples as it holds.
    per_pass = batcher.episodes_per_pass
    if per_pass is None:
        per_pass = -(-len(data) // ((m.inner_steps + 1) * m.task_batch_size))
    step.steps_per_epoch = max(1, -(-per_pass // m.meta_batch_size))
    return step
