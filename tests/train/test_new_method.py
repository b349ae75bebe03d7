"""docs/extending.md's worked method: a method is one step file plus one registry line.

The step is read from the document itself and registered at test time, so the
document cannot drift from what works.
"""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from promptability.data.batching import collate
from promptability.train.config import DataConfig, TrainConfig
from promptability.train.methods import METHODS, Method, build_step

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def _example() -> dict:
    text = DOC.read_text()
    section = text[text.index("### Worked example: MTL-TP with label smoothing") :]
    step_code, registry_line = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    namespace: dict = {"__name__": "label_smoothing_example"}
    exec(compile(step_code, str(DOC), "exec"), namespace)
    namespace["Method"] = Method
    return {"namespace": namespace, "method": eval(registry_line.strip().rstrip(","), namespace)}


@pytest.fixture
def label_smoothing(monkeypatch):
    example = _example()
    method = example["method"]
    monkeypatch.setitem(METHODS, method.name, method)
    return example["namespace"], method


def test_the_documented_method_trains_with_label_smoothed_nll(label_smoothing, make_model, train_data, accelerator):
    namespace, method = label_smoothing
    assert method.name == "mtl-tp-ls" and method.freeze == "mtl-tp"
    config = TrainConfig(method="mtl-tp-ls", prompt="shallow", batch_size=4, micro_batch_size=2,
                         data=DataConfig(path="unused")).validate()  # fmt: skip
    model = make_model("shallow")
    step = build_step("mtl-tp-ls", model, train_data, config, accelerator)
    assert isinstance(step, namespace["LabelSmoothedMTLStep"])
    seen, next_indices = [], step._next_indices
    step._next_indices = lambda: seen.append(next_indices()) or seen[-1]
    metrics = step(model, accelerator)
    indices = seen[0]

    rows = step.view[indices]
    batch = collate(rows, model.pad_token_id)
    reference = make_model("shallow")
    with torch.no_grad():
        logits = reference(**batch, return_loss=False).logits
    mask = batch["decoder_attention_mask"]
    targets = batch["labels"].masked_fill(mask == 0, -100)
    smoothed, plain = (
        [float(F.cross_entropy(logits[i, : int(m.sum())].float(), targets[i, : int(m.sum())], label_smoothing=s))
         for i, m in enumerate(mask)]
        for s in (namespace["SMOOTHING"], 0.0)
    )  # fmt: skip
    # The config's default weighting ("example"): each example's mean token loss, averaged over the examples.
    assert config.loss_weighting == "example"
    assert metrics["loss"] == pytest.approx(sum(smoothed) / len(smoothed), rel=1e-5)
    assert abs(sum(smoothed) - sum(plain)) > 1e-3  # smoothing changed the loss
    assert model.prompt.weight.grad is not None and model.transformer.shared.weight.grad is not None


def test_configs_and_the_cli_accept_the_documented_method(label_smoothing):
    from promptability.cli import build_parser
    from promptability.cli.common import settings_of

    assert TrainConfig(method="mtl-tp-ls").validate().prompt == "shallow"
    args = build_parser().parse_args(["pretrain", "--out", "o", "--method", "mtl-tp-ls"])
    assert settings_of(args)["method"] == "mtl-tp-ls"
