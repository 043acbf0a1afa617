"""Simulated labelers: people who judge responses through the world's gold standard, each in their own way.

A labeler perceives a response's quality as

    perceived = gold score (facts overlooked on tasks whose facts it does not know)
                + length_bias * words / 10 + politeness_bias * [polite words] + Normal(0, noise)

and ranks, compares and rates by it. Noise levels are set so that two labelers of a group order a pair of
responses the same way about as often as InstructGPT's did (Ouyang et al. 2022, Sec. 5.1: 72.6 ± 1.5% for
training labelers, 77.3 ± 1.3% for held-out labelers). Measured with `measure_agreement` on 2,000 ranking
tasks of 4 to 9 `World.sample_candidates` each (seed 0): training labelers 0.73, held-out labelers 0.77.

Agreement depends on how different the candidates are. On 4 samples per prompt from a 4-layer SFT model
trained for a minute, 18% of pairs were the same string and 35% were different but equally good by the
gold standard (both perfect, say), and the same training labelers agreed on only 63% of pairs: on those
pairs labelers split almost at random, and a reward model cannot predict them either. Ranking distinct
candidates drawn from several policies, as InstructGPT's comparisons were, keeps agreement (and the
reachable RM accuracy) near the paper's: with 2 SFT samples and 2 samples of the base model under a
3-shot prompt per prompt, training labelers agreed on 0.69 of the distinct pairs.

Every judgement is deterministic: its random numbers come from a hash of the labeler's seed and the task,
unless a `random.Random` is passed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

from instructrl.demo.knowledge import tokenize
from instructrl.demo.tasks import FAMILIES, POLITE
from instructrl.demo.world import CLOSERS, World

Group = Literal["train", "heldout"]

GROUP_NOISE: dict[str, float] = {"train": 0.225, "heldout": 0.18}
"""Mean noise (std of perceived quality) per group, calibrated to the paper's agreement rates."""
TIE_MARGIN = 0.02
"""`compare` calls two responses a tie when the perceived qualities differ by less than this."""
OUTCOME = {"a": 1.0, "b": 0.0, "tie": 0.5}
"""Response a's win-rate outcome for each verdict of `compare`."""


@dataclass(frozen=True)
class Labeler:
    """One simulated labeler with its own noise and mild biases."""

    id: str
    group: Group
    """'train' labelers write demonstrations and comparisons; 'heldout' ones only judge the evaluation."""
    noise: float
    """Std of the Gaussian noise on perceived quality (gold scores lie in [0, 1])."""
    length_bias: float
    """Perceived quality added per 10 words: a mild taste for longer answers."""
    politeness_bias: float
    """Perceived quality added when a response uses a polite phrase ("please", "thank you", ...)."""
    miss_fact_rate: float
    """Chance per task of not knowing the facts involved, and so not noticing a wrong one."""
    sloppiness: float
    """Chance that a written demonstration has a small flaw (a sign-off too many, or a slip)."""
    seed: int
    world: World = field(repr=False, compare=False)

    def _rng(self, kind: str, prompt: str, *responses: str) -> random.Random:
        digest = hashlib.sha256("\x1f".join((str(self.seed), kind, prompt, *responses)).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def perceive(self, prompt: str, responses: list[str], rng: random.Random) -> list[float]:
        """Perceived quality of each response, judged together as one task."""
        knows_facts = rng.random() >= self.miss_fact_rate
        out = []
        for response in responses:
            verdict = self.world.gold(prompt, response)
            if not knows_facts:
                verdict = verdict.overlooking_facts()
            text = f" {' '.join(tokenize(response))} "
            n_words = sum(t[0].isalnum() for t in text.split())
            polite = any(f" {p} " in text for p in POLITE)
            out.append(
                verdict.score
                + self.length_bias * n_words / 10
                + self.politeness_bias * polite
                + rng.gauss(0.0, self.noise)
            )
        return out

    def rank(self, prompt: str, responses: list[str], rng: random.Random | None = None) -> list[int]:
        """Indices of `responses`, best first."""
        rng = rng or self._rng("rank", prompt, *responses)
        quality = self.perceive(prompt, responses, rng)
        return sorted(range(len(responses)), key=lambda i: -quality[i])

    def compare(
        self, prompt: str, a: str, b: str, rng: random.Random | None = None
    ) -> Literal["a", "b", "tie"]:
        """Which of two responses is better (for win rates); identical or near-equal ones are a tie."""
        if a == b:
            return "tie"
        rng = rng or self._rng("compare", prompt, a, b)
        qa, qb = self.perceive(prompt, [a, b], rng)
        if abs(qa - qb) < TIE_MARGIN:
            return "tie"
        return "a" if qa > qb else "b"

    def likert(self, prompt: str, response: str, rng: random.Random | None = None) -> int:
        """Overall quality on the paper's 1-7 scale."""
        rng = rng or self._rng("likert", prompt, response)
        (q,) = self.perceive(prompt, [response], rng)
        return 1 + round(6 * min(1.0, max(0.0, q)))

    def write_demonstration(self, prompt: str, rng: random.Random | None = None) -> str:
        """A good response in this labeler's words; now and then with a small flaw."""
        rng = rng or self._rng("demo", prompt)
        response = self.world.respond(prompt, rng)
        if rng.random() < self.sloppiness:
            if rng.random() < 0.7:
                return f"{response} {rng.choice(CLOSERS)}"
            task = self.world.task(prompt)
            return FAMILIES[task.family].flawed(task, self.world.kb, rng)
        return response


def make_labelers(world: World, n_train: int = 10, n_heldout: int = 5, seed: int = 0) -> list[Labeler]:
    """`n_train` training labelers ('train-00', ...) and `n_heldout` held-out ones ('heldout-00', ...)."""
    rng = random.Random(f"labelers/{world.seed}/{seed}")
    out = []
    groups: tuple[tuple[Group, int], ...] = (("train", n_train), ("heldout", n_heldout))
    for group, n in groups:
        for i in range(n):
            out.append(
                Labeler(
                    id=f"{group}-{i:02d}",
                    group=group,
                    noise=GROUP_NOISE[group] * rng.uniform(0.8, 1.2),
                    length_bias=rng.uniform(0.0, 0.03),
                    politeness_bias=rng.uniform(0.0, 0.05),
                    miss_fact_rate=rng.uniform(0.0, 0.15),
                    sloppiness=rng.uniform(0.03, 0.1),
                    seed=rng.getrandbits(63),
                    world=world,
                )
            )
    return out


def agreement(rankings_a: list[list[int]], rankings_b: list[list[int]]) -> float:
    """Fraction of response pairs, pooled over tasks, that two lists of rankings order the same way."""
    same = total = 0
    for ra, rb in zip(rankings_a, rankings_b, strict=True):
        pos_a = {r: i for i, r in enumerate(ra)}
        pos_b = {r: i for i, r in enumerate(rb)}
        for i, j in combinations(range(len(ra)), 2):
            same += (pos_a[i] < pos_a[j]) == (pos_b[i] < pos_b[j])
            total += 1
    return same / total


def measure_agreement(world: World, labelers: list[Labeler], n_tasks: int = 2000, seed: int = 0) -> float:
    """Inter-labeler agreement on `n_tasks` ranking tasks of 4-9 realistic candidates, each ranked by two
    different labelers drawn from `labelers` (the paper's measure)."""
    rng = random.Random(f"agreement/{seed}")
    ranks_a, ranks_b = [], []
    for _ in range(n_tasks):
        prompt = world.make_prompt(rng)
        candidates = world.sample_candidates(prompt, rng.randint(4, 9), rng)
        a, b = rng.sample(labelers, 2)
        ranks_a.append(a.rank(prompt, candidates))
        ranks_b.append(b.rank(prompt, candidates))
    return agreement(ranks_a, ranks_b)
