"""The method registry: the one list of methods that config validation, the CLI, the demo and the report read."""

from __future__ import annotations

import pytest

from promptability.cli import build_parser
from promptability.studies.demo import ROWS
from promptability.train.config import ConfigError, TrainConfig
from promptability.train.methods import METHODS, TABLE1_LABELS, Method, build_step


def test_the_registry_is_table_1_in_order():
    assert [(m.name, m.label, m.freeze, m.prompted) for m in METHODS.values()] == [
        ("mtl-t", "MTL-T", "mtl-t", False),
        ("mtl-p", "MTL-P", "mtl-p", True),
        ("mtl-tp", "MTL-TP", "mtl-tp", True),
        ("fomaml", "FOMAML", "mtl-tp", True),
        ("reptile", "Reptile", "mtl-tp", True),
    ]
    assert list(TABLE1_LABELS) == ["none", *METHODS]
    assert [method for _, method, _ in ROWS] == ["mtl-t"] + [m for m in METHODS if m != "mtl-t" for _ in range(2)]


class _Model:
    def __init__(self) -> None:
        self.frozen: list[str] = []

    def freeze(self, preset: str) -> None:
        self.frozen.append(preset)


def test_a_new_method_is_one_registry_line(monkeypatch):
    built = []

    def build(method, model, data, config, accelerator):
        built.append((method, list(model.frozen), data))
        return "step"

    monkeypatch.setitem(METHODS, "toy", Method("toy", "Toy", freeze="mtl-p", prompted=True, build=build))
    config = TrainConfig(method="toy").validate()
    assert config.prompt == "shallow"
    assert build_step("toy", _Model(), "data", config) == "step"
    assert built == [("toy", ["mtl-p"], "data")]
    with pytest.raises(ConfigError, match="trains a soft prompt"):
        TrainConfig(method="toy", prompt="none").validate()


def test_the_cli_offers_the_registry(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--method", "nope"])
    err = capsys.readouterr().err
    assert all(f"'{name}'" in err for name in METHODS)
