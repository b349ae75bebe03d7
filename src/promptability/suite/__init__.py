"""The offline task suite: a small P3-like prompted benchmark, generated from a seed with no download.

It lets the whole pipeline (multi-task continued pretraining on training templates, then
zero-shot and 16-shot rank-classification evaluation on held-out task types) run on a
laptop CPU in minutes with a tiny T5. Like P3, every dataset is rendered through several
differently worded templates, each template is a "task" (``suite_<cluster>_<dataset>_<template>``),
and the held-out task types (coreference, sentence completion, word sense) are never
trained on. The texts come from one small world (``world``): names with genders,
jobs, towns (whose region and product the seed decides), pets, colours, foods, ten
everyday event scripts, seven topics and fifteen ambiguous words. Skills are shared
between training and held-out clusters, so zero-shot transfer is possible but not free.

Training clusters (train split + a small validation split):

- sentiment / reviews (5 templates, 2 choices: no/yes, negative/positive, thumbs down/up, one/five
  stars): reviews of a film, restaurant, book or hotel from 2-3 aspect clauses, some negated
  ("was not boring") or contrasted ("..., but ..."), usually closed by a verdict.
- topic / news (4 templates, 7 choices: sports, music, animals, money, nature, technology, food):
  1-3 sentences; half contain an ambiguous word in that topic's sense ("swung the bat" vs "a bat
  flew out of the cave"). Shares the word usages with word sense.
- paraphrase / fact_pairs (4 templates, 2 choices): two statements of 1-2 person facts, worded
  differently ("Anna works as a doctor. Her pet is a cat." / "Anna owns a pet cat. She is a
  doctor."), or with one value or the person changed.
- extractive_qa / people_facts (4 templates, generative): a text about two people (pronouns where
  the genders differ) and a question answered by a value or a name; one template writes the
  question from the answer. Shares pronoun resolution with coreference.
- multiple_choice_qa / people_quiz (4 templates, 4 choices): the same kind of text about 2-3
  people, with 4 options (near misses from the text first); a quarter ask for the region of the
  person's town, which only closed-book knowledge gives. Shares names as answers with coreference.
- closed_book_qa / world_facts (4 templates, generative): the world's fixed facts: the region of a
  town and what it is famous for (drawn per seed), where a job is done, what a pet eats.
- structure_to_text / person_records (4 templates, generative): a record (table, key = value
  pairs, or keywords) of a person with 2-4 facts, written as sentences with she/he. Teaches the
  genders of names that coreference needs.
- summarization / daily_stories (4 templates, generative): a six-step everyday story (at a
  restaurant, on a train, baking a cake...), sometimes with an irrelevant fact, to a one-sentence
  summary or a title. Shares the event scripts with sentence completion.

Held-out clusters (a train split: the oracle's pool and the few-shot pool; a validation split for evaluation;
labels exactly balanced). Every answer is one word, an option the instruction asks to choose, never a
sentence the LM-adapted base could pick by its likelihood (``promptability.studies.instrument`` checks that
the base sits at chance and that an oracle learns every group; docs/miniature.md):

- coreference / pronoun_stories, group Coreference (4 templates, 2 choices: the two names): two people of
  different genders meet; "she" or "he" in the second sentence refers to one of them (first or second
  mentioned, balanced).
- completion / script_endings, group Completion (4 templates, 2 choices: verbs): the first 2-4 steps of an
  event script and two candidate next sentences, named by their verbs: the next step, and a step of another
  script (80%) or one the story already told (20%).
- word_sense / word_usages, group WordSense (4 templates, 2 choices: the two senses' topic names; one
  template false/true): in which of its two senses a sentence uses an ambiguous word.

The two NLI-like groups were dropped, because the oracle never learnt them at this scale (docs/miniature.md):
RTE (which of two statements about a person follows from a premise) and NLI (the same with three).

``SHARED`` in tests/suite/test_suite.py lists what each held-out cluster shares with which training cluster (knowledge, answer
formats); no training cluster is of a held-out task type.

Modules: ``world`` (the world), ``tasks`` (one generator and template table per dataset), ``generate``
(the suite from a seed, written atomically; the LM-adaptation and tokenizer corpora). Readers of a written
suite need only ``promptability.data.suite_layout``.
"""
