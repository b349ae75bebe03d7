"""The clusters of the offline task suite: one generator per dataset, and the table of datasets.

A generator ``make(world, rng, want) -> instance`` draws one underlying example (a dict of
fields) from the world; ``want`` holds the balanced draws the driver asks for (e.g. the
label). Each dataset's templates (``promptability.suite.templates``) turn an instance into
records, as promptsource templates do. Adding a cluster = a generator, a template table and
a line in :data:`DATASETS`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from promptability.suite import world as w
from promptability.suite.templates import (
    CLOSED_BOOK_T,
    COMPLETION_T,
    COREF_T,
    EXTRACTIVE_T,
    MCQA_T,
    PARAPHRASE_T,
    SENTIMENT_T,
    STRUCT_T,
    SUMMARY_T,
    TOPIC_T,
    WSD_T,
    Instance,
    Template,
)

Want = dict[str, int]


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


def coreference(world: w.World, rng: random.Random, want: Want) -> Instance:
    a, b = w.pick_names(rng, 2, mixed=True)
    ref, other = (a, b) if want["label"] == 0 else (b, a)
    town, pet = rng.choice(w.TOWNS), rng.choice(w.PETS)
    first = rng.choice(w.MEETINGS).format(a=a.name, b=b.name, town=town)
    forms = ref.forms(True)
    action = rng.choice(w.ACTIONS)
    last = action.format(o=other.forms(True)["o"], town=town, pet=pet, **{k: forms[k] for k in "Sp"})
    return {"text": f"{first} {last}", "last": last, "pronoun": forms["s"], "a": a.name, "b": b.name,
            "label": want["label"]}  # fmt: skip


def completion(world: w.World, rng: random.Random, want: Want) -> Instance:
    """The first steps of an event script and two candidate next steps, named by their verbs: the right one, and
    (80%) a step of another script or (20%) a step the story already told, whose verb the right step lacks."""
    (person,) = w.pick_names(rng, 1)
    name = rng.choice(list(w.SCRIPTS))
    script, fillers = w.SCRIPTS[name], w.fill(rng)
    k = rng.randint(2, len(script.steps) - 2)
    context = _story(rng, script, person, fillers, k)
    right = script.steps[k].format(**fillers)
    own = {step.split()[0] for step in script.steps}
    if rng.random() < 0.2:
        told = [step for step in script.steps[:k] if step.split()[0] != right.split()[0]]
        wrong = rng.choice(told).format(**fillers)
    else:
        foreign = [step for other in w.SCRIPTS.values() if other is not script for step in other.steps]
        wrong = rng.choice([step for step in foreign if step.split()[0] not in own]).format(**w.fill(rng))
    subject = person.forms(True)
    steps = (wrong, right) if want["label"] else (right, wrong)
    return {"context": " ".join(context), "e0": f"{subject['S']} {steps[0]}.", "e1": f"{subject['S']} {steps[1]}.",
            "v0": steps[0].split()[0], "v1": steps[1].split()[0], "s": subject["s"],
            "label": want["label"]}  # fmt: skip


def word_sense(world: w.World, rng: random.Random, want: Want) -> Instance:
    """A sentence using an ambiguous word in one of its two senses; each sense is named by its topic."""
    word = rng.choice(list(w.USAGES))
    senses = [topic for topic, _ in w.USAGES[word]]
    asked = want["label"] if want["yn"] else 1 - want["label"]
    return {"word": word, "s": w.usage(rng, word, want["label"]), "t0": senses[0], "t1": senses[1],
            "topic": senses[asked], "label": want["label"], "yn": want["yn"]}  # fmt: skip


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
    "coreference": ("heldout", "which person a pronoun refers to"),
    "completion": ("heldout", "which sentence continues a story"),
    "word_sense": ("heldout", "in which sense a sentence uses an ambiguous word"),
}
L2, L4 = (("label", 2),), (("label", 4),)
LYN = (("label", 2), ("yn", 2))  # which sense is used, and whether the true/false template names it
DATASETS: tuple[Dataset, ...] = (
    Dataset("sentiment", "reviews", "Sentiment", sentiment, SENTIMENT_T, L2),
    Dataset("topic", "news", "Topic", topic, TOPIC_T, (("label", len(w.TOPICS)),)),
    Dataset("paraphrase", "fact_pairs", "Paraphrase", paraphrase, PARAPHRASE_T, L2),
    Dataset("extractive_qa", "people_facts", "ExtractiveQA", extractive_qa, EXTRACTIVE_T),
    Dataset("multiple_choice_qa", "people_quiz", "MultipleChoiceQA", multiple_choice_qa, MCQA_T, L4),
    Dataset("closed_book_qa", "world_facts", "ClosedBookQA", closed_book_qa, CLOSED_BOOK_T, unique=False),
    Dataset("structure_to_text", "person_records", "StructToText", structure_to_text, STRUCT_T),
    Dataset("summarization", "daily_stories", "Summarization", summarisation, SUMMARY_T),
    Dataset("coreference", "pronoun_stories", "Coreference", coreference, COREF_T, L2),
    Dataset("completion", "script_endings", "Completion", completion, COMPLETION_T, L2),
    Dataset("word_sense", "word_usages", "WordSense", word_sense, WSD_T, LYN),
)
