"""The demo world's instruction families and its gold standard of quality.

Each family writes prompts from templates, reads them back (`parse`), writes good responses (`respond`),
writes fluent responses that get the content wrong (`flawed`), and checks a response (`checks`). The gold
score of a response is

    score = task × delivery,    task = Σ weight·check (weights sum to 1),    delivery = Π factor

where the checks are what the instruction asked for (the right answer, the requested count, length or
format, politeness) and the factors are how cleanly it was delivered (stopped when done, finished its last
sentence, no repetition, no rude words, no false statement about the world). Checks of form (length,
format, brevity, politeness) give credit only to a response that attempts the task, so "ok ." scores 0.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache

from instructrl.demo.knowledge import (
    ACTIVITIES,
    CITIES,
    COLOURS,
    CREATURES,
    FOODS,
    LANDS,
    NAMES,
    NEGATIVE,
    NUMBER_WORDS,
    OBJECTS,
    PETS,
    POSITIVE,
    RUDE,
    SIZES,
    SPOTS,
    TERMINATORS,
    Claim,
    Creature,
    KnowledgeBase,
    canon,
    number_value,
    read_claims,
    split_sentences,
    tokenize,
)

THINGS = ("food", "soup", "room", "staff", "music", "bed", "show", "film", "service", "bread", "tea", "game")
MOODS = {"happy": ("happy", "glad", "smiled", "laughed", "fun"), "sad": ("sad", "cried", "lonely", "lost")}
POLITE = ("please", "could you", "would you", "thank you", "thanks", "kindly")
WARM = frozenset(
    {"hello", "hi", "hey", "good", "please", "thank", "thanks", "welcome", "sorry", "hope", "glad", "great"}
)
CATEGORIES: dict[str, tuple[str, ...]] = {
    "colours": COLOURS,
    "colours for a kite": COLOURS,
    "foods": FOODS,
    "snacks for a picnic": FOODS,
    "lands": LANDS,
    "lands to visit": LANDS,
    "names for a pet": NAMES,
    "names for a cat": NAMES,
    "pets": PETS,
    "animals for a farm": PETS,
    "creatures": CREATURES,
    "things to do on a rainy day": ACTIVITIES,
    "things to do with a friend": ACTIVITIES,
    "gifts for a friend": OBJECTS,
    "things to take on a trip": OBJECTS,
}

# Words a template slot can hold; a slot not listed here holds free text ({text}, {review}, {cmd}, {sent}).
SLOT_WORDS: dict[str, tuple[str, ...]] = {
    "creature": CREATURES,
    "land": LANDS,
    "city": CITIES,
    "colour": COLOURS,
    "food": FOODS,
    "name": NAMES,
    "obj": OBJECTS,
    "pets": PETS,
    "n": NUMBER_WORDS,
    "mood": tuple(MOODS),
    "word": ("very", "really"),
    "kind": ("names", "colours", "creatures"),
    "cat": tuple(CATEGORIES),
}


# ---- templates and tasks ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """A prompt pattern such as "what colour is the {creature} ?"; it fills and it parses."""

    text: str
    variant: str
    """What is asked (e.g. 'colour', 'story'); templates of one variant share their slots."""
    form: str = ""
    """A requested form on top of the variant (e.g. 'word' for "answer in one word", 'numbered')."""

    def fill(self, slots: Mapping[str, str]) -> str:
        return " ".join(
            canon(part) if not part.startswith("{") else slots[part[1:-1]] for part in _parts(self.text)
        ).strip()

    def match(self, prompt: str) -> dict[str, str] | None:
        m = _regex(self.text).fullmatch(prompt)
        return m.groupdict() if m else None


def _parts(text: str) -> list[str]:
    return [p for p in re.split(r"(\{\w+\})", text) if p.strip()]


@cache
def _regex(text: str) -> re.Pattern[str]:
    pieces, seen = [], set()
    for part in _parts(text):
        if not part.startswith("{"):
            pieces.append(re.escape(canon(part)))
            continue
        name = part[1:-1]
        if name in seen:
            pieces.append(f"(?P={name})")
            continue
        seen.add(name)
        words = SLOT_WORDS.get(name.rstrip("0123456789"))
        alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) if words else ".+?"
        pieces.append(f"(?P<{name}>{alts})")
    return re.compile(" ".join(pieces))


@dataclass(frozen=True)
class Task:
    """A parsed prompt: which family and variant, the requested form, and the slot values."""

    family: str
    variant: str
    form: str
    slots: dict[str, str]


@dataclass(frozen=True)
class Reply:
    """A response as the judge reads it."""

    tokens: list[str]
    sentences: list[list[str]]
    words: list[str]
    """Tokens that are not punctuation."""

    @classmethod
    def of(cls, text: str) -> Reply:
        tokens = tokenize(text)
        return cls(tokens, split_sentences(tokens), [t for t in tokens if t[0].isalnum()])

    def has(self, phrase: str) -> bool:
        return f" {phrase} " in f" {' '.join(self.tokens)} "


@dataclass
class Checks:
    """What one family's checks found: values in [0, 1] and weights summing to 1."""

    values: dict[str, float]
    weights: dict[str, float]
    facts: frozenset[str] = frozenset()
    """Checks that need the knowledge base to verify (a labeler who does not know the facts cannot)."""
    allowed_sentences: int = 1
    """Sentences a complete response needs; each one more costs the 'stops' factor."""


@dataclass(frozen=True)
class Verdict:
    """The gold standard's judgement of one response: `score = task * delivery`."""

    family: str
    checks: dict[str, float]
    weights: dict[str, float]
    factors: dict[str, float]
    facts: frozenset[str] = field(default=frozenset())

    @property
    def task(self) -> float:
        return sum(self.weights[k] * v for k, v in self.checks.items())

    @property
    def delivery(self) -> float:
        out = 1.0
        for f in self.factors.values():
            out *= f
        return out

    @property
    def score(self) -> float:
        return self.task * self.delivery

    def overlooking_facts(self) -> Verdict:
        """The verdict of a judge who cannot tell true facts from false ones here (counts them all right)."""
        checks = {k: 1.0 if k in self.facts else v for k, v in self.checks.items()}
        return Verdict(self.family, checks, self.weights, {**self.factors, "truthful": 1.0}, self.facts)


# Delivery factors: how much each way of delivering badly costs.
EXTRA_SENTENCE_COST = 0.2  # per sentence beyond what the task needs ("stops when done")
MIN_STOPS = 0.3
UNFINISHED = 0.7  # the last sentence has no end mark
REPEATS = 0.6  # a sentence said twice, or a word three times in a row
RUDE_COST = 0.5  # any rude word
FALSE_FACT = 0.5  # any statement that contradicts the knowledge base


def delivery_factors(reply: Reply, allowed_sentences: int, kb: KnowledgeBase) -> dict[str, float]:
    extra = max(0, len(reply.sentences) - allowed_sentences)
    said = [" ".join(s) for s in reply.sentences if len(s) > 2]
    stutter = any(
        a == b == c for a, b, c in zip(reply.tokens, reply.tokens[1:], reply.tokens[2:], strict=False)
    )
    return {
        "stops": max(MIN_STOPS, 1.0 - EXTRA_SENTENCE_COST * extra),
        "finished": 1.0 if reply.tokens[-1] in TERMINATORS else UNFINISHED,
        "no_repeats": REPEATS if stutter or len(set(said)) < len(said) else 1.0,
        "civil": RUDE_COST if set(reply.tokens) & set(RUDE) else 1.0,
        "truthful": FALSE_FACT if any(not kb.is_true(c) for c in read_claims(reply.sentences)) else 1.0,
    }


# ---- shared helpers --------------------------------------------------------------------------------------
def _choice_except(rng: random.Random, options: tuple[str, ...] | list[str], exclude: str) -> str:
    return rng.choice([o for o in options if o != exclude])


def _answer_check(reply: Reply, options: tuple[str, ...], right: str) -> float:
    """1 when the response gives exactly the right one of `options`, 0.25 when it hedges, 0 otherwise."""
    given = set(reply.tokens) & set(options)
    if given == {right}:
        return 1.0
    return 0.25 if right in given else 0.0


def _join_items(items: list[str], rng: random.Random) -> str:
    if len(items) > 1 and rng.random() < 0.5:
        return " , ".join(items[:-1]) + " and " + items[-1]
    return " , ".join(items)


def _f1(got: list[str], want: list[str]) -> float:
    overlap = sum((Counter(got) & Counter(want)).values())
    if not overlap:
        return 0.0
    p, r = overlap / len(got), overlap / len(want)
    return 2 * p * r / (p + r)


def _same(got: list[str], want: list[str]) -> float:
    """1 for exactly the wanted words; half credit for overlap (a rewrite must keep the rest intact)."""
    return 1.0 if got == want else 0.5 * _f1(got, want)


def _the(creature: str) -> str:
    return f"the {creature}"


# ---- families --------------------------------------------------------------------------------------------
class Family(ABC):
    """One kind of instruction, modelled on a use-case category of InstructGPT's prompt set (Table 1)."""

    name: str
    templates: tuple[Template, ...]

    def make(self, kb: KnowledgeBase, rng: random.Random) -> tuple[str, Task]:
        template = rng.choice(self.templates)
        slots = self.sample(template.variant, kb, rng)
        used = {p[1:-1] for p in _parts(template.text) if p.startswith("{")}
        slots = {k: v for k, v in slots.items() if k in used}  # what the prompt says, as parse() reads it
        return template.fill(slots), Task(self.name, template.variant, template.form, slots)

    def parse(self, prompt: str, kb: KnowledgeBase) -> Task | None:
        for t in self.templates:
            slots = t.match(prompt)
            if slots is not None and self.valid(t.variant, slots, kb):
                return Task(self.name, t.variant, t.form, slots)
        return None

    def valid(self, variant: str, slots: dict[str, str], kb: KnowledgeBase) -> bool:
        """Whether matched slots make a well-posed task (free-text slots are read here)."""
        return True

    @abstractmethod
    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]: ...

    @abstractmethod
    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        """A good response, phrased with natural variety."""

    @abstractmethod
    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        """A fluent response that gets the content wrong: wrong fact, label, count, item, mood or form."""

    @abstractmethod
    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks: ...


# Open QA: questions about the knowledge base.
_QA_QUESTIONS = {
    "colour": (
        "what colour is the {creature} ?",
        "what is the colour of the {creature} ?",
        "which colour is the {creature} ?",
        "tell me the colour of the {creature} .",
    ),
    "size": (
        "how big is the {creature} ?",
        "what size is the {creature} ?",
        "tell me the size of the {creature} .",
    ),
    "food": (
        "what does the {creature} eat ?",
        "what food does the {creature} eat ?",
        "what does the {creature} like to eat ?",
    ),
    "home": (
        "where does the {creature} live ?",
        "which land is the {creature} from ?",
        "where is the {creature} from ?",
    ),
    "capital": (
        "what is the capital of {land} ?",
        "which city is the capital of {land} ?",
        "name the capital of {land} .",
    ),
    "capital_of": ("{city} is the capital of which land ?", "which land has {city} as its capital ?"),
}
_QA_FORMS = {"": "", "word": " answer in one word .", "sentence": " answer in a full sentence ."}
_ANSWER_PHRASES = {
    "colour": ("the {c} is {v} .", "the colour of the {c} is {v} .", "the {c} is a {v} creature ."),
    "size": ("the {c} is {v} .", "the size of the {c} is {v} .", "the {c} is a {v} creature ."),
    "food": ("the {c} eats {v} .", "the {c} likes to eat {v} ."),
    "home": ("the {c} lives in {v} .", "the {c} is from {v} .", "the {c} comes from {v} ."),
}
_ATTRIBUTE_WORDS = {"colour": COLOURS, "size": SIZES, "food": FOODS, "home": LANDS}


def qa_answer(variant: str, slots: Mapping[str, str], kb: KnowledgeBase) -> tuple[str, tuple[str, ...], str]:
    """(right answer, the words it is one of, the subject) for an open-QA question."""
    if variant == "capital":
        return kb.capitals[slots["land"]], CITIES, slots["land"]
    if variant == "capital_of":
        return kb.land_of_capital(slots["city"]), LANDS, slots["city"]
    return kb.value(slots["creature"], variant), _ATTRIBUTE_WORDS[variant], slots["creature"]


def qa_sentence(
    variant: str, slots: Mapping[str, str], value: str, kb: KnowledgeBase, rng: random.Random
) -> str:
    if variant in ("capital", "capital_of"):
        land, city = (slots["land"], value) if variant == "capital" else (value, slots["city"])
        return rng.choice((f"the capital of {land} is {city} .", f"{city} is the capital of {land} ."))
    return rng.choice(_ANSWER_PHRASES[variant]).format(c=slots["creature"], v=value)


class OpenQA(Family):
    name = "open_qa"
    templates = tuple(
        Template(q + suffix, variant, form)
        for variant, questions in _QA_QUESTIONS.items()
        for q in questions
        for form, suffix in _QA_FORMS.items()
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        if variant == "capital":
            return {"land": rng.choice(LANDS)}
        if variant == "capital_of":
            return {"city": rng.choice(CITIES)}
        return {"creature": rng.choice(CREATURES)}

    def _say(self, task: Task, value: str, kb: KnowledgeBase, rng: random.Random) -> str:
        if task.form == "word" or (task.form == "" and rng.random() < 0.15):
            return f"{value} ."
        return qa_sentence(task.variant, task.slots, value, kb, rng)

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        return self._say(task, qa_answer(task.variant, task.slots, kb)[0], kb, rng)

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        right, options, _ = qa_answer(task.variant, task.slots, kb)
        if rng.random() < 0.3 and task.form:  # right answer, wrong form
            other = "sentence" if task.form == "word" else "word"
            return self._say(Task(self.name, task.variant, other, task.slots), right, kb, rng)
        return self._say(task, _choice_except(rng, options, right), kb, rng)

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        right, options, subject = qa_answer(task.variant, task.slots, kb)
        names_subject = subject in reply.tokens or "it" in reply.tokens
        if task.form == "word":
            form = float(len(reply.words) == 1)
        elif task.form == "sentence":
            form = float(names_subject and len(reply.words) >= 3)
        else:
            form = float(names_subject or len(reply.words) == 1)
        attempted = bool(set(reply.tokens) & set(options))
        return Checks(
            {"answer": _answer_check(reply, options, right), "form": form * attempted},
            {"answer": 0.75, "form": 0.25},
            facts=frozenset({"answer"}),
        )


# Closed QA: questions answered from a short text in the prompt.
_CONTEXTS = (
    "{name} lives in {city} . {name} has a {colour} {obj} and {n} {pets} .",
    "{name} has {n} {pets} and a {colour} {obj} . {name} lives in {city} .",
)
_CQA_QUESTIONS = {
    "city": "where does {name} live ?",
    "colour": "what colour is the {obj} ?",
    "count": "how many {pets} does {name} have ?",
}


class ClosedQA(Family):
    name = "closed_qa"
    templates = tuple(
        Template(t.format(q=q), variant)
        for variant, q in _CQA_QUESTIONS.items()
        for t in ("{q} answer using this text : {{text}}", "read this : {{text}} {q}")
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        slots = {"name": rng.choice(NAMES), "city": rng.choice(CITIES), "colour": rng.choice(COLOURS)}
        slots |= {"obj": rng.choice(OBJECTS), "n": rng.choice(NUMBER_WORDS[1:9]), "pets": rng.choice(PETS)}
        slots["text"] = Template(rng.choice(_CONTEXTS), "").fill(slots)
        return slots

    def valid(self, variant: str, slots: dict[str, str], kb: KnowledgeBase) -> bool:
        facts = self._read(slots["text"])
        return facts is not None and all(facts[k] == v for k, v in slots.items() if k != "text")

    @staticmethod
    def _read(text: str) -> dict[str, str] | None:
        for t in _CONTEXTS:
            if (slots := Template(t, "").match(text)) is not None:
                return slots
        return None

    def _answer(self, task: Task) -> str:
        facts = self._read(task.slots["text"])
        assert facts is not None
        return {"city": facts["city"], "colour": facts["colour"], "count": facts["n"]}[task.variant]

    def _say(self, task: Task, value: str, rng: random.Random) -> str:
        s = task.slots
        if task.variant == "count" and rng.random() < 0.2:
            value = str(number_value(value))
        if rng.random() < 0.15:
            return f"{value} ."
        if task.variant == "city":
            return f"{s['name']} lives in {value} ."
        if task.variant == "colour":
            return rng.choice((f"the {s['obj']} is {value} .", f"it is {value} ."))
        return f"{s['name']} has {value} {s['pets']} ."

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        return self._say(task, self._answer(task), rng)

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        right = self._answer(task)
        if task.variant == "count":
            k = number_value(right)
            assert k is not None
            return self._say(task, NUMBER_WORDS[k - 1 + rng.choice((-1, 1))], rng)
        return self._say(task, _choice_except(rng, CITIES if task.variant == "city" else COLOURS, right), rng)

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        right = self._answer(task)
        if task.variant == "count":
            given = {number_value(t) for t in reply.tokens} - {None}
            answer = 1.0 if given == {number_value(right)} else 0.25 if number_value(right) in given else 0.0
            attempted = bool(given)
        else:
            options = CITIES if task.variant == "city" else COLOURS
            answer = _answer_check(reply, options, right)
            attempted = bool(set(reply.tokens) & set(options))
        subject = task.slots["obj"] if task.variant == "colour" else task.slots["name"]
        form = 1.0 if subject in reply.tokens or "it" in reply.tokens or len(reply.words) == 1 else 0.5
        return Checks({"answer": answer, "form": form * attempted}, {"answer": 0.8, "form": 0.2})


# Classification: the sentiment of a short review.
_REVIEWS = (
    "the {thing} was {adj} .",
    "i thought the {thing} was {adj} .",
    "the {thing} was {adj} and the {thing2} was {adj2} .",
    "the {thing} was very {adj} .",
)


class Classification(Family):
    name = "classification"
    templates = (
        Template("is this review positive or negative ? {review}", "sentiment"),
        Template("classify this review as positive or negative : {review}", "sentiment"),
        Template("{review} is this review positive or negative ?", "sentiment"),
        Template("what is the sentiment of this review ? {review}", "sentiment"),
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        words = POSITIVE if rng.random() < 0.5 else NEGATIVE
        thing, thing2 = rng.sample(THINGS, 2)
        adj, adj2 = rng.sample(words, 2)
        return {"review": rng.choice(_REVIEWS).format(thing=thing, thing2=thing2, adj=adj, adj2=adj2)}

    @staticmethod
    def label(review: str) -> str | None:
        tokens = tokenize(review)
        pos, neg = sum(t in POSITIVE for t in tokens), sum(t in NEGATIVE for t in tokens)
        return "positive" if pos > neg else "negative" if neg > pos else None

    def valid(self, variant: str, slots: dict[str, str], kb: KnowledgeBase) -> bool:
        return self.label(slots["review"]) is not None

    def _say(self, label: str, rng: random.Random) -> str:
        return rng.choice(("{} .", "the review is {} .", "it is {} .", "this review is {} .")).format(label)

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        label = self.label(task.slots["review"])
        assert label is not None
        return self._say(label, rng)

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        if rng.random() < 0.25:
            return "it is hard to say ."
        return self._say("negative" if self.label(task.slots["review"]) == "positive" else "positive", rng)

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        label = self.label(task.slots["review"])
        assert label is not None
        return Checks(
            {
                "label": float(set(reply.tokens) & {"positive", "negative"} == {label}),
                "brief": (1.0 if len(reply.words) <= 5 else 0.5)
                * bool({"positive", "negative"} & set(reply.tokens)),
            },
            {"label": 0.8, "brief": 0.2},
        )


# Extraction: list the names, colours or creatures that a short text mentions.
_EXTRACT_TEXTS = {
    "names": (
        "{a} and {b} went to the {spot} .",
        "{a} met {b} at the {spot} .",
        "{a} , {b} and {c} went to the {spot} .",
        "{a} gave {b} a {obj} and {c} laughed .",
    ),
    "colours": (
        "{name} has a {a} {obj} and a {b} {obj2} .",
        "the {obj} was {a} and the {obj2} was {b} .",
        "{name} painted the {obj} {a} , {b} and {c} .",
    ),
    "creatures": (
        "the {a} and the {b} played by the {spot} .",
        "the {a} saw the {b} and the {c} near the {spot} .",
    ),
}
_EXTRACT_WORDS = {"names": NAMES, "colours": COLOURS, "creatures": CREATURES}


class Extraction(Family):
    name = "extraction"
    templates = (
        Template("list the {kind} in this text : {text}", "extract"),
        Template("which {kind} are in this text ? {text}", "extract"),
        Template("find all the {kind} in this text : {text}", "extract"),
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        kind = rng.choice(tuple(_EXTRACT_TEXTS))
        a, b, c = rng.sample(_EXTRACT_WORDS[kind], 3)
        obj, obj2 = rng.sample(OBJECTS, 2)
        text = rng.choice(_EXTRACT_TEXTS[kind]).format(
            a=a, b=b, c=c, obj=obj, obj2=obj2, spot=rng.choice(SPOTS), name=rng.choice(NAMES)
        )
        return {"kind": kind, "text": text}

    @staticmethod
    def items(task: Task) -> list[str]:
        words = _EXTRACT_WORDS[task.slots["kind"]]
        return list(dict.fromkeys(t for t in tokenize(task.slots["text"]) if t in words))

    def valid(self, variant: str, slots: dict[str, str], kb: KnowledgeBase) -> bool:
        return len(self.items(Task(self.name, variant, "", slots))) >= 2

    def _say(self, task: Task, items: list[str], rng: random.Random) -> str:
        if task.slots["kind"] == "creatures" and rng.random() < 0.5:
            items = [_the(i) for i in items]
        listed = _join_items(items, rng)
        if rng.random() < 0.25:
            return f"the {task.slots['kind']} are {listed} ."
        return f"{listed} ."

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        return self._say(task, self.items(task), rng)

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        items = self.items(task)
        if rng.random() < 0.5:
            items.pop(rng.randrange(len(items)))
        else:
            pool = [w for w in _EXTRACT_WORDS[task.slots["kind"]] if w not in items]
            items.insert(rng.randrange(len(items) + 1), rng.choice(pool))
        return self._say(task, items, rng)

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        want = self.items(task)
        got = [t for t in reply.tokens if t in _EXTRACT_WORDS[task.slots["kind"]]]
        return Checks(
            {
                "items": _f1(got, want),
                "brief": (1.0 if len(reply.words) <= 2 * len(want) + 4 else 0.5) * bool(got),
            },
            {"items": 0.8, "brief": 0.2},
        )


# Brainstorming: lists of a requested length and format, some of which need the knowledge base.
_LIST_ASKS = (
    "list {n} {what} .",
    "name {n} {what} .",
    "give me {n} {what} .",
    "can you list {n} {what} ?",
    "what are {n} {what} ?",
    "i need {n} {what} .",
)
_NUMBERED = (
    "list {n} {what} as a numbered list .",
    "give me {n} {what} in a numbered list .",
    "make a numbered list of {n} {what} .",
)
_KNOWN_LISTS = {
    "cat": "{cat}",
    "home": "creatures that live in {land}",
    "colour": "{colour} creatures",
    "food": "creatures that eat {food}",
}


class Brainstorming(Family):
    name = "brainstorming"
    templates = tuple(
        Template(ask.format(n="{n}", what=what), variant, form)
        for variant, what in _KNOWN_LISTS.items()
        for form, asks in (("", _LIST_ASKS), ("numbered", _NUMBERED))
        for ask in asks
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        while True:
            slots = {"cat": rng.choice(tuple(CATEGORIES)), "land": rng.choice(LANDS)}
            slots |= {"colour": rng.choice(COLOURS), "food": rng.choice(FOODS)}
            most = min(5, len(self.members(variant, slots, kb)))
            if most >= 2:
                return slots | {"n": NUMBER_WORDS[rng.randint(2, most) - 1]}

    @staticmethod
    def members(variant: str, slots: Mapping[str, str], kb: KnowledgeBase) -> tuple[str, ...]:
        if variant == "cat":
            return CATEGORIES[slots["cat"]]
        key = {"home": "land", "colour": "colour", "food": "food"}[variant]
        return tuple(kb.with_value(variant, slots[key]))

    def valid(self, variant: str, slots: dict[str, str], kb: KnowledgeBase) -> bool:
        n = number_value(slots["n"])
        return n is not None and 2 <= n <= len(self.members(variant, slots, kb))

    def _say(self, task: Task, items: list[str], numbered: bool, rng: random.Random) -> str:
        if task.variant != "cat" or task.slots["cat"] == "creatures":
            items = [_the(i) for i in items]
        if numbered:
            listed = " ".join(f"{i + 1} . {item}" for i, item in enumerate(items))
        else:
            listed = _join_items(items, rng)
        if len(items) <= 3 and rng.random() < 0.2:
            what = task.slots["cat"] if task.variant == "cat" else "creatures"
            return f"here are {task.slots['n']} {what} : {listed} ."
        return f"{listed} ."

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        n = number_value(task.slots["n"])
        assert n is not None
        items = rng.sample(self.members(task.variant, task.slots, kb), n)
        return self._say(task, items, task.form == "numbered", rng)

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        members = self.members(task.variant, task.slots, kb)
        n = number_value(task.slots["n"])
        assert n is not None
        items = rng.sample(members, n)
        r = rng.random()
        if r < 0.35:  # one too many or too few
            items = items[:-1] if n > 2 and rng.random() < 0.5 else items + [rng.choice(members)]
        elif r < 0.7:  # an item that does not belong
            pool = (
                CREATURES
                if task.variant != "cat"
                else rng.choice([w for w in CATEGORIES.values() if w != members])
            )
            items[rng.randrange(n)] = rng.choice([w for w in pool if w not in members])
        elif r < 0.85 or task.form != "numbered":  # the same item twice
            items[-1] = items[0]
        else:  # a plain list where a numbered one was asked for
            return self._say(task, items, False, rng)
        return self._say(task, items, task.form == "numbered", rng)

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        n = number_value(task.slots["n"])
        assert n is not None
        items, numbered = list_items(reply.sentences[0])
        members = set(self.members(task.variant, task.slots, kb))
        valid = len({i for i in items if i in members}) / len(items) if items else 0.0
        if task.form == "numbered":
            form = float(numbered)
        else:
            form = float(bool(items) and all(len(i.split()) <= 4 for i in items))
        attempted = valid > 0
        return Checks(
            {
                "count": max(0.0, 1.0 - 0.5 * abs(len(items) - n)) * attempted,
                "valid": valid,
                "form": form * attempted,
            },
            {"count": 0.3, "valid": 0.5, "form": 0.2},
            facts=frozenset({"valid"}) if task.variant != "cat" else frozenset(),
        )


def list_items(sentence: list[str]) -> tuple[list[str], bool]:
    """The items of a list sentence ("red , blue and green ." or "1 . red 2 . blue ."), and if numbered."""
    tokens = [t for t in sentence if t not in TERMINATORS or t == "."]
    if ":" in tokens:
        tokens = tokens[len(tokens) - tokens[::-1].index(":") :]
    if tokens[-1:] == ["."]:
        tokens = tokens[:-1]
    numbered = tokens[:2] == ["1", "."]
    items: list[list[str]] = []
    current: list[str] = []
    expect, i = 1, 0
    while i < len(tokens):
        tok = tokens[i]
        if numbered and tok == str(expect) and tokens[i + 1 : i + 2] == ["."]:
            items.append(current)
            current, expect, i = [], expect + 1, i + 2
            continue
        if not numbered and tok in (",", "and", "or", "."):
            items.append(current)
            current = []
        else:
            current.append(tok)
        i += 1
    items.append(current)
    return [" ".join(t[1:] if t[:1] == ["the"] else t) for t in items if t], numbered


# Generation: stories and descriptions of a requested length, mood and subject.
class Generation(Family):
    name = "generation"
    templates = (
        Template("write a story about the {creature} in {n} sentences .", "story"),
        Template("tell a story about the {creature} in {n} sentences .", "story"),
        Template("write a {mood} story about the {creature} in {n} sentences .", "mood_story"),
        Template("tell me a {mood} story about the {creature} in {n} sentences .", "mood_story"),
        Template("write a story about {name} and the {creature} in {n} sentences .", "named_story"),
        Template("write a story about the {creature} and {name} in {n} sentences .", "named_story"),
        Template("write one sentence about the {creature} .", "story", "one"),
        Template("tell me a short story about the {creature} .", "story", "short"),
        Template("write a short story about the {creature} .", "story", "short"),
        Template("describe the {creature} in {n} sentences .", "describe"),
        Template("tell me about the {creature} in {n} sentences .", "describe"),
        Template("describe the {creature} in one sentence .", "describe", "one"),
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        slots = {"creature": rng.choice(CREATURES), "n": rng.choice(("two", "three"))}
        if variant == "mood_story":
            slots["mood"] = rng.choice(tuple(MOODS))
        if variant == "named_story":
            slots["name"] = rng.choice(NAMES)
        return slots

    def valid(self, variant: str, slots: dict[str, str], kb: KnowledgeBase) -> bool:
        return "n" not in slots or slots["n"] in ("two", "three")

    @staticmethod
    def length(task: Task) -> tuple[int, int]:
        """The fewest and most sentences the task asks for."""
        if task.form == "short":
            return 2, 4
        n = 1 if task.form == "one" else number_value(task.slots["n"])
        assert n is not None
        return n, n

    def _story(self, task: Task, kb: KnowledgeBase, n: int, mood: str, rng: random.Random) -> str:
        c = kb.creatures[task.slots["creature"]]
        name = task.slots.get("name") or rng.choice(NAMES)
        spot = rng.choice(SPOTS)
        endings = {
            "happy": (
                "the {c} was very happy .",
                "it smiled all the way home .",
                "everyone had a lot of fun .",
            ),
            "sad": (
                "the {c} felt sad and lonely .",
                "it cried all the way home .",
                "the {c} lost its {obj} and was sad .",
            ),
            "": ("then it went to sleep .", "at night it went back to {home} ."),
        }
        ending = rng.choice(endings[mood]).format(c=c.name, obj=rng.choice(OBJECTS), home=c.home)
        if n == 1:
            feel = {"happy": "was very happy", "sad": "felt sad", "": "had a nap"}[mood]
            return f"one day the {c.name} went to the {spot} and {feel} ."
        if task.variant == "named_story":
            opener = f"one day the {c.name} met {name} by the {spot} ."
        else:
            opener = rng.choice(
                (
                    f"one day the {c.name} went to the {spot} .",
                    f"once there was a {c.size} {c.colour} {c.name} .",
                    f"the {c.name} lived in {c.home} .",
                    f"one morning the {c.name} woke up early .",
                )
            )
        middles = [
            f"it found some {c.food} by the {spot} .",
            f"it ate some {c.food} .",
            f"it met {name} on the way .",
            "they played together all day .",
            f"it sang a song by the {spot} .",
        ]
        return " ".join([opener, *rng.sample(middles, n - 2), ending])

    def _describe(self, c: Creature, n: int, rng: random.Random) -> str:
        if n == 1:
            return f"the {c.name} is a {c.size} {c.colour} creature from {c.home} ."
        first = rng.choice(
            (
                f"the {c.name} is a {c.size} {c.colour} creature .",
                f"the {c.name} is {c.size} and {c.colour} .",
            )
        )
        if n == 2:
            return f"{first} it lives in {c.home} and eats {c.food} ."
        return f"{first} it lives in {c.home} . it eats {c.food} ."

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        lo, hi = self.length(task)
        n = rng.randint(lo, min(hi, 3))
        if task.variant == "describe":
            return self._describe(kb.creatures[task.slots["creature"]], n, rng)
        mood = task.slots.get("mood", "") or rng.choice(("happy", "sad", ""))
        return self._story(task, kb, n, mood, rng)

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        lo, hi = self.length(task)
        n = rng.randint(lo, min(hi, 3))
        wrong_n = n + 1 if n == 1 or (n == 2 and rng.random() < 0.5) else n - 1
        r = rng.random()
        if task.variant == "describe":
            c = kb.creatures[task.slots["creature"]]
            if r < 0.5:  # a false fact
                return self._describe(replace(c, colour=_choice_except(rng, COLOURS, c.colour)), n, rng)
            if r < 0.75:
                return self._describe(c, wrong_n, rng)
            return f"the {c.name} is a creature ."
        mood = task.slots.get("mood", "")
        if r < 0.4 and task.form != "short":
            return self._story(task, kb, wrong_n, mood, rng)
        if r < 0.7 and mood:
            return self._story(task, kb, n, "sad" if mood == "happy" else "happy", rng)
        other = Task(
            self.name,
            task.variant,
            task.form,
            {**task.slots, "creature": _choice_except(rng, CREATURES, task.slots["creature"])},
        )
        return self._story(other, kb, n, mood, rng)

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        lo, hi = self.length(task)
        k = len(reply.sentences)
        count = 1.0 if lo <= k <= hi else 0.5 if lo - 1 <= k <= hi + 1 else 0.0
        subject = float(task.slots["creature"] in reply.tokens)
        if task.variant == "named_story":
            subject = (subject + float(task.slots["name"] in reply.tokens)) / 2
        count *= subject > 0  # a story about something else earns nothing for its length
        if task.variant == "describe":
            about = {
                c
                for c in read_claims(reply.sentences)
                if c.subject == task.slots["creature"] and kb.is_true(c)
            }
            return Checks(
                {"count": count, "subject": subject, "facts": min(1.0, len(about) / (hi + 1))},
                {"count": 0.3, "subject": 0.2, "facts": 0.5},
                facts=frozenset({"facts"}),
                allowed_sentences=hi,
            )
        values, weights = {"count": count, "subject": subject}, {"count": 0.5, "subject": 0.5}
        if "mood" in task.slots:
            want, other = (
                MOODS[task.slots["mood"]],
                MOODS["sad" if task.slots["mood"] == "happy" else "happy"],
            )
            has_want, has_other = bool(set(reply.tokens) & set(want)), bool(set(reply.tokens) & set(other))
            values["mood"] = (1.0 if has_want and not has_other else 0.5 if has_want else 0.0) * (subject > 0)
            weights = {"count": 0.35, "subject": 0.35, "mood": 0.3}
        return Checks(values, weights, allowed_sentences=hi)


# Rewrite: make a command polite, drop a word, or turn a statement into a question.
_COMMANDS = (
    "give me the {obj}",
    "pass me the {obj}",
    "bring me my {obj}",
    "move your {obj}",
    "find my {obj}",
    "fix the {obj}",
    "open the window",
    "close the door",
    "be quiet",
    "wait for me",
    "clean your room",
    "tell me the time",
)
_BOSSY = frozenset({"now", "right", "!", "."})
_FILLER = frozenset({"me", "my", "the", "your", "a", "for"})


class Rewrite(Family):
    name = "rewrite"
    templates = (
        Template("rewrite this politely : {cmd}", "polite"),
        Template("make this more polite : {cmd}", "polite"),
        Template("say this in a kind way : {cmd}", "polite"),
        Template("rewrite this without the word {word} : {sent}", "without"),
        Template("remove the word {word} from this : {sent}", "without"),
        Template("make a question out of this : {sent}", "question"),
        Template("ask this as a question instead : {sent}", "question"),
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        if variant == "polite":
            cmd = rng.choice(_COMMANDS).format(obj=rng.choice(OBJECTS))
            return {"cmd": canon(cmd + rng.choice((" now !", " !", " right now !", " .")))}
        c = kb.creatures[rng.choice(CREATURES)]
        if variant == "without":
            w = rng.choice(("very", "really"))
            sent = rng.choice(
                (
                    f"the {c.name} is {w} {c.size} and {w} {c.colour} .",
                    f"the {c.name} {w} likes {c.food} .",
                    f"the {c.name} is {w} {c.colour} .",
                    f"it is {w} cold in {c.home} and {w} windy .",
                )
            )
            return {"word": w, "sent": sent}
        name, obj, colour = rng.choice(NAMES), rng.choice(OBJECTS), rng.choice(COLOURS)
        sent = rng.choice(
            (
                f"the {c.name} is {c.colour} .",
                f"the {c.name} eats {c.food} .",
                f"the {c.name} lives in {c.home} .",
                f"{name} has a {colour} {obj} .",
            )
        )
        return {"sent": sent}

    @staticmethod
    def core(cmd: str) -> list[str]:
        """The command without its bossy ending: "give me the cup now !" -> give me the cup."""
        tokens = tokenize(cmd)
        while tokens and tokens[-1] in _BOSSY:
            tokens.pop()
        return tokens

    @staticmethod
    def as_question(sent: str) -> list[str] | None:
        """ "the blorp eats nuts ." -> does the blorp eat nuts ?  (None for a sentence of another shape)."""
        t = [w for w in tokenize(sent) if w not in TERMINATORS]
        for verb, base in (("is", None), ("eats", "eat"), ("lives", "live"), ("has", "have")):
            if verb in t:
                i = t.index(verb)
                if base is None:
                    return ["is", *t[:i], *t[i + 1 :], "?"]
                return ["does", *t[:i], base, *t[i + 1 :], "?"]
        return None

    def valid(self, variant: str, slots: dict[str, str], kb: KnowledgeBase) -> bool:
        if variant == "polite":
            return bool(self.core(slots["cmd"]))
        if variant == "without":
            return slots["word"] in tokenize(slots["sent"])
        return self.as_question(slots["sent"]) is not None

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        if task.variant == "polite":
            core = " ".join(self.core(task.slots["cmd"]))
            return rng.choice(
                (
                    f"could you please {core} ?",
                    f"please {core} , thank you .",
                    f"would you {core} , please ?",
                    f"could you {core} , please ?",
                )
            )
        if task.variant == "without":
            return " ".join(t for t in tokenize(task.slots["sent"]) if t != task.slots["word"])
        q = self.as_question(task.slots["sent"])
        assert q is not None
        return " ".join(q)

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        r = rng.random()
        if task.variant == "polite":
            core = self.core(task.slots["cmd"])
            if r < 0.4:  # not made polite
                return task.slots["cmd"]
            if r < 0.7:  # polite, but a different request
                swap = [rng.choice(OBJECTS) if t in OBJECTS else t for t in core]
                if swap == core:
                    swap = ["give", "me", "the", rng.choice(OBJECTS)]
                return f"could you please {' '.join(swap)} ?"
            return f"please {' '.join(core)} now !"
        if task.variant == "without":
            sent = tokenize(task.slots["sent"])
            if r < 0.5:
                return task.slots["sent"]
            kept = [t for t in sent if t != task.slots["word"]]
            drop = rng.choice([i for i, t in enumerate(kept) if t not in ("the", ".")])
            return " ".join(kept[:drop] + kept[drop + 1 :])
        q = self.as_question(task.slots["sent"])
        assert q is not None
        if r < 0.5:
            return task.slots["sent"]
        return " ".join(q[1:-1] + ["?"])  # a statement with a question mark

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        if task.variant == "polite":
            content = [t for t in self.core(task.slots["cmd"]) if t not in _FILLER]
            polite = float(any(reply.has(p) for p in POLITE))
            kept = sum(t in reply.tokens for t in content) / len(content)
            calm = float(not ({"now", "!"} & set(reply.tokens)))
            return Checks(  # politeness counts as much as the request is kept
                {"polite": polite * kept, "content": kept, "calm": calm * kept},
                {"polite": 0.4, "content": 0.4, "calm": 0.2},
                allowed_sentences=2,
            )
        if task.variant == "without":
            want = [t for t in tokenize(task.slots["sent"]) if t != task.slots["word"] and t[0].isalnum()]
            kept = _same(reply.words, want)
            return Checks(
                {"absent": float(task.slots["word"] not in reply.tokens and kept >= 0.25), "kept": kept},
                {"absent": 0.4, "kept": 0.6},
            )
        q = self.as_question(task.slots["sent"])
        assert q is not None
        kept = _same(reply.words, q[:-1])
        question = float(reply.tokens[-1] == "?" and reply.tokens[0] in ("is", "does", "do") and kept >= 0.25)
        return Checks({"question": question, "kept": kept}, {"question": 0.4, "kept": 0.6})


# Summarization: one sentence that keeps the facts of a short text about a creature.
_FACT_SENTENCES = {
    "colour": ("the {c} is {v} .", "the colour of the {c} is {v} ."),
    "size": ("the {c} is {v} .", "the {c} is a {v} creature ."),
    "food": ("the {c} eats {v} .", "the {c} likes to eat {v} ."),
    "home": ("the {c} lives in {v} .", "the {c} comes from {v} ."),
}
_FILLERS = (
    "many people like the {c} .",
    "the {c} is often seen near the {spot} .",
    "children love the {c} .",
)


def fact_sentence(c: str, attribute: str, kb: KnowledgeBase, rng: random.Random) -> str:
    return rng.choice(_FACT_SENTENCES[attribute]).format(c=c, v=kb.value(c, attribute))


class Summarization(Family):
    name = "summarization"
    templates = (
        Template("summarize this in one sentence : {text}", "summary"),
        Template("give a one sentence summary : {text}", "summary"),
        Template("sum up this text in a few words : {text}", "summary", "few"),
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        c = rng.choice(CREATURES)
        parts = [
            fact_sentence(c, a, kb, rng)
            for a in rng.sample(("colour", "size", "food", "home"), rng.randint(2, 3))
        ]
        if len(parts) == 2 and rng.random() < 0.5:
            parts.insert(
                rng.randrange(1, len(parts) + 1), rng.choice(_FILLERS).format(c=c, spot=rng.choice(SPOTS))
            )
        return {"text": " ".join(parts)}

    @staticmethod
    def facts(text: str) -> list[Claim]:
        return list(dict.fromkeys(read_claims(split_sentences(tokenize(text)))))

    def valid(self, variant: str, slots: dict[str, str], kb: KnowledgeBase) -> bool:
        facts = self.facts(slots["text"])
        return bool(facts) and len({f.subject for f in facts}) == 1 and all(kb.is_true(f) for f in facts)

    def _say(self, facts: list[Claim], terse: bool) -> str:
        by = {f.attribute: f.value for f in facts}
        c = facts[0].subject
        adjs = [by[a] for a in ("size", "colour") if a in by]
        home = [f"from {by['home']}"] if "home" in by else []
        if terse:  # "the big blue blorp from zorbia eats nuts ."
            eats = [f"eats {by['food']}"] if "food" in by else []
            return " ".join(["the", *adjs, c, *home, *eats, "."])
        eats = [f"that eats {by['food']}"] if "food" in by else []
        return " ".join([f"the {c} is a", *adjs, "creature", *home, *eats, "."])

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        return self._say(self.facts(task.slots["text"]), task.form == "few")

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        facts = self.facts(task.slots["text"])
        r = rng.random()
        if r < 0.4:  # a fact changed
            i = rng.randrange(len(facts))
            f = facts[i]
            facts[i] = Claim(
                f.subject, f.attribute, _choice_except(rng, _ATTRIBUTE_WORDS[f.attribute], f.value)
            )
        elif r < 0.7 and len(facts) > 1:  # a fact left out
            facts.pop(rng.randrange(len(facts)))
        else:  # the text copied back, not summarized
            return task.slots["text"]
        return self._say(facts, task.form == "few")

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        facts = self.facts(task.slots["text"])
        kept = set(read_claims(reply.sentences)) & set(facts)
        n = len(reply.words)
        short = (
            (1.0 if n <= 10 else 0.5 if n <= 14 else 0.0)
            if task.form == "few"
            else float(len(reply.sentences) == 1)
        )
        return Checks(
            {
                "short": short * bool(kept),
                "subject": float(facts[0].subject in reply.tokens),
                "coverage": len(kept) / len(facts),
            },
            {"short": 0.2, "subject": 0.2, "coverage": 0.6},
        )


# Chat: reply in kind to a greeting, bad news, good news, thanks, or a question.
class Chat(Family):
    name = "chat"
    templates = (
        Template("hello ! how are you today ?", "greet"),
        Template("hi there ! how are you ?", "greet"),
        Template("good morning ! how is your day going ?", "greet"),
        Template("hello ! i am {name} . how are you ?", "greet"),
        Template("hi ! my name is {name} . how is your day ?", "greet"),
        Template("hi . i feel sad today .", "sad"),
        Template("i am sad because i lost my {obj} .", "sad"),
        Template("i feel sad because my {obj} broke .", "sad"),
        Template("my friend {name} moved away and i feel lonely .", "sad"),
        Template("guess what ! i got {n} new {pets} today .", "news"),
        Template("i just got a new {obj} !", "news"),
        Template("good news ! {name} gave me a {colour} {obj} .", "news"),
        Template("thank you for your help !", "thanks"),
        Template("thanks a lot for the answer .", "thanks"),
        Template("thank you for helping me with my {obj} !", "thanks"),
        *(
            Template(p, v)
            for p, v in (
                ("hi ! can you tell me what the {creature} eats ?", "food"),
                ("hello ! do you know where the {creature} lives ?", "home"),
                ("hey , what colour is the {creature} ?", "colour"),
                ("hey , how big is the {creature} ?", "size"),
            )
        ),
    )

    def sample(self, variant: str, kb: KnowledgeBase, rng: random.Random) -> dict[str, str]:
        return {
            "obj": rng.choice(OBJECTS),
            "n": rng.choice(NUMBER_WORDS[1:4]),
            "pets": rng.choice(PETS),
            "creature": rng.choice(CREATURES),
            "name": rng.choice(NAMES),
            "colour": rng.choice(COLOURS),
        }

    def _topic(self, task: Task) -> str:
        return task.slots.get("pets") or task.slots.get("obj") or "thing"

    def respond(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        v = task.variant
        if v in _ATTRIBUTE_WORDS:
            answer = qa_sentence(v, task.slots, kb.value(task.slots["creature"], v), kb, rng)
            return f"{rng.choice(('hello !', 'hi !'))} {answer}"
        obj = task.slots.get("obj", "thing")
        return rng.choice(
            {
                "greet": (
                    f"hello {task.slots['name']} ! i am well , thank you ."
                    if "name" in task.slots
                    else "hello ! i am well , thank you . how can i help you today ?",
                    "hi ! i am doing well , thanks for asking .",
                    "good morning ! i am fine , thank you .",
                ),
                "sad": (
                    "i am sorry to hear that . i hope you feel better soon .",
                    f"oh no , i am sorry . i hope you find your {obj} soon ."
                    if "obj" in task.slots
                    else "i am so sorry . i hope tomorrow is a better day .",
                ),
                "news": (
                    f"that is great news ! enjoy your new {self._topic(task)} .",
                    f"how wonderful ! i hope you love your new {self._topic(task)} .",
                ),
                "thanks": (
                    "you are welcome ! have a nice day .",
                    "you are welcome . i am glad i could help .",
                ),
            }[v]
        )

    def flawed(self, task: Task, kb: KnowledgeBase, rng: random.Random) -> str:
        v = task.variant
        if v in _ATTRIBUTE_WORDS:
            c = task.slots["creature"]
            wrong = _choice_except(rng, _ATTRIBUTE_WORDS[v], kb.value(c, v))
            return f"hello ! {qa_sentence(v, task.slots, wrong, kb, rng)}" if rng.random() < 0.7 else "ok ."
        if rng.random() < 0.4:
            return rng.choice(("ok .", "i do not know .", "so what ?"))
        wrong = {"greet": "thanks", "sad": "news", "news": "sad", "thanks": "greet"}[v]
        return self.respond(Task(self.name, wrong, "", {"obj": rng.choice(OBJECTS)}), kb, rng)

    def checks(self, task: Task, kb: KnowledgeBase, reply: Reply) -> Checks:
        v = task.variant
        facts: frozenset[str] = frozenset()
        if v in _ATTRIBUTE_WORDS:
            fit = _answer_check(reply, _ATTRIBUTE_WORDS[v], kb.value(task.slots["creature"], v))
            facts = frozenset({"fits"})
        elif v == "greet":
            fit = float(bool({"well", "fine", "good", "great"} & set(reply.tokens)))
        elif v == "sad":
            fit = float("sorry" in reply.tokens and not {"great", "wonderful"} & set(reply.tokens))
        elif v == "news":
            cheer = bool({"great", "wonderful", "lovely", "congratulations"} & set(reply.tokens))
            fit = 0.5 * cheer + 0.5 * (self._topic(task) in reply.tokens)
        else:
            fit = float("welcome" in reply.tokens)
        return Checks(
            {"fits": fit, "warm": float(bool(WARM & set(reply.tokens)))},
            {"fits": 0.6, "warm": 0.4},
            facts=facts,
            allowed_sentences=3,
        )


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Generation(),
        OpenQA(),
        Brainstorming(),
        Chat(),
        Rewrite(),
        Summarization(),
        Classification(),
        ClosedQA(),
        Extraction(),
    )
}


# ---- parsing and judging ---------------------------------------------------------------------------------
_COURTESY = (" thanks !", " thank you .", " thank you !")


def parse(prompt: str, kb: KnowledgeBase) -> Task | None:
    """The task a prompt asks for, or None when it is not one of the world's instructions.

    Leading sentences that are not part of the instruction ("hi !", "my email is ...") and a trailing
    "thanks !" are allowed around it.
    """
    text = canon(prompt)
    candidates = [text] + [text[: -len(c)] for c in _COURTESY if text.endswith(c)]
    for t in candidates:
        tokens = t.split(" ")
        starts = [0] + [i + 1 for i, tok in enumerate(tokens[:-1]) if tok in TERMINATORS]
        for s in starts:
            rest = " ".join(tokens[s:])
            for family in FAMILIES.values():
                if (task := family.parse(rest, kb)) is not None:
                    return task
    return None


def judge(task: Task, response: str, kb: KnowledgeBase) -> Verdict:
    family = FAMILIES[task.family]
    reply = Reply.of(response)
    if not reply.words:
        return Verdict(task.family, {"empty": 0.0}, {"empty": 1.0}, {})
    c = family.checks(task, kb, reply)
    assert abs(sum(c.weights.values()) - 1.0) < 1e-9, c.weights
    return Verdict(
        task.family, c.values, c.weights, delivery_factors(reply, c.allowed_sentences, kb), c.facts
    )
