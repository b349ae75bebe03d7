"""The real study's data from data.sources specs: local Hub-schema folders instead of (or beside) the curated files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptability.cli import main
from promptability.data.readers import read_examples
from promptability.data.registry import heldout_templates
from promptability.data.sources import SourceError
from promptability.studies.data import build_study_data, dataset_key, study_sources
from promptability.studies.real import run_real_study

RTE = [{"premise": f"Premise number {i}.", "hypothesis": f"Hypothesis {i}.", "idx": i, "label": i % 2}
       for i in range(6)]  # fmt: skip
HELLASWAG = [{"ind": i, "activity_label": "Cooking", "ctx_a": f"A cook stirs pot {i}.", "ctx_b": "he",
              "ctx": f"A cook stirs pot {i}. he", "endings": [f"ending {i}.{j}" for j in range(4)], "source_id": "s",
              "split": "val", "split_type": "indomain", "label": str(i % 4)} for i in range(5)]  # fmt: skip


def _parquet(root: Path, splits: dict[str, list[dict]]) -> Path:
    import datasets

    for split, rows in splits.items():
        datasets.Dataset.from_list(rows).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def _templates(key: str) -> list[str]:
    return [t for t in heldout_templates() if dataset_key(t) == key]


def test_study_data_from_local_sources_only(tmp_path):
    rte = _parquet(tmp_path / "rte", {"validation": RTE, "train": RTE[:3]})
    # HellaSwag's train split is present here (as on the Hub), so it is the pool instead of a held-back slice.
    hellaswag = _parquet(tmp_path / "hs", {"validation": HELLASWAG, "train": HELLASWAG[:2]})
    sources = {"super_glue/rte": f"parquet:{rte}", "hellaswag": f"parquet:{hellaswag}"}
    manifest = build_study_data(None, None, tmp_path / "out", eval_instances=4, pool_size=2, progress=False,
                                sources=sources)  # fmt: skip
    assert manifest["sources"] == sources
    assert set(manifest["heldout"]) == set(_templates("super_glue/rte") + _templates("hellaswag"))
    assert set(manifest["skipped"]) >= set(heldout_templates()) - set(manifest["heldout"])
    assert json.loads((tmp_path / "out" / "study.json").read_text()) == manifest
    assert manifest["skipped"]["anli_GPT_3_style_r1_score_eval"] == "no anli/r1 dev data in any source (none given)"
    assert manifest["pools"] == {"super_glue/rte": "the train split (2 of its rows at most)",
                                 "hellaswag": "the train split (2 of its rows at most)"}  # fmt: skip
    assert manifest["train"] == {}
    train_premises = {f"Premise number {i}." for i in range(3)}
    for name in _templates("super_glue/rte"):
        assert manifest["heldout"][name] == {"dataset": "super_glue/rte", "split": "validation", "instances": 4,
                                             "pool": 2}  # fmt: skip
        shots = read_examples(tmp_path / "out" / "train" / f"{name}.jsonl")
        assert all(any(p in r["source"] for p in train_premises) for r in shots)
    evaluated = read_examples(tmp_path / "out" / "validation" / "hellaswag_Predict_ending_with_hint_score_eval.jsonl")
    assert len(evaluated) == 4 and all(len(r["choices"]) == 4 for r in evaluated)


def test_a_source_gives_the_files_the_curated_path_gives(tmp_path, realdata_root):
    """RTE's curated files rewritten as Hub-schema Parquet yield byte-identical study data."""
    from promptability.data.realdata import read_raw

    splits = {s: read_raw(realdata_root, "super_glue/rte", s) for s in ("validation", "train")}
    folder = _parquet(tmp_path / "rte", splits)
    built = {}
    for how, spec in (("curated", f"curated:{realdata_root}"), ("parquet", f"parquet:{folder}")):
        build_study_data(None, None, tmp_path / how, eval_instances=16, progress=False,
                         sources={"super_glue/rte": spec})  # fmt: skip
        built[how] = {p.relative_to(tmp_path / how): p.read_bytes() for p in (tmp_path / how).rglob("*.jsonl")}
    assert built["curated"] == built["parquet"] and len(built["curated"]) == 2 * len(_templates("super_glue/rte"))


def test_sources_name_datasets_the_study_reads(tmp_path):
    with pytest.raises(SourceError, match="the study reads no dataset 'imdb'"):
        study_sources(None, {"imdb": f"parquet:{tmp_path}"})
    with pytest.raises(FileNotFoundError, match="give --data"):
        run_real_study(None, None, tmp_path / "out")
    assert set(study_sources(tmp_path, None)) >= {"super_glue/rte", "dream"}


def test_study_cli_reports_bad_sources_plainly(tmp_path, capsys):
    assert main(["study", "real", "--source", f"parquet:{tmp_path}", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "name the dataset" in capsys.readouterr().out
    assert main(["study", "real", "--source", f"imdb=parquet:{tmp_path}", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2  # fmt: skip
    assert "the study reads no dataset 'imdb'" in capsys.readouterr().out
