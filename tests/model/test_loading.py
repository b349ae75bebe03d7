"""model/loading.py's size label, the one reports group runs by."""

import json

from promptability.model.loading import model_size


def test_model_size_from_train_json_else_base_model_else_name(tmp_path):
    assert model_size("t5-large") == "t5-large" and model_size("google/t5-v1_1-xl") == "t5-v1_1-xl"
    trained = tmp_path / "run"
    trained.mkdir()
    (trained / "promptability.json").write_text(json.dumps({"prompt": "none", "base_model": "/models/t5-base"}))
    assert model_size(trained) == "t5-base"
    (trained / "train.json").write_text(json.dumps({"model_size": "base", "base_model": "/models/t5-base"}))
    assert model_size(trained) == "base"
    assert model_size(trained, info={}) == "run"  # info already read is used as given
    assert model_size(tmp_path / "plain-hf-dir") == "plain-hf-dir"
