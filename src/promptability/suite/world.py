"""The small world behind the offline task suite: vocabulary, facts and sentence makers.

Every cluster in ``promptability.suite.tasks`` draws its texts from here, which is
what lets a skill learnt on a training cluster carry over to a held-out one: the same
person facts feed QA, paraphrase and structure-to-text; the same names and pronouns
feed QA and coreference; the same event scripts feed summarisation and sentence
completion; the same word usages feed topic classification and word sense.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FEMALE = _words("Anna Maria Lucy Emma Sara Julia Nora Clara Ella Mia Rosa Lena")
MALE = _words("Tom Paul Jack Leo Max Sam Ben Dan Hugo Omar Ivan Noah")
NAMES = FEMALE + MALE
JOBS = _words("doctor teacher farmer baker pilot singer painter writer nurse driver lawyer chef builder dancer")
TOWNS = _words(
    "Ashford Brookvale Coldwater Dunmore Elmwood Fairhaven Glenrock Highmoor Ironbridge Kingsley Lakeside Millbrook"
)
REGIONS = ("the north", "the south", "the east", "the west")
PRODUCTS = _words("cheese wool apples glass boats honey pottery wine silk paper cotton salt")
PETS = _words("dog cat rabbit horse parrot goat turtle hamster pony duck")
COLORS = _words("red blue green yellow purple orange black white pink brown")
FOODS = _words("soup pizza rice pasta salad bread cake fish noodles beans curry eggs")
# Fixed common-sense facts for closed-book QA; the town facts below are drawn per seed.
WORKPLACE = dict(
    doctor="a hospital", teacher="a school", farmer="a farm", baker="a bakery", pilot="an airport",
    singer="a concert hall", painter="a studio", writer="a library", nurse="a clinic", driver="a bus depot",
    lawyer="an office", chef="a kitchen", builder="a building site", dancer="a theater",
)  # fmt: skip
PET_FOOD = dict(
    dog="bones", cat="milk", rabbit="carrots", horse="hay", parrot="seeds",
    goat="grass", turtle="leaves", hamster="nuts", pony="oats", duck="worms",
)  # fmt: skip


@dataclass(frozen=True)
class World:
    """The per-seed part of the world: which region each town is in and what it is famous for."""

    region: dict[str, str]
    product: dict[str, str]


def make_world(seed: int) -> World:
    rng = random.Random(f"suite:{seed}:world")
    towns = list(TOWNS)
    rng.shuffle(towns)
    products = list(PRODUCTS)
    rng.shuffle(products)
    return World(region={t: REGIONS[i % len(REGIONS)] for i, t in enumerate(towns)}, product=dict(zip(TOWNS, products)))


def world_facts(world: World) -> list[tuple[tuple[str, ...], str, str]]:
    """(question forms with {x}, subject, answer) for every closed-book fact of the world."""
    facts: list[tuple[tuple[str, ...], str, str]] = []
    for town in TOWNS:
        asks: tuple[str, ...] = ("In which part of the country is {x}?", "Which region is the town of {x} in?",
                                 "Where is {x}?")  # fmt: skip
        facts.append((asks, town, world.region[town]))
        facts.append((("What is {x} famous for?", "What does the town of {x} make?"), town, world.product[town]))
        asks = ("Which town is famous for its {x}?", "Where does the best {x} come from?")
        facts.append((asks, world.product[town], town))
    for job, place in WORKPLACE.items():
        facts.append((("Where does a {x} work?", "At what place does a {x} work?"), job, place))
    for pet, food in PET_FOOD.items():
        facts.append((("What does a {x} like to eat?", "What do people feed a {x}?"), pet, food))
    return facts


# --- people and their facts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One kind of person fact: its values and the ways to state it, ask it, or ask who has it.

    Placeholders: {S}/{s} subject (name or she/he, capitalised or not), {P}/{p} possessive
    (Anna's or her/his), {v} the value.
    """

    values: tuple[str, ...]
    says: tuple[str, ...]
    asks: tuple[str, ...]
    whos: tuple[str, ...] = ()
    key: str = ""  # the field name in a structured record


SLOTS: dict[str, Slot] = {
    "job": Slot(
        JOBS,
        ("{S} is a {v}.", "{S} works as a {v}.", "{S} has a job as a {v}.", "{S} earns a living as a {v}."),
        ("What is {p} job?", "What does {s} do for a living?", "What job does {s} have?"),
        ("Who is a {v}?", "Who works as a {v}?"),
        "job",
    ),
    "town": Slot(
        TOWNS,
        ("{S} lives in {v}.", "{P} home is in {v}.", "{S} has a house in {v}.", "{S} resides in the town of {v}."),
        ("Where does {s} live?", "In which town does {s} live?", "Where is {p} home?"),
        ("Who lives in {v}?", "Whose home is in {v}?"),
        "town",
    ),
    "pet": Slot(
        PETS,
        ("{S} has a {v}.", "{S} owns a pet {v}.", "{S} takes care of a {v}.", "{P} pet is a {v}."),
        ("What pet does {s} have?", "What animal does {s} own?", "What is {p} pet?"),
        ("Who has a {v}?", "Who owns a pet {v}?"),
        "pet",
    ),
    "color": Slot(
        COLORS,
        ("{P} favorite color is {v}.", "{S} likes the color {v} best.", "The color {s} likes most is {v}."),
        ("What is {p} favorite color?", "Which color does {s} like best?"),
        ("Whose favorite color is {v}?", "Who likes the color {v} best?"),
        "favorite color",
    ),
    "food": Slot(
        FOODS,
        ("{P} favorite food is {v}.", "{S} likes {v} more than any other food.", "The food {s} likes most is {v}."),
        ("What is {p} favorite food?", "Which food does {s} like most?"),
        ("Whose favorite food is {v}?", "Who likes {v} more than any other food?"),
        "favorite food",
    ),
    # Never stated in a context: it follows from the town and the per-seed world (closed-book QA).
    "region": Slot(
        REGIONS,
        ("{S} lives in {v}.", "{P} home is in {v}."),
        ("In which part of the country does {s} live?", "Which region is {p} home in?"),
    ),
}
FACT_SLOTS = ("job", "town", "pet", "color", "food")


@dataclass
class Person:
    name: str
    female: bool
    facts: dict[str, str]

    def forms(self, pronoun: bool = False) -> dict[str, str]:
        if not pronoun:
            own = self.name + "'s"
            return {"S": self.name, "s": self.name, "P": own, "p": own, "o": self.name}
        s, o, p = ("she", "her", "her") if self.female else ("he", "him", "his")
        return {"S": s.capitalize(), "s": s, "P": p.capitalize(), "p": p, "o": o}


def pick_names(rng: random.Random, n: int, mixed: bool = False, exclude: tuple[str, ...] = ()) -> list[Person]:
    """``n`` different people; with ``mixed`` the first two have different genders."""
    people: list[Person] = []
    for i in range(n):
        female = rng.random() < 0.5 if not (mixed and i == 1) else not people[0].female
        pool = [x for x in (FEMALE if female else MALE) if x not in exclude and x not in {q.name for q in people}]
        people.append(Person(rng.choice(pool), female, {}))
    return people


def give_facts(rng: random.Random, people: list[Person], k: tuple[int, int] = (2, 3)) -> None:
    """Gives each person ``k`` facts; two people never share a value for the same slot."""
    used: dict[str, set[str]] = {s: set() for s in FACT_SLOTS}
    for person in people:
        for slot in rng.sample(FACT_SLOTS, rng.randint(*k)):
            value = rng.choice([v for v in SLOTS[slot].values if v not in used[slot]])
            used[slot].add(value)
            person.facts[slot] = value


def say(rng: random.Random, slot: str, value: str, forms: dict[str, str], variant: int | None = None) -> str:
    says = SLOTS[slot].says
    return says[rng.randrange(len(says)) if variant is None else variant % len(says)].format(v=value, **forms)


def describe(rng: random.Random, person: Person, pronouns: bool = True) -> list[str]:
    """The person's facts as sentences: the name first, then (with ``pronouns``) she/he."""
    return [say(rng, s, v, person.forms(pronouns and i > 0)) for i, (s, v) in enumerate(person.facts.items())]


def describe_all(rng: random.Random, people: list[Person]) -> str:
    # Pronouns only where they cannot be ambiguous, so every context has one right reading.
    pronouns = len({p.female for p in people}) == len(people)
    return " ".join(s for p in people for s in describe(rng, p, pronouns))


# Two people of different genders meet; then one of them does something to the other.
MEETINGS = (
    "{a} and {b} met at the market.", "{a} visited {b} in {town}.", "{a} called {b} after lunch.",
    "{a} had dinner with {b} in {town}.", "{a} waited for {b} at the station.", "{a} saw {b} at the park.",
)  # fmt: skip
ACTIONS = (
    "{S} gave {o} a book.", "{S} thanked {o} for the flowers.", "{S} told {o} about {p} new job.",
    "{S} showed {o} a photo of {p} {pet}.", "{S} asked {o} to visit {town}.", "{S} lent {o} {p} umbrella.",
    "{S} invited {o} to {p} birthday party.", "{S} helped {o} carry the bags.",
)  # fmt: skip


# --- reviews (sentiment) ----------------------------------------------------------------------------

REVIEW_ASPECTS = {
    "film": ("the acting", "the story", "the music", "the ending"),
    "restaurant": ("the food", "the service", "the prices", "the staff"),
    "book": ("the plot", "the characters", "the writing", "the ending"),
    "hotel": ("the room", "the staff", "the breakfast", "the view"),
}
ADJECTIVES = (  # negative, positive
    _words("terrible awful boring poor dull dreadful weak disappointing horrible"),
    _words("wonderful great excellent brilliant lovely charming delightful superb fantastic"),
)
VERDICTS = (
    ("I would not recommend it.", "I hated it.", "What a waste of time.", "Never again."),
    ("I would recommend it to anyone.", "I loved it.", "I will come back for more.", "Highly recommended."),
)
OPENERS = ("", "", "I had heard a lot about this {item}.", "This {item} was my choice for the weekend.")


# --- event scripts (summarisation, sentence completion) ---------------------------------------------


@dataclass(frozen=True)
class Script:
    title: str
    summary: str  # {N} the person; other {fields} filled from FILLERS
    steps: tuple[str, ...]


FILLERS: dict[str, tuple[str, ...]] = {
    "food": FOODS,
    "town": TOWNS,
    "color": COLORS,
    "item": _words("apples tomatoes carrots oranges potatoes onions pears"),
    "flower": _words("roses tulips daisies lilies sunflowers"),
    "flavor": _words("lemon chocolate banana vanilla coffee"),
}
SCRIPTS: dict[str, Script] = {
    "restaurant": Script("A meal out", "{N} ate {food} at a restaurant in {town}.", (
        "walked into a small restaurant in {town}", "sat down at a table by the window", "ordered {food} from the menu",
        "ate the {food} slowly", "paid the bill", "left a tip for the waiter")),
    "market": Script("A trip to the market", "{N} bought {item} at the market in {town}.", (
        "took a bag to the market in {town}", "walked past the busy stalls", "found some fresh {item}",
        "asked the seller for the price", "paid for the {item}", "carried the heavy bag back home")),
    "train": Script("A train journey", "{N} took the train to {town}.", (
        "went to the train station", "bought a ticket to {town}", "waited on the platform",
        "got on the train", "found a seat by the window", "got off the train in {town}")),
    "garden": Script("A day in the garden", "{N} planted {flower} in the garden.", (
        "put on old boots and gloves", "dug a row of holes in the garden", "planted some {flower}",
        "watered the young flowers", "pulled out the weeds", "washed the tools in the shed")),
    "cinema": Script("A night at the cinema", "{N} watched a film at the cinema in {town}.", (
        "drove to the cinema in {town}", "bought a ticket at the desk", "got a box of popcorn",
        "found a seat in the dark hall", "watched the film", "walked home after the film")),
    "baking": Script("Baking a cake", "{N} baked a {flavor} cake for a friend.", (
        "took out flour, eggs and sugar", "mixed everything in a big bowl", "added some {flavor}",
        "put the cake in the hot oven", "took the cake out after an hour", "gave the cake to a friend")),
    "clinic": Script("A visit to the doctor", "{N} saw a doctor in {town} about a cough.", (
        "woke up with a bad cough", "called the clinic in {town}", "waited in the waiting room",
        "told the doctor about the cough", "got some medicine from the doctor", "went home to rest")),
    "beach": Script("A day at the beach", "{N} spent a sunny day at the beach.", (
        "packed a towel and a hat", "walked down to the beach", "swam in the cold sea",
        "lay on the sand in the sun", "ate a sandwich under an umbrella", "went home at sunset")),
    "carwash": Script("Washing the car", "{N} washed the {color} car.", (
        "parked the {color} car in front of the house", "filled a bucket with soapy water",
        "scrubbed the car with a sponge", "rinsed off the soap with a hose", "dried the car with a towel",
        "drove the clean car to work")),
    "letter": Script("Writing a letter", "{N} wrote a letter to a friend in {town}.", (
        "sat down at the desk", "took out a sheet of paper", "wrote a long letter to a friend in {town}",
        "put the letter in an envelope", "bought a stamp at the post office", "posted the letter")),
}  # fmt: skip
CONNECTIVES = ("", "Then ", "After that, ", "Next, ")


def fill(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(v) for k, v in FILLERS.items()}


def step_sentence(rng: random.Random, step: str, person: Person, fillers: dict[str, str], first: bool = False) -> str:
    if first:
        return f"{person.name} {step.format(**fillers)}."
    lead = rng.choice(CONNECTIVES)
    subject = person.forms(rng.random() < 0.85)["s" if lead else "S"]
    return f"{lead}{subject} {step.format(**fillers)}."


# --- topics and word usages (topic classification, word sense) ---------------------------------------

TOPICS = ("sports", "music", "animals", "money", "nature", "technology", "food")
TOPIC_FRAMES: dict[str, tuple[str, ...]] = {
    "sports": ("{N} scored two goals in the football game.", "The team won the final game of the season.",
               "{N} ran faster than every other runner in the race.", "The coach told the players to train harder.",
               "{N} threw the ball to the catcher."),
    "music": ("{N} played a song on the guitar.", "The band performed at a concert last night.",
              "{N} sang in the choir every Sunday.", "The orchestra practiced a new symphony.",
              "{N} listened to the new album twice."),
    "animals": ("The lion hunted in the tall grass.", "{N} fed the ducks at the pond.",
                "A fox ran across the field at night.", "The owl watched the field from a branch.",
                "{N} saw a herd of zebras at the zoo."),
    "money": ("{N} saved money to buy a new car.", "The price of bread went up this year.",
              "{N} paid the rent at the end of the month.", "The company made a large profit.",
              "{N} borrowed money from a friend."),
    "nature": ("The river flowed slowly through the valley.", "{N} climbed the mountain at sunrise.",
               "Tall trees grew in the old forest.", "Snow covered the hills in winter.",
               "The wind blew the leaves across the meadow."),
    "technology": ("{N} installed new software on the computer.", "The phone battery died after an hour.",
                   "{N} wrote a program to sort the files.", "The new laptop has a fast processor.",
                   "{N} fixed the broken printer."),
    "food": ("{N} baked a loaf of bread for breakfast.", "The soup needs more salt.",
             "{N} cut the vegetables for the salad.", "The chef cooked pasta with fresh tomatoes.",
             "{N} ate a bowl of rice with beans."),
}  # fmt: skip
# Each ambiguous word: two senses, each tied to a topic and used in three sentences.
USAGES: dict[str, tuple[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]]] = {
    "bat": (("sports", ("{N} swung the bat and hit the ball.", "The player dropped the bat and ran to first base.",
                        "{N} bought a new bat for the baseball season.")),
            ("animals", ("A bat flew out of the dark cave.", "{N} saw a bat hanging upside down in the barn.",
                         "The bat hunts insects at night."))),
    "bank": (("money", ("{N} opened an account at the bank.", "The bank gave {N} a loan for the house.",
                        "{N} took some cash out of the bank.")),
             ("nature", ("{N} sat on the bank of the river.", "Flowers grew along the muddy bank of the stream.",
                         "The river flooded its bank after the storm."))),
    "pitch": (("sports", ("The players walked onto the pitch before the game.", "Rain made the football pitch wet.",
                          "{N} ran across the pitch to score.")),
              ("music", ("The singer could not reach the high pitch.", "{N} tuned the guitar to the right pitch.",
                         "The choir sang the note at a low pitch."))),
    "mouse": (("technology", ("{N} clicked the mouse to open the file.", "The computer mouse stopped working.",
                              "{N} bought a wireless mouse for the laptop.")),
              ("animals", ("A mouse ran under the kitchen table.", "The cat chased a little mouse.",
                           "{N} found a mouse in the barn."))),
    "bark": (("animals", ("The dog began to bark at the mailman.", "{N} heard a loud bark from the yard.",
                          "The puppy has a high bark.")),
             ("nature", ("The bark of the old oak tree was rough.", "{N} peeled the bark from a fallen branch.",
                         "Moss grew on the bark of the pine."))),
    "note": (("music", ("{N} played a low note on the piano.", "The flute held a long note at the end of the song.",
                        "{N} sang every note perfectly.")),
             ("money", ("{N} paid with a ten dollar note.", "The bank printed a new note for the country.",
                        "{N} found a twenty pound note in the coat."))),
    "key": (("music", ("The song is written in the key of C.", "The band changed key in the last verse.",
                       "{N} played the tune in a minor key.")),
            ("technology", ("{N} pressed a key on the keyboard.", "One key on the laptop was broken.",
                            "{N} hit the delete key by mistake."))),
    "fan": (("sports", ("Every fan in the stadium cheered for the team.", "{N} has been a football fan for years.",
                        "The fan waved a flag for the home team.")),
            ("technology", ("{N} turned on the fan because the room was hot.", "The fan inside the computer was loud.",
                            "{N} cleaned the dust from the fan of the laptop."))),
    "chip": (("food", ("{N} ate a potato chip with the sandwich.", "The salty chip fell on the floor.",
                       "{N} dipped a chip in the sauce.")),
             ("technology", ("The new phone has a faster chip.", "{N} replaced a chip on the circuit board.",
                             "The chip in the computer got too hot."))),
    "trunk": (("animals", ("The elephant lifted food with its trunk.", "The baby elephant waved its trunk.",
                           "{N} watched the elephant spray water from its trunk.")),
              ("nature", ("The trunk of the tree was very thick.", "{N} leaned against the trunk of a pine.",
                          "Ivy climbed up the trunk of the old oak."))),
    "stock": (("money", ("{N} bought stock in a big company.", "The stock lost half its value.",
                         "{N} sold the stock at a good price.")),
              ("food", ("The chef made a chicken stock for the soup.", "{N} boiled bones to make a rich stock.",
                        "{N} added vegetable stock to the rice."))),
    "record": (("music", ("The band released a new record.", "{N} played an old record on the turntable.",
                          "{N} bought the record at a music shop.")),
               ("sports", ("{N} broke the world record in the race.", "The swimmer set a new record.",
                           "The record for the long jump still stands."))),
    "jam": (("food", ("{N} spread strawberry jam on the toast.", "The jam was made from wild berries.",
                      "{N} bought a jar of jam.")),
            ("music", ("The musicians had a jam session in the garage.", "{N} joined the band for a jam after the show.",
                       "The guitar players started a jam on the stage."))),
    "spring": (("nature", ("{N} drank cold water from a mountain spring.", "The spring fed a small stream in the forest.",
                           "A hot spring bubbled among the rocks.")),
               ("technology", ("The spring inside the old clock broke.", "{N} replaced the spring in the printer.",
                               "The machine uses a steel spring to close the door."))),
    "bass": (("music", ("{N} plays the bass in a rock band.", "The bass was too loud at the concert.",
                        "{N} tuned the strings of the bass.")),
             ("animals", ("{N} caught a large bass in the lake.", "A bass swam near the bottom of the river.",
                          "The bass hid among the weeds of the pond."))),
}  # fmt: skip


def usage(rng: random.Random, word: str, sense: int, frame: int | None = None) -> str:
    frames = USAGES[word][sense][1]
    return frames[rng.randrange(len(frames)) if frame is None else frame].format(N=rng.choice(NAMES))


def topic_sentence(rng: random.Random, topic: str) -> str:
    return rng.choice(TOPIC_FRAMES[topic]).format(N=rng.choice(NAMES))


def topic_usages(topic: str) -> list[tuple[str, int]]:
    """(word, sense) pairs whose sense belongs to ``topic``."""
    return [(w, i) for w, senses in USAGES.items() for i, (t, _) in enumerate(senses) if t == topic]


def lexicon() -> list[str]:
    """Every word list of the world, one string each (so a tokenizer sees all of them)."""
    lists = [NAMES, JOBS, TOWNS, REGIONS, PRODUCTS, PETS, COLORS, FOODS, TOPICS, tuple(USAGES)]
    lists += [tuple(WORKPLACE.values()), tuple(PET_FOOD.values()), *FILLERS.values()]
    return [" ".join(words) for words in lists]
