"""Statistics for human (or simulated) judgements and benchmark scores. Standard library only, but for the
resampling (bootstrap, sign flips), which uses numpy."""

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


# --- intervals that stay inside a metric's range, and paired comparisons of two models on the same items ---
def bootstrap_mean_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean with a percentile-bootstrap interval (Efron & Tibshirani 1993, ch. 13): its ends are means of
    resampled values, so they lie between the smallest and the largest value and hence inside any range the
    values have (a mean of |x| is never negative, an entropy never exceeds its maximum), where mean ± 1.96·s/√n
    does not. Below n ≈ 20 it is narrower than its nominal 95%. Seeded: the same values, the same interval."""
    import numpy as np

    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, 10_000_000 // n)  # resampled indices held at once: at most 10M (80 MB)
    means = np.concatenate(
        [
            x[rng.integers(0, n, size=(min(chunk, resamples - s), n))].mean(1)
            for s in range(0, resamples, chunk)
        ]
    )  # (resamples,)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    m = sum(values) / n
    # a mean of n equal values can round one ulp past them: keep the ends where exact arithmetic puts them
    lo_x, hi_x = float(x.min()), float(x.max())
    return {
        "mean": m,
        "ci_low": min(max(float(lo), lo_x), m),
        "ci_high": max(min(float(hi), hi_x), m),
        "n": n,
    }


def paired_proportion_ci(
    values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Interval for the difference of two proportions measured on the same items (0/1 outcomes): Newcombe's
    square-and-add interval from the two Wilson intervals and their correlation (Newcombe 1998, Stat. Med.
    17:2635, method 10; as Fagerland, Lydersen & Laake 2014 recommend it). Inside [-1, 1], sensible at small n."""
    n = len(values)
    a = sum(1 for v, b in zip(values, baseline, strict=True) if v and b)  # both 1
    b_ = sum(1 for v, b in zip(values, baseline, strict=True) if v and not b)
    c = sum(1 for v, b in zip(values, baseline, strict=True) if not v and b)
    d = n - a - b_ - c  # both 0
    p1, p2 = (a + b_) / n, (a + c) / n
    w1, w2 = win_rate(values, confidence), win_rate(baseline, confidence)
    l1, u1, l2, u2 = w1["ci_low"], w1["ci_high"], w2["ci_low"], w2["ci_high"]
    margins = (a + b_) * (c + d) * (a + c) * (b_ + d)
    ad_bc = a * d - b_ * c
    # the correlation of the two proportions, with Newcombe's continuity correction of a positive one
    if margins == 0 or 0 <= ad_bc <= n / 2:
        phi = 0.0
    else:
        phi = (ad_bc - n / 2 if ad_bc > 0 else ad_bc) / math.sqrt(margins)
    diff = p1 - p2
    low = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    high = diff + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return low, high


def sign_flip_p(differences: Sequence[float], resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired randomization test of "no difference" (Fisher 1935): were the two
    models alike, each item's difference would be as likely +d as -d. Exact over the 2^m sign patterns of the
    m non-zero differences up to m = 16 (for 0/1 outcomes this is the exact McNemar test), Monte Carlo
    beyond. With m <= 5 it is never below 0.05: a handful of items cannot show a difference at 95%."""
    import numpy as np

    d = np.asarray([x for x in differences if x != 0], dtype=np.float64)
    m = len(d)
    if m == 0:
        return 1.0
    observed = abs(d.sum()) * (1 - 1e-12)  # a pattern as extreme as the observed one counts, despite rounding
    if m <= 16:
        signs = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1) * 2 - 1  # (2^m, m) every pattern
        return float((np.abs(signs @ d) >= observed).mean())
    rng = np.random.default_rng(seed)
    chunk = max(1, 10_000_000 // m)
    extreme = 0
    for s in range(0, resamples, chunk):
        keep = rng.integers(0, 2, size=(min(chunk, resamples - s), m), dtype=np.uint8)  # 1: +d, 0: -d
        extreme += int((np.abs(2 * (keep.astype(np.float64) @ d) - d.sum()) >= observed).sum())
    return (1 + extreme) / (1 + resamples)  # the observed pattern is one of the possible ones


def paired_comparison(
    values: Sequence[float], baseline: Sequence[float], *, binary: bool, confidence: float = 0.95
) -> dict[str, float]:
    """Mean of the per-item differences values[i] - baseline[i] of two models scored on the same items, its
    interval (Newcombe's for 0/1 outcomes, `binary`; else a bootstrap of the differences: both inside the
    range the differences can take) and the sign-flip test's p-value. Pairing cancels item difficulty, so a
    difference shows at sizes where two separate intervals would overlap."""
    assert len(values) == len(baseline), "paired scores need the same items in the same order"
    diffs = [v - b for v, b in zip(values, baseline, strict=True)]
    n = len(diffs)
    if n == 0:
        nan = float("nan")
        return {"mean": nan, "ci_low": nan, "ci_high": nan, "n": 0, "p_value": nan}
    if binary:
        assert all(x in (0, 1) for x in (*values, *baseline)), "binary outcomes are 0 or 1"
        low, high = paired_proportion_ci(values, baseline, confidence)
    else:
        r = bootstrap_mean_ci(diffs, confidence)
        low, high = r["ci_low"], r["ci_high"]
    return {"mean": sum(diffs) / n, "ci_low": low, "ci_high": high, "n": n, "p_value": sign_flip_p(diffs)}
