import pytest

from instructrl.evaluation.stats import mean_ci, ranking_agreement, win_rate


def test_wilson_interval_hand_values():
    # 60 wins out of 100: Wilson 95% interval is [0.5020, 0.6906] (z = 1.95996)
    r = win_rate([1.0] * 60 + [0.0] * 40)
    assert r["mean"] == 0.6 and r["n"] == 100
    assert r["ci_low"] == pytest.approx(0.5020, abs=1e-4) and r["ci_high"] == pytest.approx(0.6906, abs=1e-4)
    ties = win_rate([0.5] * 10)
    assert ties["mean"] == 0.5 and 0.2 < ties["ci_low"] < 0.5 < ties["ci_high"] < 0.8
    assert win_rate([1.0] * 5)["ci_high"] == 1.0


def test_mean_ci():
    r = mean_ci([4, 5, 6])
    assert r["mean"] == 5 and r["ci_high"] - r["mean"] == pytest.approx(1.96 * 1 / 3**0.5, rel=1e-3)


def test_ranking_agreement_counts_pairs():
    assert ranking_agreement([0, 1, 2, 3], [0, 1, 2, 3]) == (6, 6)
    assert ranking_agreement([0, 1, 2, 3], [3, 2, 1, 0]) == (0, 6)
    assert ranking_agreement([0, 1, 2], [1, 0, 2]) == (2, 3)


@pytest.mark.parametrize("n", [3, 40, 80, 1000])
def test_a_wilson_interval_at_0_or_1_starts_or_ends_exactly_there(n):
    """At 0 of n the lower bound is 0 (it came out 3.5e-18 for n = 80, above the mean: a negative error bar
    crashed the report's plot)."""
    none, every = win_rate([0.0] * n), win_rate([1.0] * n)
    assert none["ci_low"] == 0.0 <= none["mean"] and every["ci_high"] == 1.0 == every["mean"]
    assert (
        none["ci_low"] <= none["mean"] <= none["ci_high"]
        and every["ci_low"] <= every["mean"] <= every["ci_high"]
    )
