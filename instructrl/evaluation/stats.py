"""Statistics for human (or simulated) judgements. Standard library only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from statistics import NormalDist


def win_rate(outcomes: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean of outcomes (1 = win, 0.5 = tie, 0 = loss) with a Wilson score interval.

    Wilson's interval stays inside [0, 1] and keeps its coverage at small n, where the normal
    approximation does not (Brown, Cai & DasGupta 2001).
    """
    n = len(outcomes)
    if n == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    p = sum(outcomes) / n
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at p = 0 or 1 the bound equals p exactly, but centre - half rounds to 3e-18 above it: clamp to p
    return {
        "mean": p,
        "ci_low": min(p, max(0.0, centre - half)),
        "ci_high": max(p, min(1.0, centre + half)),
        "n": n,
    }


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean with a normal-approximation interval (for Likert scores)."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * sd / math.sqrt(n)
    return {"mean": m, "ci_low": m - half, "ci_high": m + half, "n": n}


def ranking_agreement(a: Sequence[int], b: Sequence[int]) -> tuple[int, int]:
    """(pairs ordered the same, pairs) for two rankings of the same K responses (indices, best first)."""
    pos_a = {r: i for i, r in enumerate(a)}
    pos_b = {r: i for i, r in enumerate(b)}
    shared = sorted(set(pos_a) & set(pos_b))
    agree = total = 0
    for x, y in combinations(shared, 2):
        total += 1
        agree += (pos_a[x] < pos_a[y]) == (pos_b[x] < pos_b[y])
    return agree, total
