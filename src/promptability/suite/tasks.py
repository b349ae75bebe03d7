"""The clusters of the offline task suite: one generator and one template table per dataset.

A generator ``make(world, rng, want) -> instance`` draws one underlying example (a dict of
fields) from the world; ``want`` holds the balanced draws the driver asks for (e.g. the
label). A :class:`Template` turns an instance into a record, as a promptsource template
does: ``source`` and ``choices`` are ``str.format`` strings over the instance fields, and
the target is the labelled choice (or ``target`` for generative templates). Adding a
cluster = a generator, a template table and a line in :data:`DATASETS`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptability.suite import world as w

Instance = dict[str, Any]
Want = dict[str, int]


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


@dataclass(frozen=True)
class Dataset:
    cluster: str
    name: str
    group: str  # the dataset group ARG averages over (held-out) or reports by (training)
    make: Callable[[w.World, random.Random, Want], Instance]
    templates: tuple[Template, ...]
    balance: tuple[tuple[str, int], ...] = ()  # instance fields drawn exactly balanced, with their arity
    unique: bool = True  # closed-book facts repeat by design; everything else is deduplicated

    def task(self, template: Template) -> str:
        return f"suite_{self.cluster}_{self.name}_{template.name}"


# --- training clusters --------------------------------------------------------------------------------

def _clause(rng: random.Random, aspect: str, positive: int) -> str:
    if rng.random() < 0.2:  # negating the opposite word, so single words do not decide the label
        return f"{aspect} was not {rng.choice(w.ADJECTIVES[1 - positive])}"
    return f"{aspect} was {rng.choice(('', 'really ', 'truly ', 'quite '))}{rng.choice(w.ADJECTIVES[positive])}"


def sentiment(world: w.World, rng: random.Random, want: Want) -> Instance:
    pos = want["label"]
    item = rng.choice(list(w.REVIEW_ASPECTS))
    aspects = rng.sample(w.REVIEW_ASPECTS[item], rng.randint(2, 3))
    clauses = [_clause(rng, a, pos) for a in aspects]
    contrast = rng.random() < 0.3
    if contrast:  # a mixed review; the overall verdict then always follows
        clauses[-1] = _clause(rng, aspects[-1], 1 - pos)
        body = ". ".join(c[0].upper() + c[1:] for c in clauses[:-2]) + (". " if len(clauses) > 2 else "")
        body += f"{clauses[-2][0].upper() + clauses[-2][1:]}, but {clauses[-1]}."
    else:
        body = " ".join(c[0].upper() + c[1:] + "." for c in clauses)
    parts = [rng.choice(w.OPENERS).format(item=item), body]
    if contrast or rng.random() < 0.8:
        parts.append(rng.choice(w.VERDICTS[pos]))
    return {"review": " ".join(p for p in parts if p), "item": item, "label": pos}


def topic(world: w.World, rng: random.Random, want: Want) -> Instance:
    name = w.TOPICS[want["label"]]
    sentences = [w.topic_sentence(rng, name) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.5:  # an ambiguous word in this topic's sense, the skill word sense needs
        word, sense = rng.choice(w.topic_usages(name))
        sentences.insert(rng.randint(0, len(sentences)), w.usage(rng, word, sense))
    return {"text": " ".join(sentences), "label": want["label"]}


def paraphrase(world: w.World, rng: random.Random, want: Want) -> Instance:
    (person,) = w.pick_names(rng, 1)
    w.give_facts(rng, [person], (1, 2))
    slots = list(person.facts)
    v1 = [rng.randrange(4) for _ in slots]
    s1 = " ".join(w.say(rng, s, person.facts[s], person.forms(i > 0), v) for i, (s, v) in enumerate(zip(slots, v1)))
    while True:
        other = w.Person(person.name, person.female, dict(person.facts))
        order = rng.sample(slots, len(slots))
        v2 = [rng.randrange(4) for _ in slots] if want["label"] or rng.random() < 0.5 else list(v1)
        if not want["label"]:
            if rng.random() < 0.75:  # one value changed ...
                slot = rng.choice(slots)
                other.facts[slot] = rng.choice([v for v in w.SLOTS[slot].values if v != person.facts[slot]])
            else:  # ... or the facts belong to someone else
                other.name = w.pick_names(rng, 1, exclude=(person.name,))[0].name
                other.female = other.name in w.FEMALE
        variants = dict(zip(slots, v2))
        s2 = " ".join(w.say(rng, s, other.facts[s], other.forms(i > 0), variants[s]) for i, s in enumerate(order))
        if s2 != s1:
            return {"s1": s1, "s2": s2, "label": want["label"]}


def _people_context(rng: random.Random, n: int = 2) -> tuple[list[w.Person], str]:
    people = w.pick_names(rng, n, mixed=n == 2 and rng.random() < 0.7)
    w.give_facts(rng, people)
    return people, w.describe_all(rng, people)


def extractive_qa(world: w.World, rng: random.Random, want: Want) -> Instance:
    people, context = _people_context(rng)
    person = rng.choice(people)
    slot = rng.choice(list(person.facts))
    spec, value = w.SLOTS[slot], person.facts[slot]
    if rng.random() < 0.3:
        question, answer = rng.choice(spec.whos).format(v=value), person.name
    else:
        question, answer = rng.choice(spec.asks).format(**person.forms()), value
    return {"context": context, "question": question, "answer": answer}


def _options(rng: random.Random, answer: str, near: list[str], pool: tuple[str, ...], at: int) -> list[str]:
    """Four options: the answer at ``at``, near misses from the context first, then random ones."""
    others = [x for x in dict.fromkeys(near) if x != answer][:3]
    rest = [x for x in pool if x != answer and x not in others]
    others += rng.sample(rest, 3 - len(others))
    rng.shuffle(others)
    return others[:at] + [answer] + others[at:]


def multiple_choice_qa(world: w.World, rng: random.Random, want: Want) -> Instance:
    people, context = _people_context(rng, rng.choice((2, 2, 3)))
    person = rng.choice(people)
    kind = rng.random()
    if kind < 0.25 and "town" in person.facts:  # needs the town facts of closed-book QA too
        question = rng.choice(w.SLOTS["region"].asks).format(**person.forms())
        options = _options(rng, world.region[person.facts["town"]], [], w.REGIONS, want["label"])
    elif kind < 0.5:
        slot = rng.choice(list(person.facts))
        question = rng.choice(w.SLOTS[slot].whos).format(v=person.facts[slot])
        options = _options(rng, person.name, [p.name for p in people], w.NAMES, want["label"])
    else:
        slot = rng.choice(list(person.facts))
        near = [p.facts[slot] for p in people if slot in p.facts]
        question = rng.choice(w.SLOTS[slot].asks).format(**person.forms())
        options = _options(rng, person.facts[slot], near, w.SLOTS[slot].values, want["label"])
    listed = " ".join(f"({'abcd'[i]}) {o}" for i, o in enumerate(options))
    return {"context": context, "question": question, "options": listed, "label": want["label"]} | {
        f"o{i}": o for i, o in enumerate(options)
    }


def closed_book_qa(world: w.World, rng: random.Random, want: Want) -> Instance:
    asks, subject, answer = rng.choice(w.world_facts(world))
    return {"question": rng.choice(asks).format(x=subject), "answer": answer}


def structure_to_text(world: w.World, rng: random.Random, want: Want) -> Instance:
    (person,) = w.pick_names(rng, 1)
    w.give_facts(rng, [person], (2, 4))
    pairs = [(w.SLOTS[s].key, v) for s, v in person.facts.items()]
    return {
        "name": person.name,
        "table": " | ".join([f"name: {person.name}"] + [f"{k}: {v}" for k, v in pairs]),
        "pairs": "; ".join(f"{k} = {v}" for k, v in pairs),
        "keywords": ", ".join([person.name] + [v for _, v in pairs]),
        "text": " ".join(w.describe(rng, person)),
    }


def _story(rng: random.Random, script: w.Script, person: w.Person, fillers: dict[str, str], upto: int) -> list[str]:
    steps = script.steps[:upto]
    return [w.step_sentence(rng, s, person, fillers, first=i == 0) for i, s in enumerate(steps)]


def summarisation(world: w.World, rng: random.Random, want: Want) -> Instance:
    (person,) = w.pick_names(rng, 1)
    script = w.SCRIPTS[rng.choice(list(w.SCRIPTS))]
    fillers = w.fill(rng)
    story = _story(rng, script, person, fillers, len(script.steps))
    if rng.random() < 0.4:  # a fact the summary must leave out
        slot = rng.choice(w.FACT_SLOTS)
        fact = w.say(rng, slot, rng.choice(w.SLOTS[slot].values), person.forms(True))
        story.insert(rng.randint(1, len(story)), fact)
    return {"story": " ".join(story), "summary": script.summary.format(N=person.name, **fillers), "title": script.title}


# --- held-out clusters --------------------------------------------------------------------------------


def _inference(world: w.World, rng: random.Random, relation: int) -> Instance:
    """A premise about two people and a hypothesis: ``relation`` 0 entailed, 1 neutral, 2 contradicted."""
    people, premise = _people_context(rng)
    person, other = rng.sample(people, 2)
    known = list(person.facts)
    # Wrong hypotheses mostly reuse a value the premise gives the other person, so that "is the
    # value in the text" does not decide the label.
    if relation == 1:  # a slot the premise says nothing about
        unknown = [s for s in w.FACT_SLOTS if s not in known]
        borrow = [s for s in unknown if s in other.facts]
        if borrow and rng.random() < 0.8:
            slot = rng.choice(borrow)
            value = other.facts[slot]
        else:
            slot = rng.choice(unknown + ([] if "town" in known else ["region"]))
            value = rng.choice(w.SLOTS[slot].values)
    else:
        if "town" in known and rng.random() < 0.3:  # through the world's town facts (closed-book QA)
            slot, truth = "region", world.region[person.facts["town"]]
        else:
            both = [s for s in known if s in other.facts]
            slot = rng.choice(both if relation == 2 and both and rng.random() < 0.8 else known)
            truth = person.facts[slot]
        value = truth
        if relation == 2:
            near = other.facts.get(slot)
            value = near if near and near != truth else rng.choice([v for v in w.SLOTS[slot].values if v != truth])
    hypothesis = w.say(rng, slot, value, person.forms())
    return {"premise": premise, "hypothesis": hypothesis}


def nli(world: w.World, rng: random.Random, want: Want) -> Instance:
    return _inference(world, rng, want["label"]) | {"label": want["label"]}


def entailment(world: w.World, rng: random.Random, want: Want) -> Instance:
    relation = 0 if want["label"] == 0 else rng.choice((1, 2))
    return _inference(world, rng, relation) | {"label": want["label"]}


def coreference(world: w.World, rng: random.Random, want: Want) -> Instance:
    a, b = w.pick_names(rng, 2, mixed=True)
    ref, other = (a, b) if want["label"] == 0 else (b, a)
    town, pet = rng.choice(w.TOWNS), rng.choice(w.PETS)
    lines = [rng.choice(w.MEETINGS).format(a=a.name, b=b.name, town=town)]
    if rng.random() < 0.5:  # a fact about one of them, by name, between the two
        slot = rng.choice(w.FACT_SLOTS)
        lines.append(w.say(rng, slot, rng.choice(w.SLOTS[slot].values), rng.choice((a, b)).forms()))
    forms = ref.forms(True)
    action = rng.choice(w.ACTIONS)
    last = action.format(o=other.forms(True)["o"], town=town, pet=pet, **{k: forms[k] for k in "Sp"})
    blank = "_" + last[len(forms["S"]) :]
    cand = ref if want["yn"] else other
    return {
        "text": " ".join(lines + [last]), "text_blank": " ".join(lines + [blank]), "pronoun": forms["s"],
        "a": a.name, "b": b.name, "cand": cand.name, "label": want["label"], "yn": want["yn"],
    }  # fmt: skip


def completion(world: w.World, rng: random.Random, want: Want) -> Instance:
    (person,) = w.pick_names(rng, 1)
    name, *others = rng.sample(list(w.SCRIPTS), 3)
    script, fillers = w.SCRIPTS[name], w.fill(rng)
    k = rng.randint(2, len(script.steps) - 2)
    context = _story(rng, script, person, fillers, k)
    subject = person.forms(True)["S"]
    wrong_step = script.steps[rng.choice([i for i in (k - 2, k + 1) if 0 <= i < len(script.steps)])]
    wrong = [wrong_step.format(**fillers)] + [rng.choice(w.SCRIPTS[o].steps).format(**w.fill(rng)) for o in others]
    rng.shuffle(wrong)
    right = script.steps[k].format(**fillers)
    endings = [f"{subject} {s}." for s in wrong[: want["label"]] + [right] + wrong[want["label"] :]]
    listed = " ".join(f"({'abcd'[i]}) {e}" for i, e in enumerate(endings))
    return {"context": " ".join(context), "options": listed, "label": want["label"]} | {
        f"e{i}": e for i, e in enumerate(endings)
    }


def word_sense(world: w.World, rng: random.Random, want: Want) -> Instance:
    word = rng.choice(list(w.USAGES))
    if want["label"]:  # same sense, different sentences
        sense = rng.randrange(2)
        f1, f2 = rng.sample(range(len(w.USAGES[word][sense][1])), 2)
        s1, s2 = w.usage(rng, word, sense, f1), w.usage(rng, word, sense, f2)
    else:
        first = rng.randrange(2)
        s1, s2 = w.usage(rng, word, first), w.usage(rng, word, 1 - first)
    return {"word": word, "s1": s1, "s2": s2, "label": want["label"]}


# --- templates ----------------------------------------------------------------------------------------

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
YES_MAYBE_NO = ("yes", "maybe", "no")
NLI_T = (
    T("gpt3_style", "{premise}\nQuestion: {hypothesis} True, false, or neither?\nAnswer:",
      ("true", "neither", "false")),
    T("must_be_true", 'Given this text: {premise} Therefore, it must be true that "{hypothesis}" '
      "Yes, no, or maybe?", YES_MAYBE_NO),
    T("does_it_follow", '{premise}\nDoes it follow that "{hypothesis}" Yes, no, or maybe?', YES_MAYBE_NO),
    T("based_on_passage", '{premise} Based on the previous passage, is it true that "{hypothesis}" '
      "Yes, no, or maybe?", YES_MAYBE_NO),
    T("always_sometimes_never", 'Suppose that {premise} Then, is "{hypothesis}" always, sometimes, or never true?',
      ("always", "sometimes", "never")),
)  # fmt: skip
RTE_T = (
    T("does_this_mean", '{premise}\nDoes this mean that "{hypothesis}" Yes or no?', ("yes", "no")),
    T("gpt3_style", "{premise}\nQuestion: {hypothesis} True or false?\nAnswer:", ("true", "false")),
    T("premise_entails", "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis?",
      ("yes", "no")),
    T("can_we_infer", "{premise}\nCan we infer the following?\n{hypothesis}", ("yes", "no")),
)  # fmt: skip
NAMES2 = ("{a}", "{b}")
COREF_T = (
    T("who_is_pronoun", '{text}\nIn the last sentence, who does "{pronoun}" refer to?', NAMES2),
    T("replace_pronoun", '{text}\nIn the last sentence, "{pronoun}" can be replaced by which name, {a} or {b}?',
      NAMES2),
    T("does_refer", '{text}\nHere, does "{pronoun}" stand for {cand}? Yes or no?', NO_YES, label="yn"),
    T("fill_blank", "{text_blank}\nWho should the _ be, {a} or {b}?", NAMES2),
)  # fmt: skip
ENDINGS4 = ("{e0}", "{e1}", "{e2}", "{e3}")
COMPLETION_T = (
    T("what_happens_next", "{context}\nWhat happens next?", ENDINGS4),
    T("most_likely", "{context}\nWhich of these is the most likely next sentence?\n{options}", ENDINGS4),
    T("complete_story", "Complete the story with the right sentence.\n{context}", ENDINGS4),
    T("how_continues", "How does this story continue? {context}", ENDINGS4),
)
WSD_T = (
    T("same_sense", 'Sentence A: {s1}\nSentence B: {s2}\nIs the word "{word}" used with the same meaning in both '
      "sentences?", NO_YES),
    T("gpt3_style", "{s1}\n{s2}\nQuestion: Is the word '{word}' used in the same sense in the two sentences above?",
      NO_YES),
    T("same_or_different", 'Does the word "{word}" have the same or a different meaning in "{s1}" and "{s2}"?',
      ("different", "same")),
    T("true_or_false", 'Sentence 1: {s1} Sentence 2: {s2}\n"{word}" means the same thing in sentence 1 and sentence 2. '
      "True or false?", ("false", "true")),
)  # fmt: skip

# cluster -> (role, one-line description); the docstring of promptability.suite has the details.
CLUSTERS: dict[str, tuple[str, str]] = {
    "sentiment": ("train", "is a short review positive or negative"),
    "topic": ("train", "which of 7 topics a text is about"),
    "paraphrase": ("train", "do two statements of person facts mean the same"),
    "extractive_qa": ("train", "answer a question with a span of a text about people"),
    "multiple_choice_qa": ("train", "pick one of 4 answers to a question about a text"),
    "closed_book_qa": ("train", "answer from the world's fixed facts, without a text"),
    "structure_to_text": ("train", "write a person record as sentences"),
    "summarization": ("train", "summarise or title an everyday story"),
    "nli": ("heldout", "does a text about people entail a statement (3-way and 2-way)"),
    "coreference": ("heldout", "which person a pronoun refers to"),
    "completion": ("heldout", "which of 4 sentences continues a story"),
    "word_sense": ("heldout", "is a word used in the same sense in two sentences"),
}
L2, L3, L4 = (("label", 2),), (("label", 3),), (("label", 4),)
DATASETS: tuple[Dataset, ...] = (
    Dataset("sentiment", "reviews", "Sentiment", sentiment, SENTIMENT_T, L2),
    Dataset("topic", "news", "Topic", topic, TOPIC_T, (("label", len(w.TOPICS)),)),
    Dataset("paraphrase", "fact_pairs", "Paraphrase", paraphrase, PARAPHRASE_T, L2),
    Dataset("extractive_qa", "people_facts", "ExtractiveQA", extractive_qa, EXTRACTIVE_T),
    Dataset("multiple_choice_qa", "people_quiz", "MultipleChoiceQA", multiple_choice_qa, MCQA_T, L4),
    Dataset("closed_book_qa", "world_facts", "ClosedBookQA", closed_book_qa, CLOSED_BOOK_T, unique=False),
    Dataset("structure_to_text", "person_records", "StructToText", structure_to_text, STRUCT_T),
    Dataset("summarization", "daily_stories", "Summarization", summarisation, SUMMARY_T),
    Dataset("nli", "fact_inference", "NLI", nli, NLI_T, L3),
    Dataset("nli", "fact_entailment", "RTE", entailment, RTE_T, L2),
    Dataset("coreference", "pronoun_stories", "Coreference", coreference, COREF_T, (("label", 2), ("yn", 2))),
    Dataset("completion", "script_endings", "Completion", completion, COMPLETION_T, L4),
    Dataset("word_sense", "word_usages", "WordSense", word_sense, WSD_T, L2),
)
