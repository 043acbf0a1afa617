"""The demo world's words, its knowledge base, and the reader that finds factual claims in text.

Everything is lowercase and tokenised the way the demo's word-level tokenizer sees it: words and single
punctuation marks. `tokenize` accepts both "the blorp is blue ." and a decoded "the blorp is blue.".
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# ---- vocabulary ------------------------------------------------------------------------------------------
# Every word that can follow "a" starts with a consonant ("a pink hat"), so the text never needs "an".
COLOURS = ("red", "blue", "green", "yellow", "purple", "pink", "white", "black")
SIZES = ("tiny", "small", "big", "huge")
FOODS = ("berries", "seeds", "leaves", "honey", "nuts", "mushrooms", "grass", "bugs", "apples", "carrots")
CREATURES = (
    "blorp", "zib", "tumbit", "fennick", "grob", "wuzzle", "snib", "dorrit",
    "plook", "mibble", "krell", "quoggle", "vorn", "yimble", "flib", "gorp",
    "hobnit", "jibber", "klon", "lurp", "morp", "nibbit", "oggle", "pim",
    "razzle", "skeeb", "tork", "ulm", "wib", "yop", "zuzu", "dax",
)  # fmt: skip
LANDS = ("zorbia", "quelland", "marrovia", "pellinor", "tumaria", "brindle", "nuvia", "dravia")
CITIES = ("plimtown", "ostrel", "durnhelm", "arvos", "kessa", "yarrick", "sollen", "wexton")
NAMES = (
    "anna", "ben", "carl", "dora", "eli", "finn", "gina", "hugo",
    "ivy", "jack", "kim", "leo", "mia", "nora", "omar", "pia",
)  # fmt: skip
OBJECTS = ("hat", "ball", "book", "cup", "kite", "box", "bag", "coat", "lamp", "drum")
PETS = ("cats", "dogs", "birds", "frogs", "goats", "hens")
SPOTS = ("river", "hill", "forest", "lake", "market", "garden", "cave", "beach")
ACTIVITIES = (
    "read a book", "bake bread", "play a game", "paint a picture", "sing a song",
    "write a poem", "watch a film", "call a friend", "build a fort", "do a puzzle",
)  # fmt: skip
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
POSITIVE = ("great", "lovely", "tasty", "kind", "warm", "fun", "clean", "wonderful", "nice", "friendly")
NEGATIVE = ("awful", "cold", "rude", "boring", "dirty", "terrible", "slow", "bland", "noisy", "bad")
RUDE = ("ugh", "stupid", "dumb", "whatever", "idiot", "shut")
ATTRIBUTES = ("colour", "size", "food", "home")

TERMINATORS = frozenset(".!?")
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lowercase words and single punctuation marks: the units the demo tokenizer and the judge both see."""
    return _TOKEN.findall(text.lower())


def canon(text: str) -> str:
    """The canonical spelling of a text: its tokens joined by single spaces."""
    return " ".join(tokenize(text))


def number_value(token: str) -> int | None:
    """3 for '3' or 'three', else None."""
    if token.isdigit():
        return int(token)
    return NUMBER_WORDS.index(token) + 1 if token in NUMBER_WORDS else None


def split_sentences(tokens: list[str]) -> list[list[str]]:
    """Sentences end at . ! ?; the markers of a numbered list ("1 . red 2 . blue") do not end one.

    A trailing fragment without an end mark is returned as a last, unfinished sentence.
    """
    sentences: list[list[str]] = []
    current: list[str] = []
    expect = 0  # the next list number inside a numbered list, 0 outside one
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.isdigit() and i + 1 < len(tokens) and tokens[i + 1] == ".":
            k = int(tok)
            starts_list = k == 1 and (not current or current[-1] == ":")
            if starts_list or (expect and k == expect):
                current += [tok, "."]
                expect = k + 1
                i += 2
                continue
        current.append(tok)
        if tok in TERMINATORS:
            sentences.append(current)
            current, expect = [], 0
        i += 1
    if current:
        sentences.append(current)
    return sentences


# ---- knowledge base --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Creature:
    name: str
    colour: str
    size: str
    food: str
    home: str
    """The land it lives in."""


@dataclass(frozen=True)
class KnowledgeBase:
    """32 made-up creatures with a colour, size, food and home land; 8 lands, each with a capital."""

    creatures: dict[str, Creature]
    capitals: dict[str, str]
    """land -> capital city."""

    @classmethod
    def generate(cls, seed: int) -> KnowledgeBase:
        rng = random.Random(f"kb/{seed}")
        homes = [land for land in LANDS for _ in range(len(CREATURES) // len(LANDS))]
        rng.shuffle(homes)  # every land is home to exactly four creatures
        creatures = {
            name: Creature(name, rng.choice(COLOURS), rng.choice(SIZES), rng.choice(FOODS), home)
            for name, home in zip(CREATURES, homes, strict=True)
        }
        cities = list(CITIES)
        rng.shuffle(cities)
        return cls(creatures=creatures, capitals=dict(zip(LANDS, cities, strict=True)))

    def value(self, creature: str, attribute: str) -> str:
        return getattr(self.creatures[creature], attribute)

    def with_value(self, attribute: str, value: str) -> list[str]:
        """The creatures whose `attribute` is `value`, in a fixed order."""
        return [c.name for c in self.creatures.values() if getattr(c, attribute) == value]

    def land_of_capital(self, city: str) -> str:
        return next(land for land, c in self.capitals.items() if c == city)

    def is_true(self, claim: Claim) -> bool:
        if claim.attribute == "capital":
            return self.capitals[claim.subject] == claim.value
        return self.value(claim.subject, claim.attribute) == claim.value


# ---- reading claims --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """A statement of fact found in text: `subject`'s `attribute` is `value` (capital: subject is a land)."""

    subject: str
    attribute: str
    value: str


_CREATURE_SET, _LAND_SET, _CITY_SET = frozenset(CREATURES), frozenset(LANDS), frozenset(CITIES)
_COPULAS = frozenset({"is", "was"})
_ADVERBS = frozenset({"very", "really", "quite", "so"})
# Words that may stand between "is" and the colour or size it gives: "is a big , very blue creature".
_COPULA_RUN = frozenset({"a", "an", ",", "and"}) | _ADVERBS | set(SIZES) | set(COLOURS)
_EAT = frozenset({"eats", "eat", "ate", "eating", "likes", "like", "loves", "love"})
_LIVE = frozenset({"lives", "live", "lived", "home"})


def read_claims(sentences: list[list[str]]) -> list[Claim]:
    """Every claim about a creature's colour, size, food or home, or a land's capital, in `sentences`.

    A claim belongs to the creature last named (an "it" in the next sentence continues it) up to the next
    creature named, and is made by a few plain patterns: "the X is (a) big blue ...", "the big blue X",
    "X lives in / is from L", "X eats / likes (to eat) F", "the capital of L is C", "C is the capital of L".
    Questions claim nothing.
    """
    claims: list[Claim] = []
    subject: str | None = None
    for sent in sentences:
        if sent[-1] != "?":
            claims += _capital_claims(sent)
        starts = [
            (i, tok if tok in _CREATURE_SET else subject)
            for i, tok in enumerate(sent)
            if tok in _CREATURE_SET or (tok == "it" and subject is not None)
        ]
        if not starts or sent[-1] == "?":
            # "it" reaches back only to a sentence that names (or continues) a creature
            subject = starts[-1][1] if starts else None
            continue
        for j, (i, creature) in enumerate(starts):
            assert creature is not None
            subject = creature
            end = starts[j + 1][0] if j + 1 < len(starts) else len(sent)
            claims += _before(sent, i, creature) + _scope(sent[i + 1 : end], creature)
    return claims


def _capital_claims(sent: list[str]) -> list[Claim]:
    out = []
    for i, tok in enumerate(sent):
        # "the capital of L is C"
        if sent[i : i + 2] == ["capital", "of"] and i + 4 < len(sent):
            land, verb, city = sent[i + 2], sent[i + 3], sent[i + 4]
            if land in _LAND_SET and verb in _COPULAS and city in _CITY_SET:
                out.append(Claim(land, "capital", city))
        # "C is the capital of L"
        if tok in _CITY_SET and sent[i + 1 : i + 5] == ["is", "the", "capital", "of"] and sent[i + 5 : i + 6]:
            land = sent[i + 5]
            if land in _LAND_SET:
                out.append(Claim(land, "capital", tok))
    return out


def _before(sent: list[str], i: int, creature: str) -> list[Claim]:
    """Adjectives right before the name: "the big blue blorp"."""
    out = []
    k = i - 1
    while k >= 0 and (sent[k] in SIZES or sent[k] in COLOURS or sent[k] in _ADVERBS):
        if sent[k] in COLOURS:
            out.append(Claim(creature, "colour", sent[k]))
        elif sent[k] in SIZES:
            out.append(Claim(creature, "size", sent[k]))
        k -= 1
    return out


def _scope(scope: list[str], creature: str) -> list[Claim]:
    out = []
    if any(t in _COPULAS for t in scope):
        k = next(i for i, t in enumerate(scope) if t in _COPULAS) + 1
        while k < len(scope) and scope[k] in _COPULA_RUN:
            if scope[k] in COLOURS:
                out.append(Claim(creature, "colour", scope[k]))
            elif scope[k] in SIZES:
                out.append(Claim(creature, "size", scope[k]))
            k += 1
    for k, tok in enumerate(scope):
        prev = scope[k - 1] if k else ""
        if tok in _LAND_SET and (prev == "from" or (prev in ("in", "to") and _LIVE & set(scope[:k]))):
            out.append(Claim(creature, "home", tok))
        if tok in FOODS and _EAT & set(scope[max(0, k - 3) : k]):
            out.append(Claim(creature, "food", tok))
    return out
