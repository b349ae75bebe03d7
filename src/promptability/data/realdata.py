"""Readers for the real data files in ``../shared/realdata`` (formats and quirks: its README.md).

Each reader turns one original format into rows in the Hugging Face ``datasets`` schema of that
dataset (field names and value types), so promptsource's templates render them unchanged. Rows
come in file order; a split of several files is their concatenation in ``DATASETS`` order.

Deviations from the Hub versions, all forced by the files available:

* ``super_glue/wsc.fixed`` is read from the *original* SuperGLUE WSC (uncorrected spans); the
  templates use only the span texts.
* ``train`` of copa/wic/wsc.fixed is FewGLUE's train + dev32 (64 rows), not the full train.
* ``anli/r*`` have only "dev" (R3 lacks 2 of 1,200 rows); there is no train split.
* ``hellaswag`` lost ctx_a/ctx_b upstream: ctx_a = ctx, ctx_b = "".
* ``winogrande`` is rebuilt from llm-foundry's reformatting (see ``_winogrande``).
* ``story_cloze/2016`` validation rows from cloze_test.csv have no ids (story_id "").
* ``commonsense_qa`` comes from llm-foundry, which kept only 4 of the 5 choices (A-D); id and
  question_concept are "".
* ``wiki_qa`` files keep only questions with at least one correct sentence.
* ``common_gen`` train is the first release's txt pair (39,069 pairs; the Hub has 67,389).
* ``glue/mrpc`` train is all of MSRP train (GLUE train + validation, 4,076); test keeps labels.
"""

from __future__ import annotations

import bz2
import csv
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

Row = dict[str, Any]
Reader = Callable[[list[Path]], list[Row]]


class RealDataError(ValueError):
    """An unknown dataset or split, or a row that cannot be converted (named by file and row)."""


class Split(NamedTuple):
    files: tuple[str, ...]  # names under the realdata root
    read: Reader


def _rows(path: Path, records: Iterable[Any], convert: Callable[[Any], Row | list[Row]]) -> Iterator[Row]:
    for i, record in enumerate(records):
        try:
            out = convert(record)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise RealDataError(f"{path}: row {i} (from 0): {type(e).__name__}: {e}") from e
        yield from out if isinstance(out, list) else [out]


def _each(load: Callable[[Path], Iterable[Any]], convert: Callable[[Any], Row | list[Row]]) -> Reader:
    return lambda paths: [row for path in paths for row in _rows(path, load(path), convert)]


def _numbered(read: Reader, key: str) -> Reader:
    """For Hub ids that are just the position in the split."""
    return lambda paths: [{key: i, **row} for i, row in enumerate(read(paths))]


def _jsonl(path: Path) -> list[Any]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            out += [json.loads(line)] if line.strip() else []
        except json.JSONDecodeError as e:
            raise RealDataError(f"{path}: line {i + 1}: invalid JSON: {e}") from e
    return out


def _csv(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    # The TSVs have bare quotes inside sentences, so only the CSVs get quote handling;
    # utf-8-sig because the MSRP files start with a BOM.
    quoting: Literal[0, 3] = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter, quoting=quoting))


def _tsv(path: Path) -> list[dict[str, str]]:
    return _csv(path, "\t")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# fmt: off
# One converter per dataset schema, each a row of the dataset table: kept one record per line.
def _label(value: Any, names: tuple[Any, ...]) -> int:
    """An index into ``names``, given as the index or as the name; anything else is an error."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    if value not in names:
        raise ValueError(f"label {value!r} is not one of {names} nor an index into them")
    return names.index(value)


def _pair(names: tuple[str, ...]) -> Callable[[dict], Row]:
    return lambda r: {"premise": r["premise"], "hypothesis": r["hypothesis"], "idx": int(r["idx"]),
                      "label": _label(r["label"], names)}


def _copa(r: dict) -> Row:
    return {**{k: r[k] for k in ("premise", "choice1", "choice2", "question")}, "idx": int(r["idx"]),
            "label": _label(r["label"], (0, 1))}


def _flag(value: Any) -> int:
    # FewGLUE's WiC/WSC labels are JSON bools; the Hub's are 0/1. Only real bools pass.
    if not isinstance(value, bool):
        raise TypeError(f"label {value!r} is not a bool")
    return int(value)


def _wic(r: dict) -> Row:
    ints = {k: int(r[k]) for k in ("start1", "start2", "end1", "end2", "idx")}
    return {**{k: r[k] for k in ("word", "sentence1", "sentence2")}, **ints, "label": _flag(r["label"])}


def _wsc(r: dict) -> Row:
    t = r["target"]  # FewGLUE nests the spans; the Hub has them at top level
    return {"text": r["text"], "span1_index": int(t["span1_index"]), "span2_index": int(t["span2_index"]),
            "span1_text": t["span1_text"], "span2_text": t["span2_text"], "idx": int(r["idx"]),
            "label": _flag(r["label"])}


def _anli(r: dict) -> Row:
    return {"uid": r["uid"], "premise": r["context"], "hypothesis": r["statement"],
            "label": _label(r["gold_label"], ("e", "n", "c")), "reason": r["reason"]}


def _hellaswag_items(path: Path) -> list[list[str]]:
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) % 6:
        raise RealDataError(f"{path}: {len(lines)} lines, not 6 per item (the last item is cut)")
    return [lines[i : i + 6] for i in range(0, len(lines), 6)]


def _hellaswag(item: list[str]) -> Row:
    activity, sep, ctx = item[0].partition(": ")
    if not sep or item[1] not in ("0", "1", "2", "3"):
        raise ValueError(f"expected 'activity: ctx' then a label 0-3, got {item[:2]!r}")
    return {"activity_label": activity, "ctx_a": ctx, "ctx_b": "", "ctx": ctx, "endings": item[2:6],
            "source_id": "", "split": "val", "split_type": "", "label": item[1]}  # label is a str on the Hub


def _winogrande(r: dict) -> Row:
    """llm-foundry split each sentence at `_` into two option-filled contexts and a stripped continuation.

    The options start where the contexts differ, backed off to a word boundary (so "bed"/"blanket" do
    not become "ed"/"lanket"). The space after `_` was stripped; it was absent exactly where the
    continuation starts with punctuation ("_." or "_'s")."""
    first, second = r["context_options"]
    common = os.path.commonprefix([first, second])
    prefix = common[: common.rfind(" ") + 1]
    option1, option2, rest = first[len(prefix) :], second[len(prefix) :], r["continuation"].strip()
    if not option1 or not option2 or not rest:
        raise ValueError(f"cannot find the blank in {r['context_options']!r}")
    space = "" if rest[0] in ".,;:!?'’)" else " "
    return {"sentence": f"{prefix}_{space}{rest}", "option1": option1, "option2": option2,
            "answer": str(_label(r["gold"], (0, 1)) + 1)}


def _story_cloze(r: dict) -> Row:
    sentences = {f"input_sentence_{i}": r[f"InputSentence{i}"] for i in range(1, 5)}
    return {"story_id": r.get("InputStoryid", ""), **sentences,
            "sentence_quiz1": r["RandomFifthSentenceQuiz1"], "sentence_quiz2": r["RandomFifthSentenceQuiz2"],
            "answer_right_ending": _label(r["AnswerRightEnding"], ("1", "2")) + 1}


def _dream(record: list) -> list[Row]:
    dialogue, questions, dialogue_id = record
    return [{"dialogue_id": dialogue_id, "dialogue": dialogue, **{k: q[k] for k in ("question", "choice", "answer")}}
            for q in questions]


def _social_i_qa(split: str) -> Reader:
    def read(paths: list[Path]) -> list[Row]:
        (path,) = paths
        with zipfile.ZipFile(path) as z:  # the official zip; labels sit apart in a .lst
            records = z.read(f"socialiqa-train-dev/{split}.jsonl").decode("utf-8").splitlines()
            labels = z.read(f"socialiqa-train-dev/{split}-labels.lst").decode("utf-8").split()
        if len(records) != len(labels):
            raise RealDataError(f"{path}: {split}.jsonl has {len(records)} rows but {split}-labels.lst {len(labels)}")
        return list(_rows(path, zip(records, labels), _social_i_qa_row))

    return read


def _social_i_qa_row(record_label: tuple[str, str]) -> Row:
    r = json.loads(record_label[0])
    label = ("1", "2", "3")[_label(record_label[1], ("1", "2", "3"))]  # a str on the Hub too
    return {**{k: r[k] for k in ("context", "question", "answerA", "answerB", "answerC")}, "label": label}


def _cosmos(r: dict) -> Row:
    return {**{k: r[k] for k in ("id", "context", "question", "answer0", "answer1", "answer2", "answer3")},
            "label": _label(r["label"], ("0", "1", "2", "3"))}


def _commonsense_qa(r: dict) -> Row:
    """Undoes llm-foundry's "Question: q\\nChoices:\\nA. a\\n...\\nAnswer:"."""
    first, head, *options, last = r["query"].split("\n")
    if not first.startswith("Question: ") or head != "Choices:" or last != "Answer:":
        raise ValueError(f"unexpected query layout: {r['query'][:80]!r}")
    letters = [line[:1] for line in options]
    if letters != r["choices"] or any(line[1:3] != ". " for line in options):
        raise ValueError(f"choice lines {options!r} do not match the letters {r['choices']!r}")
    return {"id": "", "question": first.removeprefix("Question: "), "question_concept": "",
            "choices": {"label": letters, "text": [line[3:] for line in options]},
            "answerKey": letters[_label(r["gold"], tuple(letters))]}


def _quail(r: dict) -> Row:
    keep = ("id", "context_id", "domain", "metadata", "context", "question", "question_type", "answers")
    return {**{k: r[k] for k in keep}, "question_id": r["id"].removeprefix(r["context_id"] + "_"),
            "correct_answer_id": _label(r["correct_answer_id"], ("0", "1", "2", "3"))}


def _common_gen_train(paths: list[Path]) -> list[Row]:
    src, tgt = (p.read_text(encoding="utf-8").split("\n") for p in paths)
    if len(src) != len(tgt):
        raise RealDataError(f"{paths[0]} has {len(src)} lines but {paths[1]} {len(tgt)}")
    ids: dict[tuple[str, ...], int] = {}  # one id per distinct concept set, in order of first appearance
    rows = []
    for i, (concepts, target) in enumerate(zip(src, tgt)):
        if not concepts.strip() or not target.strip():
            raise RealDataError(f"{paths[0]} / {paths[1]}: row {i} (from 0): empty line")
        key = tuple(concepts.split())
        rows.append({"concept_set_idx": ids.setdefault(key, len(ids)), "concepts": list(key), "target": target})
    return rows


def _common_gen_dev(record: tuple[int, dict]) -> list[Row]:
    # dev concepts carry POS tags ("field_N") that the Hub's do not
    i, r = record
    concepts = [c[:-2] if c[-2:] in ("_N", "_V", "_A", "_R") else c for c in r["concept_set"].split("#")]
    return [{"concept_set_idx": i, "concepts": concepts, "target": scene} for scene in r["scene"]]


def _wiki_qa(r: dict) -> Row:
    return {"question_id": r["QuestionID"], "question": r["Question"], "document_title": r["DocumentTitle"],
            "answer": r["Sentence"], "label": _label(r["Label"], ("0", "1"))}


def _rotten_tomatoes(paths: list[Path]) -> list[Row]:
    # cp1252 rather than latin-1: the files use 0x85/0x91/0x96/0x97 for … ‘ – —
    return [{"text": line.strip(), "label": label} for path, label in zip(paths, (1, 0))
            for line in path.read_text(encoding="cp1252").splitlines()]


def _ag_news(r: dict) -> Row:
    return {"text": f"{r['Title']} {r['Description']}", "label": _label(r["Class Index"], ("1", "2", "3", "4"))}


TREC_COARSE = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")
TREC_FINE = tuple(f"{coarse}:{fine}" for coarse, fines in zip(TREC_COARSE, (
    "abb exp",
    ("animal body color cremat currency dismed event food instru lang letter other plant product religion sport"
     " substance symbol techmeth termeq veh word"),
    "def desc manner reason", "gr ind title desc", "city country mount other state",
    "code count date dist money ord other period perc speed temp volsize weight",
)) for fine in fines.split())  # the Hub's order: templates index answer_choices by fine_label - offset


def _trec(line: str) -> Row:
    label, _, text = line.strip().partition(" ")
    # the one undecodable byte ("sister\ufffdcity") is a space on the Hub
    return {"text": text.replace("\ufffd", " "), "coarse_label": _label(label.split(":")[0], TREC_COARSE),
            "fine_label": _label(label, TREC_FINE)}


def _mrpc(r: dict) -> Row | list[Row]:
    if "-1" in (r["#1 ID"], r["#2 ID"]):
        return []  # the repo appended 4 toy pairs with ids -1 to train; without them it is the official 4,076
    return {"sentence1": r["#1 String"], "sentence2": r["#2 String"], "label": _label(r["Quality"], ("0", "1"))}


def _both(name: str, convert: Callable[[dict], Row], train: tuple[str, ...] = ("train",)) -> dict[str, Split]:
    """FewGLUE-style validation and train files of one SuperGLUE task."""
    return {split: Split(tuple(f"super_glue__{name}__{p}.jsonl" for p in parts), _each(_jsonl, convert))
            for split, parts in (("validation", ("val",)), ("train", train))}


DATASETS: dict[str, dict[str, Split]] = {
    "super_glue/rte": _both("rte", _pair(("entailment", "not_entailment"))),
    "super_glue/cb": _both("cb", _pair(("entailment", "contradiction", "neutral"))),
    "super_glue/copa": _both("copa", _copa, ("train", "dev32")),
    "super_glue/wic": _both("wic", _wic, ("train", "dev32")),
    "super_glue/wsc.fixed": _both("wsc", _wsc, ("train", "dev32")),
    **{f"anli/r{i}": {"dev": Split((f"anli__r{i}__ANLI_analysis_r{i}_dev.csv",), _each(_csv, _anli))} for i in (1, 2, 3)},
    "hellaswag": {"validation": Split(("hellaswag__hellaswag_val_full.txt.bz2",),
                                      _numbered(_each(_hellaswag_items, _hellaswag), "ind"))},
    "winogrande/winogrande_xl": {"validation": Split(("winogrande__xl__winogrande.jsonl",), _each(_jsonl, _winogrande))},
    "story_cloze/2016": {
        "validation": Split(("story_cloze__2016__cloze_valid.csv", "story_cloze__2016__cloze_test.csv"),
                            _each(_csv, _story_cloze)),
        "test": Split(("story_cloze__2016__test_for_report-stories_labels.csv",), _each(_csv, _story_cloze))},
    "dream": {s: Split((f"dream__{f}.json",), _numbered(_each(lambda p: json.loads(p.read_text("utf-8")), _dream), "id"))
              for s, f in (("train", "train"), ("validation", "dev"))},
    "social_i_qa": {s: Split(("social_i_qa__socialiqa-train-dev.zip",), _social_i_qa(f))
                    for s, f in (("train", "train"), ("validation", "dev"))},
    "cosmos_qa": {"validation": Split(("cosmos_qa__valid.csv",), _each(_csv, _cosmos))},
    "commonsense_qa": {"validation": Split(("commonsense_qa__commonsense_qa.jsonl",), _each(_jsonl, _commonsense_qa))},
    "quail": {"challenge": Split(("quail__challenge.jsonl",), _each(_jsonl, _quail))},
    "common_gen": {
        "train": Split(("common_gen__commongen.train.src_alpha.txt", "common_gen__commongen.train.tgt.txt"),
                       _common_gen_train),
        "validation": Split(("common_gen__commongen.dev.jsonl",), _each(lambda p: enumerate(_jsonl(p)), _common_gen_dev))},
    "wiki_qa": {s: Split((f"wiki_qa__WikiQA-{f}.tsv",), _each(_tsv, _wiki_qa))
                for s, f in (("validation", "dev"), ("test", "test-gold"))},
    "rotten_tomatoes": {"all": Split(("rotten_tomatoes__rt-polarity.pos", "rotten_tomatoes__rt-polarity.neg"),
                                     _rotten_tomatoes)},
    "ag_news": {"test": Split(("ag_news__test.csv",), _each(_csv, _ag_news))},
    "trec": {s: Split((f"trec__{s}.txt",), _each(_lines, _trec)) for s in ("train", "test")},
    "glue/mrpc": {s: Split((f"glue__mrpc__msr_paraphrase_{s}.txt",), _numbered(_each(_tsv, _mrpc), "idx"))
                  for s in ("train", "test")},
}


# fmt: on


def available(root: str | Path) -> dict[str, list[str]]:
    """Dataset key -> the splits whose files are all present under ``root`` (datasets with none are left out)."""
    found = {
        key: [s for s, spec in splits.items() if all(Path(root, f).is_file() for f in spec.files)]
        for key, splits in DATASETS.items()
    }
    return {key: splits for key, splits in found.items() if splits}


def read_raw(root: str | Path, dataset: str, split: str) -> list[Row]:
    """The rows of ``dataset``'s ``split`` in the Hub schema, in file order (deterministic)."""
    if dataset not in DATASETS:
        raise RealDataError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if split not in DATASETS[dataset]:
        raise RealDataError(f"{dataset} has no split {split!r}; known: {', '.join(DATASETS[dataset])}")
    spec = DATASETS[dataset][split]
    paths = [Path(root, f) for f in spec.files]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{dataset} {split} needs {path}, which is not there")
    return spec.read(paths)
