"""The wording of the offline task suite: every dataset's templates, as promptsource would write them.

A :class:`Template` turns an instance (a dict of fields drawn by a generator in ``promptability.suite.tasks``) into
a record: ``source`` and ``choices`` are ``str.format`` strings over the instance fields, and the target is the
labelled choice (or ``target`` for generative templates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptability.suite import world as w

Instance = dict[str, Any]


@dataclass(frozen=True)
class Template:
    name: str
    source: str
    choices: tuple[str, ...] = ()  # format strings, in label order; () for generative templates
    target: str = ""  # generative templates only
    label: str = "label"  # the instance field indexing ``choices``

    def render(self, task: str, inst: Instance) -> dict[str, Any]:
        source = self.source.format(**inst)
        if not self.choices:
            return {"task": task, "source": source, "target": self.target.format(**inst), "choices": [], "label": -1}
        choices = [c.format(**inst) for c in self.choices]
        label = int(inst[self.label])
        return {"task": task, "source": source, "target": choices[label], "choices": choices, "label": label}


# --- template tables ----------------------------------------------------------------------------------

T = Template
NO_YES = ("no", "yes")
SENTIMENT_T = (
    T("is_it_positive", "{review}\nIs this review positive?", NO_YES),
    T("what_sentiment", "Review: {review}\nWhat is the sentiment of this review?", ("negative", "positive")),
    T("did_they_like", "{review}\nDid the reviewer like the {item}?", NO_YES),
    T("thumbs", "{review}\nThumbs up or thumbs down?", ("thumbs down", "thumbs up")),
    T("stars", "Here is a review: {review}\nWould the writer give it one star or five stars?",
      ("one star", "five stars")),
)  # fmt: skip
TOPIC_T = (
    T("which_topic", "{text}\nWhich topic is this text about: " + ", ".join(w.TOPICS) + "?", w.TOPICS),
    T("classify", "Classify the topic of the following text.\n{text}", w.TOPICS),
    T("section", "{text}\nIn which section of a magazine would you read this?", w.TOPICS),
    T("about", "What is the following text mostly about? {text}", w.TOPICS),
)
PARAPHRASE_T = (
    T("same_meaning", "Sentence 1: {s1}\nSentence 2: {s2}\nDo these two sentences mean the same thing?", NO_YES),
    T("is_paraphrase", 'Is "{s2}" a paraphrase of "{s1}"?', NO_YES),
    T("equivalent", "{s1}\n{s2}\nAre these two texts equivalent or not equivalent?", ("not equivalent", "equivalent")),
    T("true_false", "Text: {s1}\nRewrite: {s2}\nThe rewrite says the same as the text. True or false?",
      ("false", "true")),
)  # fmt: skip
EXTRACTIVE_T = (
    T("answer_question", "{context}\nQuestion: {question}\nAnswer:", target="{answer}"),
    T("read_then_answer", "Read the text and answer the question.\nText: {context}\nQuestion: {question}",
      target="{answer}"),
    T("question_first", "{question}\nFind the answer in this text: {context}", target="{answer}"),
    T("write_question", '{context}\nWrite a question about the text whose answer is "{answer}".', target="{question}"),
)  # fmt: skip
OPTIONS4 = ("{o0}", "{o1}", "{o2}", "{o3}")
MCQA_T = (
    T("pick_option", "{context}\nQuestion: {question}\nOptions: {options}\nAnswer:", OPTIONS4),
    T("choose_best", "Read the text and choose the best answer.\n{context}\n{question}\n{options}", OPTIONS4),
    T("no_options", "{context}\n{question}", OPTIONS4),
    T("question_first", "Question: {question}\nText: {context}\nPossible answers: {options}", OPTIONS4),
)
CLOSED_BOOK_T = (
    T("plain", "{question}", target="{answer}"),
    T("qa_format", "Q: {question}\nA:", target="{answer}"),
    T("trivia", "Answer the following trivia question about the world.\n{question}", target="{answer}"),
    T("general_knowledge", "Use what you know to answer: {question}", target="{answer}"),
)
STRUCT_T = (
    T("table_to_text", "Turn this table into a short text.\n{table}", target="{text}"),
    T("describe_person", "Write a short description of {name} from these facts: {pairs}", target="{text}"),
    T("keywords", "Write a few sentences that use these words: {keywords}", target="{text}"),
    T("biography", "{table}\nWrite a short biography of the person above.", target="{text}"),
)
SUMMARY_T = (
    T("summarize", "Summarize this story: {story}", target="{summary}"),
    T("tldr", "{story}\nTL;DR:", target="{summary}"),
    T("one_sentence", "{story}\nWhat happened in this story, in one sentence?", target="{summary}"),
    T("title", "{story}\nGive this story a short title.", target="{title}"),
)
# Every held-out answer is one word: the tiny oracle learns to choose among words in a few hundred steps, but not
# to map a judgement onto label words (yes/maybe/no, true/false stayed at exactly chance for every template after
# 250 steps of MTL-T with the held-out pools: see docs/miniature.md). Each template names its options in the
# source. (NLI, whose options were the answer choices only, was dropped: the oracle did not learn it.)
NAMES2 = ("{a}", "{b}")
COREF_T = (
    T("who_is_pronoun", '{text}\nIn the last sentence, who does "{pronoun}" refer to?', NAMES2),
    T("replace_pronoun", '{text}\nIn the last sentence, "{pronoun}" can be replaced by which name, {a} or {b}?',
      NAMES2),
    T("which_person", '{text}\nIn "{last}", which person is "{pronoun}": {b} or {a}?', NAMES2),
    T("pronoun_quiz", 'Read: {text}\nQuestion: Who is "{pronoun}" in the second sentence?\nAnswer:', NAMES2),
)  # fmt: skip
VERBS2 = ("{v0}", "{v1}")
COMPLETION_T = (
    T("what_happens_next", '{context}\nWhat happens next: "{e0}" or "{e1}"? Answer {v0} or {v1}.', VERBS2),
    T("which_option", "{context}\nWhich is the next sentence of the story?\n(a) {e0}\n(b) {e1}\nAnswer with its verb:",
      VERBS2),
    T("next_action", "{context}\nWhat does {s} do next, {v0} or {v1}?", VERBS2),
    T("complete_story", "Complete the story with the right sentence: {e0} / {e1}\n{context}", VERBS2),
)  # fmt: skip
WSD_T = (
    T("which_meaning", 'In "{s}", which meaning of "{word}" is meant, the {t0} one or the {t1} one?', ("{t0}", "{t1}")),
    T("about", '{s}\nIs the word "{word}" in this sentence about {t0} or about {t1}?', ("{t0}", "{t1}")),
    T("topic_of_word", 'What is "{word}" about here: {t1} or {t0}? {s}', ("{t0}", "{t1}")),
    T("true_or_false", '{s}\nIn this sentence, "{word}" is used in its {topic} sense. True or false?',
      ("false", "true"), label="yn"),
)  # fmt: skip
