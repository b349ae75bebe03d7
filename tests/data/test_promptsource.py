"""promptsource rendering without promptsource: exact strings, P3 parity, and name resolution."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from promptability.data import registry
from promptability.data.p3 import read_p3
from promptability.data.promptsource import (
    PIPE_PROTECTOR,
    Template,
    TemplateError,
    load_templates,
    render_records,
    template_for,
)
from promptability.data.schema import validate

RTE_ROW = {"premise": "Dana Reeve died of lung cancer at 44.", "hypothesis": "Dana Reeve smoked.", "idx": 0, "label": 1}

# One hand-written row per dataset, in the Hugging Face schema the templates were written for.
ROWS = {
    ("super_glue", "rte"): RTE_ROW,
    ("super_glue", "cb"): {"premise": "It rained.", "hypothesis": "The road is wet.", "idx": 0, "label": 2},
    ("super_glue", "copa"): {
        "premise": "The man broke his toe.",
        "choice1": "He dropped a hammer on his foot.",
        "choice2": "He got a hole in his sock.",
        "question": "cause",
        "idx": 0,
        "label": 0,
    },
    ("super_glue", "wic"): {
        "word": "place",
        "sentence1": "Do you want to come over to my place later?",
        "sentence2": "A political system with no place for the less prominent groups.",
        "start1": 31,
        "start2": 27,
        "end1": 36,
        "end2": 32,
        "idx": 0,
        "label": 0,
    },
    ("super_glue", "wsc.fixed"): {
        "text": "Mark told Pete many lies about himself, which Pete included in his book. He should have been more truthful.",
        "span1_index": 0,
        "span2_index": 13,
        "span1_text": "Mark",
        "span2_text": "He",
        "idx": 0,
        "label": 1,
    },
    ("anli", None): {"uid": "x", "premise": "The cat sat.", "hypothesis": "A cat exists.", "label": 0, "reason": ""},
    ("hellaswag", None): {
        "ind": 4,
        "activity_label": "Removing ice from car",
        "source_id": "x",
        "split": "train",
        "split_type": "indomain",
        "ctx_a": "Then, the man writes over the snow covering the window of a car.",
        "ctx_b": "then",
        "ctx": "Then, the man writes over the snow covering the window of a car. then",
        "endings": [
            ", the man adds wax.",
            ", a person boards a lift.",
            ", the man sings.",
            ", the man removes the snow.",
        ],
        "label": "3",
    },
    ("story_cloze", "2016"): {
        "story_id": "x",
        "input_sentence_1": "Ann was hungry.",
        "input_sentence_2": "She opened the fridge.",
        "input_sentence_3": "It was empty.",
        "input_sentence_4": "She went to the store.",
        "sentence_quiz1": "She bought food.",
        "sentence_quiz2": "She flew to Mars.",
        "answer_right_ending": 1,
    },
    ("winogrande", "winogrande_xl"): {
        "sentence": "The trophy did not fit in the suitcase because the _ was too big.",
        "option1": "trophy",
        "option2": "suitcase",
        "answer": "1",
    },
    ("dream", None): {
        "id": 0,
        "dialogue_id": "5-510",
        "dialogue": ["M: Hi, how are you?", "W: Fine, thanks.", "M: Good."],
        "question": "How is the woman?",
        "choice": ["Fine.", "Sick.", "Tired."],
        "answer": "Fine.",
    },
    ("social_i_qa", None): {
        "context": "Tracy didn't go home that evening.",
        "question": "What does Tracy need to do before this?",
        "answerA": "make a new plan",
        "answerB": "Go home and see Riley",
        "answerC": "Find somewhere to go",
        "label": "3",
    },
    ("cosmos_qa", None): {
        "id": "x",
        "context": "Good Old War and person L: I saw both of these bands Wednesday night.",
        "question": "In the future, will this person go to see other bands play?",
        "answer0": "None of the above choices .",
        "answer1": "This person likes music and will go.",
        "answer2": "This person only likes Good Old War.",
        "answer3": "Other bands are not good.",
        "label": 1,
    },
    ("commonsense_qa", None): {
        "id": "x",
        "question": "Where would you find a seat?",
        "question_concept": "seat",
        "choices": {"label": ["A", "B", "C", "D", "E"], "text": ["bus", "sky", "ocean", "cloud", "moon"]},
        "answerKey": "A",
    },
    ("cos_e", "v1.11"): {
        "id": "x",
        "question": "Where would you find a seat?",
        "choices": ["bus", "sky", "ocean", "cloud", "moon"],
        "answer": "bus",
        "abstractive_explanation": "buses have seats",
        "extractive_explanation": "seat",
    },
    ("quail", None): {
        "id": "x",
        "context_id": "c",
        "question_id": "q",
        "domain": "fiction",
        "metadata": {"author": "a", "title": "t", "url": "u"},
        "context": "Bob walked to town. He bought bread.",
        "question": "What did Bob buy?",
        "question_type": "Factual",
        "answers": ["bread", "milk", "eggs", "not enough information"],
        "correct_answer_id": 0,
    },
    ("common_gen", None): {
        "concept_set_idx": 0,
        "concepts": ["ski", "mountain", "skier"],
        "target": "A skier skis down the mountain.",
    },
    ("wiki_qa", None): {
        "question_id": "Q1",
        "question": "how are glacier caves formed?",
        "document_title": "Glacier cave",
        "answer": "A glacier cave is a cave formed within the ice of a glacier.",
        "label": 1,
    },
    ("rotten_tomatoes", None): {"text": "a gorgeous, witty, seductive movie.", "label": 1},
    ("ag_news", None): {"text": "Wall St. Bears Claw Back Into the Black.", "label": 2},
    ("trec", None): {"text": "What does NASA stand for?", "coarse_label": 0, "fine_label": 1},
    ("glue", "mrpc"): {
        "sentence1": "He said the food was good.",
        "sentence2": "The food was good, he said.",
        "label": 1,
        "idx": 0,
    },
}
COUNTS = {  # templates per file in the 2023 revision
    "rte": 10,
    "cb": 15,
    "copa": 12,
    "wic": 10,
    "wsc.fixed": 10,
    "anli": 15,
    "hellaswag": 11,
    "2016": 6,
    "winogrande_xl": 6,
    "dream": 5,
    "social_i_qa": 6,
    "cosmos_qa": 13,
    "commonsense_qa": 5,
    "v1.11": 11,
    "quail": 13,
    "common_gen": 9,
    "wiki_qa": 11,
    "rotten_tomatoes": 10,
    "ag_news": 7,
    "trec": 18,
    "mrpc": 7,
}
# Templates that rightly give no example for the rows above: COPA's effect-only prompts on a
# "cause" question, and TREC's fine-grained ones whose coarse class is not ABBR (coarse_label 0).
NO_TARGET = {"…What could happen next, C1 or C2?", "…As a result, C1 or C2?"} | {
    f"fine_grained_{c}{s}" for c in ("DESC", "ENTY", "HUM", "LOC", "NUM") for s in ("", "_context_first")
}


def test_load_templates_reads_fields(promptsource_root):
    rte = load_templates(promptsource_root, "super_glue", "rte")
    gpt3 = rte["GPT-3 style"]
    assert gpt3.id == "8fb1c6aa-20e9-438c-bece-c6af1c746449"
    assert gpt3.answer_choices == "True ||| False"
    assert (gpt3.original_task, gpt3.choices_in_prompt) == (True, True)
    assert load_templates(promptsource_root, "common_gen")["Given concepts type 1"].answer_choices is None
    with pytest.raises(TemplateError, match="no promptsource templates file"):
        load_templates(promptsource_root, "super_glue", "no_such_subset")


def test_rte_gpt3_style_exact(promptsource_root):
    gpt3 = load_templates(promptsource_root, "super_glue", "rte")["GPT-3 style"]
    source = "Dana Reeve died of lung cancer at 44.\nQuestion: Dana Reeve smoked. True or False?"
    assert gpt3.render(RTE_ROW) == (source, "False", ["True", "False"])
    assert gpt3.render({**RTE_ROW, "label": 0}) == (source, "True", ["True", "False"])
    assert gpt3.render({**RTE_ROW, "label": -1}) is None  # the unlabelled test split gives no example


def test_answer_choices_rendered_from_fields(promptsource_root):
    copa = load_templates(promptsource_root, "super_glue", "copa")
    row = ROWS[("super_glue", "copa")]
    assert copa["exercise"].render(row) == (
        (
            "Exercise: choose the most plausible alternative.\n\n"
            "The man broke his toe.  because... \n"
            "- He dropped a hammer on his foot.\n- He got a hole in his sock."
        ),
        "He dropped a hammer on his foot.",
        ["He dropped a hammer on his foot.", "He got a hole in his sock."],
    )
    assert copa["…What could happen next, C1 or C2?"].render(row) is None  # effect-only prompt, cause row
    story = load_templates(promptsource_root, "story_cloze", "2016")["Answer Given options"]
    source, target, choices = story.render(ROWS[("story_cloze", "2016")])
    assert choices == ["She bought food.", "She flew to Mars."] and target == "She bought food."
    assert source == (
        "Ann was hungry. She opened the fridge. It was empty. She went to the store. What is a possible"
        " continuation for the story given the following options ? - She bought food.\n- She flew to Mars."
    )


def test_pipe_protection(promptsource_root):
    gpt3 = load_templates(promptsource_root, "super_glue", "rte")["GPT-3 style"]
    source, target, _ = gpt3.render({**RTE_ROW, "premise": "a ||| b"})
    assert source == "a ||| b\nQuestion: Dana Reeve smoked. True or False?" and target == "False"
    copa = load_templates(promptsource_root, "super_glue", "copa")["exercise"]
    piped = {**ROWS[("super_glue", "copa")], "choice1": "x ||| y"}
    assert copa.render({**piped, "label": 1})[2] == ["x ||| y", "He got a hole in his sock."]
    # As in promptsource, choices reach the main template unprotected: a target choice holding
    # "|||" splits the output in three, which P3 dropped; the other label still renders.
    assert copa.render(piped) is None
    source, target, choices = copa.render({**piped, "label": 1})
    assert "- x ||| y\n" in source and target == "He got a hole in his sock." and choices[0] == "x ||| y"
    assert PIPE_PROTECTOR not in source + target


def test_hyphenated_keys_and_filters():
    t = Template(
        "t", "0", "{{ label_coarse }} {{ xs | most_frequent | join(',') }} ||| {{ (xs | choice) }}", None, None, None
    )
    row = {"label-coarse": 3, "xs": ["a", "b", "b", "c", "c"]}
    assert t.render(row)[0] == "3 b,c"
    draws = {t.render(row, seed=s)[1] for s in range(30)}
    assert draws == {"a", "b", "c"}
    assert [t.render(row, seed=s)[1] for s in range(10)] == [t.render(row, seed=s)[1] for s in range(10)]


def test_render_errors_name_the_template():
    broken = Template("broken", "0", "{{ premise.lower() }} ||| x", None, None, None)
    with pytest.raises(TemplateError, match="template 'broken' failed to render: UndefinedError"):
        broken.render({"premise": None})
    with pytest.raises(TemplateError, match="reserved key 'answer_choices'"):
        broken.render({"premise": "a", "answer_choices": []})
    with pytest.raises(TemplateError, match="template 'bad' failed"):
        Template("bad", "0", "{% if %} ||| x", None, None, None).render({})


def test_long_fields_truncated_like_promptsource(promptsource_root):
    gpt3 = load_templates(promptsource_root, "super_glue", "rte")["GPT-3 style"]
    words = " ".join(["word"] * 600)  # 2999 characters
    source, _, _ = gpt3.render({**RTE_ROW, "premise": words})
    premise = source.split("\nQuestion:")[0]
    assert premise.endswith("word...") and len(premise) <= 2048
    short = "w " * 1026  # 2052 characters, within jinja's leeway of 5: kept whole
    assert gpt3.render({**RTE_ROW, "premise": short})[0].startswith(short.strip())


@pytest.mark.parametrize("key", sorted(ROWS, key=str), ids=lambda k: "/".join(filter(None, k)))
def test_every_template_renders(promptsource_root, key):
    dataset, subset = key
    templates = load_templates(promptsource_root, dataset, subset)
    assert len(templates) == COUNTS[subset or dataset]
    for name, template in templates.items():
        out = template.render(ROWS[key], seed=1)
        if name in NO_TARGET:
            assert out is None, name
            continue
        assert out is not None, name
        source, target, choices = out
        assert source and target
        if template.answer_choices is not None and template.original_task:
            assert target in choices, (name, target, choices)


def test_render_records(promptsource_root):
    copa = load_templates(promptsource_root, "super_glue", "copa")["best_option"]
    row = ROWS[("super_glue", "copa")]
    rows = [row, {**row, "label": 1}, {**row, "label": -1}]
    records = render_records(copa, rows, "super_glue_copa_best_option")
    assert [r["label"] for r in records] == [0, 1]  # the third row has no target
    assert records[1]["target"] == "He got a hole in his sock." and len(records[1]["choices"]) == 2
    assert all(validate(r) == r for r in records)

    gen = load_templates(promptsource_root, "common_gen")["Given concepts type 1"]
    (record,) = render_records(gen, [ROWS[("common_gen", None)]], "common_gen_Given_concepts_type_1")
    assert record == {
        "task": "common_gen_Given_concepts_type_1",
        "source": "Given the list of concepts: ski, mountain, skier; \nGenerate a sentence with all the concepts :",
        "target": "A skier skis down the mountain.",
        "choices": [],
        "label": -1,
    }

    # A target outside the choices is skipped (here a label the choices do not cover).
    rte = load_templates(promptsource_root, "super_glue", "rte")["GPT-3 style"]
    hacked = Template(
        rte.name, rte.id, rte.jinja.replace("answer_choices[label]", "'maybe'"), rte.answer_choices, True, True
    )
    assert render_records(hacked, [RTE_ROW], "t") == []

    # Row i seeds `choice` with (seed, i): reproducible, and rows differ.
    rand = load_templates(promptsource_root, "hellaswag")["Randomized prompts template"]
    hs = [ROWS[("hellaswag", None)]] * 24
    first = [r["source"].split("\n")[0] for r in render_records(rand, hs, "t", seed=3)]
    assert first == [r["source"].split("\n")[0] for r in render_records(rand, hs, "t", seed=3)]
    assert len(set(first)) == 4


def test_template_for_resolves_heldout_and_training(promptsource_root):
    heldout = registry.heldout_templates()
    assert len(heldout) == 116
    for name in heldout:
        template = template_for(promptsource_root, name)
        info = registry.template_info(name)
        assert template.name == info["template_name"].removesuffix("_score_eval")
        assert template.answer_choices is not None, name  # rank classification needs choices
    assert template_for(promptsource_root, "anli_GPT_3_style_r2_score_eval").name == "GPT-3 style"
    assert template_for(promptsource_root, "super_glue_rte_GPT_3_style_score_eval").jinja.startswith(
        "{{premise}}\nQuestion:"
    )

    wanted = {
        "dream",
        "social_i_qa",
        "cosmos_qa",
        "commonsense_qa",
        "quail",
        "common_gen",
        "wiki_qa",
        "rotten_tomatoes",
        "ag_news",
        "trec",
        "glue",
    }
    found: Counter[str] = Counter()
    for name in registry.train_templates():
        info = registry.template_info(name)
        if info["dataset_name"] in wanted and info["subset_name"] in (None, "mrpc"):
            assert template_for(promptsource_root, name).name == info["template_name"]
            found[info["dataset_name"]] += 1
    # CommonsenseQA is not in T0's training mixture (T0 trains on CoS-E, its explained version).
    assert found == {
        "dream": 5,
        "social_i_qa": 6,
        "cosmos_qa": 13,
        "quail": 13,
        "common_gen": 9,
        "wiki_qa": 11,
        "rotten_tomatoes": 10,
        "ag_news": 7,
        "trec": 18,
        "glue": 7,
    }


def test_template_for_normalises_and_reports_candidates(promptsource_root, monkeypatch):
    from promptability.data import promptsource

    fake = {"dataset_name": "super_glue", "subset_name": "rte", "template_name": "GPT_3 style_score_eval"}
    monkeypatch.setattr(promptsource.registry, "template_info", lambda name: dict(fake))
    assert template_for(promptsource_root, "x").name == "GPT-3 style"
    fake["template_name"] = "no such template"
    with pytest.raises(TemplateError, match=r"candidates: .*'GPT-3 style'"):
        template_for(promptsource_root, "x")
    monkeypatch.undo()
    with pytest.raises(TemplateError, match="unknown P3 template"):
        template_for(promptsource_root, "not_a_p3_template")


# --- parity with real P3 rows -------------------------------------------------------------


def _p3(p3_samples, name, split):
    return list(read_p3(p3_samples / name, split))


@pytest.mark.parametrize("split", ["validation", "test"])
def test_story_cloze_matches_p3(p3_samples, promptsource_root, split):
    """Raw fields rebuilt from P3's rendered text (story lines, choices, correct one) render back to it."""
    name = "story_cloze_2016_Story_Continuation_and_Options_score_eval"
    template = template_for(promptsource_root, name)
    instances = _p3(p3_samples, name, split)
    assert len(instances) == 28
    for inst in instances:
        lines = inst["source"].split("\n")
        row = {f"input_sentence_{k}": lines[k + 1] for k in range(1, 5)}
        row.update(
            sentence_quiz1=inst["choices"][0],
            sentence_quiz2=inst["choices"][1],
            answer_right_ending=inst["choices"].index(inst["target"]) + 1,
        )
        assert template.render(row) == (inst["source"].strip(), inst["target"], inst["choices"])


def test_story_cloze_first_story_from_realdata(p3_samples, promptsource_root, realdata_root):
    """The real first validation story ("Rick grew up…") renders to P3's first test row."""
    with open(realdata_root / "story_cloze__2016__cloze_valid.csv", newline="", encoding="utf-8") as f:
        raw = next(csv.DictReader(f))
    row = {f"input_sentence_{k}": raw[f"InputSentence{k}"] for k in range(1, 5)}
    row.update(
        sentence_quiz1=raw["RandomFifthSentenceQuiz1"],
        sentence_quiz2=raw["RandomFifthSentenceQuiz2"],
        answer_right_ending=int(raw["AnswerRightEnding"]),
    )
    name = "story_cloze_2016_Story_Continuation_and_Options_score_eval"
    p3 = _p3(p3_samples, name, "test")[0]
    assert row["input_sentence_1"] == "Rick grew up in a troubled household."
    assert template_for(promptsource_root, name).render(row) == (
        p3["source"].strip(),
        "He is happy now.",
        p3["choices"],
    )
    records = render_records(template_for(promptsource_root, name), [row], name)
    assert records[0]["label"] == p3["label"] == 0


@pytest.mark.parametrize("split", ["train", "validation"])
def test_hellaswag_matches_p3(p3_samples, promptsource_root, split):
    checked = 0
    for name in ("hellaswag_if_begins_how_continues_score_eval", "hellaswag_complete_first_then_score_eval"):
        template = template_for(promptsource_root, name)
        for inst in _p3(p3_samples, name, split):
            src = inst["source"]
            if "if_begins" in name:
                ctx = src.split("begins like this: ", 1)[1].split("... Then how\n", 1)[0]
                endings = [src.split(f"Ending {k}: ", 1)[1].split("\n", 1)[0] for k in range(1, 5)]
                row = {"ctx": ctx, "endings": endings, "label": str(inst["label"])}
            else:  # ctx_a and ctx_b come lower-cased; capital "Then, " is the template's own
                head = src.split("\nFirst, ", 1)[1].split(" ...\n", 1)[0]
                ctx_a, ctx_b = head.rsplit(" Then, ", 1)
                row = {"ctx_a": ctx_a, "ctx_b": ctx_b, "endings": inst["choices"], "label": str(inst["label"])}
            assert template.render(row) == (src.strip(), inst["target"], inst["choices"]), name
            checked += 1
    assert checked >= 14


def test_training_templates_match_p3(p3_samples, promptsource_root):
    """Two P3 training configs (no choices; `choice` over one answer) rebuilt and rendered back."""
    obqa = load_templates(promptsource_root, "openbookqa", "main")["choices"]
    for inst in _p3(p3_samples, "openbookqa_main_choices", "validation"):
        stem = inst["source"].split("\n\nChoices:\n", 1)[0]
        texts = inst["choices"]
        row = {
            "question_stem": stem,
            "choices": {"text": texts, "label": list("ABCD")},
            "answerKey": "ABCD"[texts.index(inst["target"])],
        }
        assert obqa.render(row) == (inst["source"].strip(), inst["target"], texts)
    based_on = load_templates(promptsource_root, "adversarial_qa", "dbert")["based_on"]
    for inst in _p3(p3_samples, "adversarial_qa_dbert_based_on", "train"):
        question, context = inst["source"].split("\nQuestion: ", 1)[1].split("\nContext: ", 1)
        row = {
            "question": question,
            "context": context,
            "answers": {"text": [inst["target"]]},
            "metadata": {"split": "train"},
        }
        assert based_on.render(row) == (inst["source"].strip(), inst["target"], [])
    assert based_on.render({**row, "metadata": {"split": "test"}}) is None
