"""A small simulated world in which `instructrl demo` retells InstructGPT on a laptop CPU.

**What the world is.** A few hundred lowercase words (a word-level vocabulary of 430 tokens); a knowledge
base of 32 made-up creatures, each with a colour, size, food and home land, and 8 lands with capitals; and
nine instruction families modelled on InstructGPT's use-case categories (Ouyang et al. 2022, Table 1):
generation (stories, descriptions), open QA, brainstorming (lists), chat, rewrite, summarization,
classification, closed QA and extraction. Every prompt comes from a template and can be read back from its
text, so quality is a pure function of the (prompt, response) strings.

**The gold standard.** `World.gold_score(prompt, response)` in [0, 1] is `task × delivery`: `task` is a
weighted sum of what the instruction asked for (the right answer or label, the requested count, length,
format, mood or politeness), `delivery` multiplies a factor for each way of delivering badly (not stopping
when done: 0.8 per extra sentence; an unfinished last sentence: 0.7; repetition: 0.6; rude words: 0.5; a
false statement about the world: 0.5). A perfect answer scores 1; the right answer followed by a forum
reply scores 0.8; a fluent wrong answer scores about 0.1-0.4. `World.gold(...)` shows every check.

**People.** Users write prompts with a heavy-tailed count per user (a few write far more than 200), resend
some (exact duplicates), resend some long ones with a "thanks !" added (near duplicates sharing a long
prefix), and put personal information in a few. Simulated labelers (`labelers.py`) judge through the gold
standard with their own noise and mild biases, so they agree with each other about as often as the paper's
labelers did (~73% of ranked pairs); a separate held-out group is the only judge of the final evaluation.

**Pretraining text.** Encyclopedia pages, stories, Q&A pages, reviews, chats and forum threads in which an
instruction is followed as often by another instruction, a digression or a reply as by an answer: a model
pretrained on it knows the world but does not follow instructions, and a few-shot prompt in the Q&A
pages' style helps it somewhat.

**Learnable by a tiny model** (measured once while building the world, 2 CPU cores): a 4-layer, 128-wide
GPT-2 (0.9M parameters) pretrained for 5 minutes on the corpus (1,100 steps of 32 x 128 tokens, loss
0.68) knows every benchmark fact, scores 0.11 on bare instructions and 0.59 with a 3-shot prompt; one
minute of SFT on 3,000 demonstrations takes it to 0.87 (and its benchmark accuracy down to 0.88).

All text is lowercase with punctuation as separate tokens ("what colour is the blorp ?"); everything is
seeded and deterministic, and pure Python.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from instructrl.datasets.records import PromptRecord
from instructrl.demo.knowledge import (
    ACTIVITIES,
    ATTRIBUTES,
    CITIES,
    COLOURS,
    CREATURES,
    LANDS,
    NAMES,
    NEGATIVE,
    NUMBER_WORDS,
    OBJECTS,
    PETS,
    POSITIVE,
    RUDE,
    SPOTS,
    KnowledgeBase,
    canon,
    tokenize,
)
from instructrl.demo.tasks import FAMILIES, THINGS, Task, Verdict, fact_sentence, judge, parse

FAMILY_SHARES = {
    "generation": 0.22,
    "open_qa": 0.16,
    "brainstorming": 0.12,
    "chat": 0.10,
    "rewrite": 0.10,
    "summarization": 0.08,
    "classification": 0.08,
    "closed_qa": 0.07,
    "extraction": 0.07,
}
"""Share of user prompts per family: the order of InstructGPT's Table 1 (generation 46%, open QA 12%, ...,
extraction 2%), flattened so that the rarest family still has a few hundred prompts in the demo."""

FEW_SHOT_STOP = "question :"
"""Where a few-shot continuation stops being the answer (the next Q&A pair begins)."""

DIGRESSIONS = (
    "i had a long day today .",
    "my cat is asleep on the bed .",
    "it is raining again here .",
    "i will ask my friend later .",
    "this reminds me of a story .",
    "anyway , back to work .",
    "does anyone know a good book ?",
    "i like the rain .",
    "my teacher gave us this for homework .",
    "sorry for my bad writing .",
)
FORUM_REPLIES = (
    "i have the same question .",
    "thanks , this helped me .",
    "why do you want to know ?",
    "i do not know , sorry .",
    "did you try asking your teacher ?",
    "what a dumb question .",
    "this was asked before .",
    "good question , i want to know too .",
)
OPENERS = (
    "hi !",
    "hello .",
    "i have a question .",
    "please help .",
    "this is for my homework .",
    "i need help with this .",
    "quick one .",
    "good evening !",
)
CLOSERS = ("i hope this helps .", "let me know if you need more .", "have a nice day .")


@dataclass(frozen=True)
class UserConfig:
    """How the world's users write prompts (the raw stream, before intake)."""

    n_users: int = 1200
    """Ordinary users; each writes a Pareto-distributed number of prompts (most a few, some dozens)."""
    n_heavy_users: int = 4
    """Users who write far more than the 200-per-user cap."""
    heavy_prompts: tuple[int, int] = (300, 700)
    """Range of prompt counts of a heavy user."""
    favourite_share: float = 0.5
    """Share of a user's prompts from the user's favourite family (the rest follow FAMILY_SHARES)."""
    resend_rate: float = 0.04
    """Chance that a prompt is an exact copy of one the same user sent before."""
    near_duplicate_rate: float = 0.03
    """Chance that a prompt is one of the user's earlier long (100+ characters) ones with "thanks !" added."""
    pii_rate: float = 0.02
    """Chance that a prompt opens with an email, phone number, card number or street address."""
    opener_rate: float = 0.25
    """Chance that a prompt opens with a sentence that is not part of the instruction ("hi !")."""


class World:
    """The seeded world: its knowledge, prompts, gold standard, users, pretraining text and benchmark."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.kb = KnowledgeBase.generate(seed)
        self._tasks: dict[str, Task | None] = {}

    # ---- prompts and the gold standard -------------------------------------------------------------------
    def make_prompt(self, rng: random.Random, family: str | None = None) -> str:
        name = family or rng.choices(list(FAMILY_SHARES), weights=list(FAMILY_SHARES.values()))[0]
        return FAMILIES[name].make(self.kb, rng)[0]

    def parse(self, prompt: str) -> Task | None:
        """The task a prompt asks for, or None if it is not one of this world's instructions."""
        if prompt not in self._tasks:
            self._tasks[prompt] = parse(prompt, self.kb)
        return self._tasks[prompt]

    def task(self, prompt: str) -> Task:
        task = self.parse(prompt)
        if task is None:
            raise ValueError(
                f"not an instruction of the demo world: {prompt[:80]!r} (use prompts from World.make_prompt "
                f"or World.user_prompts)"
            )
        return task

    def gold(self, prompt: str, response: str) -> Verdict:
        """Every check and factor of the gold standard for this response."""
        return judge(self.task(prompt), response, self.kb)

    def gold_score(self, prompt: str, response: str) -> float:
        """True quality in [0, 1]: task checks (weighted) x delivery factors. See the module docstring."""
        return self.gold(prompt, response).score

    def respond(self, prompt: str, rng: random.Random) -> str:
        """A good response, with natural variety of phrasing."""
        task = self.task(prompt)
        return FAMILIES[task.family].respond(task, self.kb, rng)

    def sample_candidates(self, prompt: str, k: int, rng: random.Random) -> list[str]:
        """k responses like a fine-tuned model samples: some good, some flawed, rambling, cut off, rude...

        Each is good with probability 0.4, else has one (70%) or two (30%) of: wrong content (fact, label,
        count, item, mood, form), rambling on after the answer, repetition, an off-topic answer, being cut
        off, rudeness.
        """
        return [self._candidate(prompt, rng) for _ in range(k)]

    def _candidate(self, prompt: str, rng: random.Random) -> str:
        task = self.task(prompt)
        family = FAMILIES[task.family]
        if rng.random() < 0.4:
            return family.respond(task, self.kb, rng)
        kinds = ("flawed", "ramble", "repeat", "off_topic", "truncate", "rude")
        picked = rng.choices(
            kinds, weights=(0.35, 0.25, 0.12, 0.1, 0.1, 0.08), k=1 if rng.random() < 0.7 else 2
        )
        if "off_topic" in picked:
            text = self.respond(self.make_prompt(rng), rng)
        elif "flawed" in picked:
            text = family.flawed(task, self.kb, rng)
        else:
            text = family.respond(task, self.kb, rng)
        for kind in picked:
            if kind == "ramble":
                text = f"{text} {self._junk(rng)}"
            elif kind == "repeat":
                text = f"{text} {text}"
            elif kind == "rude":
                text = f"ugh , {text}" if rng.random() < 0.5 else f"{text} {rng.choice(RUDE)} ."
        if "truncate" in picked:
            tokens = text.split()
            text = " ".join(tokens[: max(1, len(tokens) - rng.randint(1, 4))])
        return text

    def _junk(self, rng: random.Random) -> str:
        """What web text puts after an answer: a digression, an instruction, a forum reply, a sign-off."""
        r = rng.random()
        if r < 0.3:
            return rng.choice(DIGRESSIONS)
        if r < 0.6:
            return self.make_prompt(rng)
        if r < 0.85:
            return f"reply by {rng.choice(NAMES)} : {rng.choice(FORUM_REPLIES)}"
        return rng.choice(CLOSERS)

    # ---- users -------------------------------------------------------------------------------------------
    def user_prompts(self, config: UserConfig = UserConfig(), seed: int = 0) -> list[PromptRecord]:
        """The raw prompt stream of the world's users, in the order they sent it (before intake).

        With the defaults (seed 0): 7,130 prompts from 1,204 users (4 of them with 390-650 prompts); 25% are
        exact repeats of an earlier prompt (resends, and common ones like "hello ! how are you today ?"),
        2% are near duplicates and 2% carry personal information. The intake (dedup, PII, 200 per user)
        keeps 4,538: generation 851, open QA 764, brainstorming 548, summarization 544, rewrite 451,
        closed QA 444, chat 338, classification 311, extraction 287.
        """
        rng = random.Random(f"users/{self.seed}/{seed}")
        families = list(FAMILY_SHARES)
        counts = [min(150, int(rng.paretovariate(1.1))) for _ in range(config.n_users)]
        counts += [rng.randint(*config.heavy_prompts) for _ in range(config.n_heavy_users)]
        rng.shuffle(counts)
        stream: list[tuple[float, int, str]] = []
        for u, count in enumerate(counts):
            favourite = rng.choices(families, weights=list(FAMILY_SHARES.values()))[0]
            sent: list[str] = []
            for _ in range(count):
                r = rng.random()
                long_ones = [p for p in sent if len(p) >= 100 and not p.endswith(" thanks !")]
                if sent and r < config.resend_rate:
                    prompt = rng.choice(sent)
                elif long_ones and r < config.resend_rate + config.near_duplicate_rate:
                    prompt = rng.choice(long_ones) + " thanks !"
                else:
                    family = favourite if rng.random() < config.favourite_share else None
                    prompt = self.make_prompt(rng, family)
                    if len(prompt.split()) <= 20 and rng.random() < config.opener_rate:
                        prompt = f"{rng.choice(OPENERS)} {prompt}"
                    if rng.random() < config.pii_rate:
                        prompt = f"{_personal_information(rng)} {prompt}"
                sent.append(prompt)
            times = sorted(rng.random() for _ in sent)
            stream += [(t, u, p) for t, p in zip(times, sent, strict=True)]
        stream.sort()
        return [PromptRecord(prompt=p, user_id=f"user-{u:04d}") for _, u, p in stream]

    # ---- pretraining text --------------------------------------------------------------------------------
    def pretraining_corpus(self, n_docs: int = 20_000, seed: int = 0) -> list[str]:
        """Web-like documents of the world; with the defaults about 0.8M tokens (40 per document).

        A mix of encyclopedia pages (25%), instruction threads (25%: each instruction is followed equally
        often by an answer, another instruction, a digression or a forum reply), stories (15%), Q&A pages
        (13%: about 75% of answers right, 10% wrong, 15% with chatter after), short biographies (8%),
        reviews (7%) and chats (7%). Its statements of fact are all true.
        """
        rng = random.Random(f"corpus/{self.seed}/{seed}")
        kinds = {
            self._encyclopedia: 0.25,
            self._thread: 0.25,
            self._story: 0.15,
            self._qa_page: 0.13,
            self._biography: 0.08,
            self._review: 0.07,
            self._chat_log: 0.07,
        }
        makers = rng.choices(list(kinds), weights=list(kinds.values()), k=n_docs)
        return [make(rng) for make in makers]

    def _encyclopedia(self, rng: random.Random) -> str:
        if rng.random() < 0.2:
            land = rng.choice(LANDS)
            city = self.kb.capitals[land]
            lines = [
                f"{land} .",
                f"{land} is a land far away .",
                rng.choice((f"the capital of {land} is {city} .", f"{city} is the capital of {land} .")),
            ]
            lines += [f"the {c} lives in {land} ." for c in self.kb.with_value("home", land)]
            return " ".join(lines)
        c = self.kb.creatures[rng.choice(CREATURES)]
        lines = [fact_sentence(c.name, a, self.kb, rng) for a in rng.sample(ATTRIBUTES, 4)]
        lines += [
            rng.choice(
                (
                    f"the colour of the {c.name} is {c.colour} .",
                    f"the size of the {c.name} is {c.size} .",
                    f"the {c.name} is a {c.size} {c.colour} creature from {c.home} .",
                    f"it is often seen near the {rng.choice(SPOTS)} .",
                )
            )
        ]
        rng.shuffle(lines)
        return " ".join([f"the {c.name} .", *lines])

    def _instruction(self, rng: random.Random) -> tuple[str, str]:
        prompt = self.make_prompt(rng)
        answer = self.respond(prompt, rng)
        return prompt, answer

    def thread_parts(self, rng: random.Random) -> list[tuple[str, str]]:
        """(kind, text) segments of a forum thread. An instruction is followed equally often by its answer,
        another instruction, a digression or a reply: web text does not follow instructions."""
        prompt, answer = self._instruction(rng)
        parts = [("instruction", prompt)]
        for _ in range(rng.randint(1, 4)):
            kinds = ["instruction", "digression", "reply"]
            if parts[-1][0] == "instruction":
                kinds.append("answer")
            kind = rng.choice(kinds)
            if kind == "answer":
                parts.append((kind, answer))
            elif kind == "instruction":
                prompt, answer = self._instruction(rng)
                parts.append((kind, prompt))
            elif kind == "digression":
                parts.append((kind, rng.choice(DIGRESSIONS)))
            else:
                parts.append((kind, f"reply by {rng.choice(NAMES)} : {rng.choice(FORUM_REPLIES)}"))
        return parts

    def _thread(self, rng: random.Random) -> str:
        texts = [text for _, text in self.thread_parts(rng)]
        if rng.random() < 0.2:
            texts[0] = f"{rng.choice(OPENERS)} {texts[0]}"
        if rng.random() < 0.3:
            texts[0] = f"posted by {rng.choice(NAMES)} : {texts[0]}"
        return " ".join(texts)

    def _story(self, rng: random.Random) -> str:
        prompt = FAMILIES["generation"].make(self.kb, rng)[0]
        task = self.task(prompt)
        if task.variant == "describe":
            task = Task("generation", "story", "short", {"creature": task.slots["creature"]})
        story = FAMILIES["generation"].respond(task, self.kb, rng)
        return f"a story about the {task.slots['creature']} . {story}"

    def _qa_page(self, rng: random.Random) -> str:
        """Questions with answers, as on the web: mostly right, some wrong, some with chatter after.

        The wrong ones miss a count, label, format or mood, never a fact about the world: the corpus stays
        consistent with the knowledge base, which the benchmark measures.
        """
        pairs = []
        for _ in range(rng.randint(2, 5)):
            prompt, answer = self._instruction(rng)
            r = rng.random()
            if r < 0.15:
                task = self.task(prompt)
                wrong = FAMILIES[task.family].flawed(task, self.kb, rng)
                verdict = self.gold(prompt, wrong)
                if verdict.overlooking_facts().score == verdict.score:
                    answer = wrong
            elif r < 0.3:
                answer = f"{answer} {rng.choice(DIGRESSIONS + CLOSERS)}"
            pairs.append(f"question : {prompt} answer : {answer}")
        return " ".join(["questions and answers .", *pairs])

    def _biography(self, rng: random.Random) -> str:
        name, n = rng.choice(NAMES), rng.choice(NUMBER_WORDS[1:9])
        lines = [
            f"{name} lives in {rng.choice(CITIES)} .",
            f"{name} has a {rng.choice(COLOURS)} {rng.choice(OBJECTS)} and {n} {rng.choice(PETS)} .",
            f"{name} likes to {rng.choice(ACTIVITIES)} .",
        ]
        rng.shuffle(lines)
        return " ".join(lines)

    def _review(self, rng: random.Random) -> str:
        good = rng.random() < 0.5
        adj, adj2 = rng.sample(POSITIVE if good else NEGATIVE, 2)
        thing, thing2 = rng.sample(THINGS, 2)
        stars = rng.choice(("five stars .", "four stars .") if good else ("one star .", "two stars ."))
        return f"review by {rng.choice(NAMES)} : the {thing} was {adj} and the {thing2} was {adj2} . {stars}"

    def _chat_log(self, rng: random.Random) -> str:
        a, b = rng.sample(NAMES, 2)
        prompt = FAMILIES["chat"].make(self.kb, rng)[0]
        return f"{a} : {prompt} {b} : {self.respond(prompt, rng)}"

    # ---- few-shot prompting and the public benchmark ------------------------------------------------------
    def few_shot_prefix(self, k: int = 3) -> str:
        """k solved examples in the style of the corpus's Q&A pages, from different families."""
        rng = random.Random(f"few-shot/{self.seed}")
        families = list(FAMILY_SHARES)
        rng.shuffle(families)
        pairs = []
        for i in range(k):
            prompt = self.make_prompt(rng, families[i % len(families)])
            pairs.append(f"question : {prompt} answer : {self.respond(prompt, rng)}")
        return " ".join(["questions and answers .", *pairs])

    def few_shot_prompt(self, prompt: str, k: int = 3) -> str:
        """`prompt` after k solved examples; `few_shot_answer(continuation)` is the model's answer."""
        return f"{self.few_shot_prefix(k)} question : {prompt} answer :"

    def benchmark(self, n: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
        """Closed-book facts as cloze items ("the blorp lives in", "zorbia"); all 136 when n is None.

        Scored by exact match of the first generated word (`benchmark_correct`). Every item is stated in
        the pretraining corpus in this form, so a model that keeps its pretraining knows them.
        """
        items = [(f"the capital of {land} is", city) for land, city in self.kb.capitals.items()]
        for c in self.kb.creatures.values():
            items += [
                (f"the colour of the {c.name} is", c.colour),
                (f"the size of the {c.name} is", c.size),
                (f"the {c.name} eats", c.food),
                (f"the {c.name} lives in", c.home),
            ]
        if n is None:
            return items
        if n > len(items):
            raise ValueError(f"the benchmark has {len(items)} items; asked for {n}")
        return random.Random(f"benchmark/{self.seed}/{seed}").sample(items, n)


def few_shot_answer(continuation: str) -> str:
    """The answer part of a few-shot continuation: its text before the next FEW_SHOT_STOP."""
    text = canon(continuation)
    return text.split(FEW_SHOT_STOP)[0].strip()


def benchmark_correct(answer: str, generation: str) -> bool:
    """Exact match of the first generated word."""
    words = tokenize(generation)
    return bool(words) and words[0] == answer


def _personal_information(rng: random.Random) -> str:
    """A sentence with an email, a phone number, a card number (passing the Luhn check) or an address."""
    name = rng.choice(NAMES)
    kind = rng.choice(("email", "phone", "card", "address"))
    if kind == "email":
        return (
            f"my email is {name}.{rng.choice('abcdefgh')}@{rng.choice(('mailbox', 'webpost', 'inbox'))}.com ."
        )
    if kind == "phone":
        return f"call me at {rng.randint(200, 999)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)} ."
    if kind == "card":
        digits = [rng.randint(0, 9) for _ in range(15)]
        digits.append(_luhn_digit(digits))
        groups = " ".join("".join(map(str, digits[i : i + 4])) for i in range(0, 16, 4))
        return f"my card number is {groups} ."
    street = rng.choice(("oak", "elm", "mill", "hill", "park"))
    return f"i live at {rng.randint(2, 99)} {street} {rng.choice(('street', 'road', 'avenue'))} ."


def _luhn_digit(digits: list[int]) -> int:
    """The check digit that makes `digits` + it pass the Luhn checksum."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return (10 - total % 10) % 10
