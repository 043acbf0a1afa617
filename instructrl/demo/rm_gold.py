"""How well a reward model orders the SFT model's own samples as the world's gold standard does, by the kind of
error that separates each pair (a diagnostic: the gold standard never reaches training).

PPO climbs the reward model's ordering of the policy's own samples, so this, not accuracy on the labelers'
validation comparisons, is what decides whether RL can beat SFT. Each gold-ordered pair (two distinct samples
of one prompt whose gold scores differ) is put under one kind of error:

- **knowledge**: the checks that need the knowledge base (a labeler who does not know the facts cannot make
  them) and the `truthful` delivery factor: wrong facts;
- **content**: every other task check: copying, counting or choosing from the prompt, coverage, labels;
- **delivery + form**: the other delivery factors (extra or unfinished sentences, repetition, rudeness) and the
  answer-form checks (`form`, `brief`, `short`).

The kind is the part of the better response's verdict that, given to the worse response alone, closes most of
the gap (the score is a product of the task checks and the delivery factors, so each part is swapped whole).
An empty response has no checks of its own: it is a content error.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

from instructrl.demo.tasks import Verdict
from instructrl.demo.world import World

KINDS = ("knowledge", "content", "delivery_form")
FORM_CHECKS = frozenset({"form", "brief", "short"})
WIDE_GAP = 0.6
"""Pairs whose gold scores differ by at least this much (a labeler orders almost all of them right)."""


def _part(verdict: Verdict, check: str | None = None, factor: str | None = None) -> str:
    if check is not None:
        if check in verdict.facts:
            return "knowledge"
        return "delivery_form" if check in FORM_CHECKS else "content"
    return "knowledge" if factor == "truthful" else "delivery_form"


def pair_kind(better: Verdict, worse: Verdict) -> str:
    """The kind of error (one of KINDS) that makes `worse` worse than `better` (two verdicts of one prompt;
    an empty response, which answers nothing, is a content error)."""
    if worse.checks.keys() != better.checks.keys():
        return "content"
    gains = {}
    for kind in KINDS:
        checks = {
            k: better.checks[k] if _part(worse, check=k) == kind else v for k, v in worse.checks.items()
        }
        factors = {
            f: better.factors[f] if _part(worse, factor=f) == kind else v for f, v in worse.factors.items()
        }
        swapped = Verdict(worse.family, checks, worse.weights, factors, worse.facts)
        gains[kind] = swapped.score - worse.score
    return max(KINDS, key=lambda k: gains[k])


def gold_pairs(
    world: World, prompts: Sequence[str], samples: Sequence[Sequence[str]]
) -> list[dict[str, Any]]:
    """Every gold-ordered pair of distinct samples of each prompt: indices into `samples[i]` (better first),
    the gold gap, the kind of error and the prompt's family."""
    pairs = []
    for i, (prompt, texts) in enumerate(zip(prompts, samples, strict=True)):
        first: dict[str, int] = {}
        for j, t in enumerate(texts):
            first.setdefault(t, j)
        verdicts = {j: world.gold(prompt, t) for t, j in first.items()}
        for a, b in combinations(sorted(verdicts), 2):
            gap = verdicts[a].score - verdicts[b].score
            if abs(gap) < 1e-9:
                continue
            better, worse = (a, b) if gap > 0 else (b, a)
            pairs.append(
                {
                    "prompt": i,
                    "better": better,
                    "worse": worse,
                    "gap": abs(gap),
                    "kind": pair_kind(verdicts[better], verdicts[worse]),
                    "family": verdicts[a].family,
                }
            )
    return pairs


def pair_accuracy(pairs: Sequence[dict[str, Any]], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The share of `pairs` that `scores` (a reward model's, per sample) order as the gold standard does
    (a tie counts half): overall, by kind of error, on wide gaps and by family, each with its count."""

    def share(rows: list[dict[str, Any]]) -> dict[str, Any]:
        right = 0.0
        for p in rows:
            d = scores[p["prompt"]][p["better"]] - scores[p["prompt"]][p["worse"]]
            right += 1.0 if d > 0 else 0.5 if d == 0 else 0.0
        return {"accuracy": right / len(rows) if rows else None, "pairs": len(rows)}

    pairs = list(pairs)
    return {
        "all": share(pairs),
        "by_kind": {k: share([p for p in pairs if p["kind"] == k]) for k in KINDS},
        f"gap_at_least_{WIDE_GAP}": share([p for p in pairs if p["gap"] >= WIDE_GAP]),
        "by_family": {
            f: share([p for p in pairs if p["family"] == f]) for f in sorted({p["family"] for p in pairs})
        },
    }
