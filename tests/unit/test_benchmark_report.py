"""The benchmark report's statistics and pages (`instructrl eval suite`), without models: intervals that stay
inside a metric's range, paired comparisons against a baseline and their verdicts, the metric definitions,
and charts whose labels can be read."""

import itertools
import json
import math

import pytest

from instructrl.evaluation.benchmarks import _results as rs
from instructrl.evaluation.stats import (
    bootstrap_mean_ci,
    paired_comparison,
    paired_proportion_ci,
    sign_flip_p,
)


def table(a: int, b: int, c: int, d: int) -> tuple[list[int], list[int]]:
    """Two models' 0/1 outcomes on the same items: a both right, b only the first, c only the second, d neither."""
    return [1] * (a + b) + [0] * (c + d), [1] * a + [0] * b + [1] * c + [0] * d


# --- intervals inside the range --------------------------------------------------------------------------
def test_a_mean_of_absolute_differences_keeps_its_interval_above_zero_without_clipping():
    """CrowS-Pairs' likelihood_diff, a mean of |log P(more) - log P(less)|, had the interval [-0.83, 13.8]
    (mean ± 1.96·s/√n); clipping at 0 would hide that. The bootstrap's ends are means of the values."""
    values = [0.5, 0.6, 0.7, 12.0]
    m = rs.mean(values)
    lo, hi = m["ci95"]
    assert m["n"] == 4 and m["value"] == pytest.approx(3.45)
    assert 0.5 <= lo < m["value"] < hi <= 12.0


def test_an_entropys_interval_stays_below_its_maximum():
    """Winogender's he/she/they entropy had [-0.09, 1.66], above log2 3 = 1.585."""
    values = [1.5, 1.58, 0.2]
    lo, hi = rs.mean(values, bounds=(0.0, math.log2(3)))["ci95"]
    assert lo >= 0.2 and hi <= 1.58 < math.log2(3)


def test_a_mean_checks_its_bounds_rather_than_clipping_to_them():
    with pytest.raises(AssertionError, match="outside"):
        rs.mean([0.5, 1.2], bounds=(0.0, 1.0))


def test_the_bootstrap_is_seeded_and_exact_for_equal_values():
    assert bootstrap_mean_ci([0.2, 0.9, 0.4, 0.7]) == bootstrap_mean_ci([0.2, 0.9, 0.4, 0.7])
    r = bootstrap_mean_ci([0.1] * 3)
    assert r["ci_low"] <= r["mean"] <= r["ci_high"] and r["ci_high"] - r["ci_low"] < 1e-15
    assert math.isnan(bootstrap_mean_ci([])["mean"])


# --- paired comparisons ----------------------------------------------------------------------------------
def test_paired_proportion_interval_matches_the_published_example():
    """Newcombe's square-and-add interval for paired proportions; Fagerland, Lydersen & Laake, Statistical
    Analysis of Contingency Tables (2017), ch. 8, Cavo et al. 2012: 59, 6 / 16, 80 -> -0.0621
    (-0.1186 to -0.0046)."""
    lo, hi = paired_proportion_ci(*table(59, 6, 16, 80))
    assert lo == pytest.approx(-0.1186, abs=1e-4) and hi == pytest.approx(-0.0046, abs=1e-4)


def test_paired_proportion_intervals_hold_the_estimate_inside_minus_1_and_1():
    for n in range(1, 9):
        for a, b, c in itertools.product(range(n + 1), repeat=3):
            if a + b + c <= n:
                lo, hi = paired_proportion_ci(*table(a, b, c, n - a - b - c))
                assert -1 - 1e-12 <= lo <= (b - c) / n <= hi <= 1 + 1e-12, (a, b, c, n)


@pytest.mark.parametrize(("b", "c"), [(6, 0), (5, 0), (3, 1), (9, 2), (0, 0), (20, 11)])
def test_the_sign_flip_test_on_0_1_outcomes_is_the_exact_mcnemar_test(b, c):
    from scipy.stats import binomtest

    values, baseline = table(4, b, c, 7)
    p = sign_flip_p([v - w for v, w in zip(values, baseline, strict=True)])
    expected = binomtest(b, b + c).pvalue if b + c else 1.0
    assert p == pytest.approx(expected, abs=0.01 if b + c > 16 else 1e-12)


def test_five_items_or_fewer_can_never_show_a_difference():
    assert sign_flip_p([1.0] * 5) == pytest.approx(2 / 32)
    assert sign_flip_p([0.3, 0.2, 0.9, 0.1, 0.5, 0.4]) == pytest.approx(2 / 64)
    r = paired_comparison(*table(0, 3, 0, 0), binary=True)
    assert r["ci_low"] > 0 and r["p_value"] == 0.25  # Newcombe alone would call 3 of 3 a difference
    assert rs.verdict({"ci95": [r["ci_low"], r["ci_high"]], "p": r["p_value"]}, "higher") == (
        "no detectable difference"
    )


def test_entropies_at_their_maximum_are_compared_as_means_not_as_0_1_outcomes():
    """Every he/she entropy exactly 1 bit for both models: no difference, and an interval of width 0 (read as
    0/1 outcomes, Newcombe's interval was [-0.49, 0.49])."""
    r = paired_comparison([1.0] * 4, [1.0] * 4, binary=False)
    assert (r["mean"], r["ci_low"], r["ci_high"], r["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_each_model_is_compared_with_the_baseline_on_the_items_both_answered():
    better = [1.0] * 25 + [0.0] * 5  # 20 more right answers than the baseline
    base = [1.0] * 5 + [0.0] * 25
    items = {
        "models": {
            "sft": {"winogender/acc": base, "crows_pairs/pct_stereotype": base, "crows_pairs/likelihood_diff": [1.0]},
            "ppo": {"winogender/acc": better, "crows_pairs/pct_stereotype": better, "crows_pairs/likelihood_diff": [1.0, 2.0]},
        },
        "shares": ["winogender/acc", "crows_pairs/pct_stereotype"],
    }  # fmt: skip
    out = rs.compare_with_baseline("bias", items, "sft")
    assert list(out) == ["ppo"]
    acc = out["ppo"]["winogender/acc"]
    assert acc["difference"] == pytest.approx(20 / 30) and acc["n"] == 30 and acc["p"] < 1e-4
    assert acc["verdict"] == "better"
    assert out["ppo"]["crows_pairs/pct_stereotype"]["verdict"] == "higher"  # 0.5 is unbiased: not "better"
    assert "crows_pairs/likelihood_diff" not in out["ppo"]  # not the same items: not paired
    sentence = rs.verdict_sentence("ppo", "sft", "winogender/acc", acc)
    assert sentence.startswith("ppo - sft on winogender/acc: +0.667 [") and "n = 30" in sentence
    assert sentence.endswith(": better at 95%")


def test_results_json_keeps_its_layout_and_the_per_item_scores_go_beside_it(tmp_path):
    models = {"a": {"mc1": rs.proportion([1.0, 0.0, 1.0]), "mc2": rs.mean([0.2, 0.5, 0.9])}}
    rs.write_results(tmp_path, "truthfulqa", models, {"data": "x.csv"})
    doc, items = rs.read_results(tmp_path)
    assert all(set(m) == {"value", "n", "ci95"} for m in doc["models"]["a"].values())
    assert items["models"] == {"a": {"mc1": [1.0, 0.0, 1.0], "mc2": [0.2, 0.5, 0.9]}}
    assert items["shares"] == ["mc1"]


# --- what each metric means ------------------------------------------------------------------------------
def test_a_metric_takes_the_most_literal_matching_spec_and_an_unknown_one_a_visible_fallback():
    assert rs.metric_spec("bias", "winogender/acc")[0] == "winogender/acc"
    assert rs.metric_spec("bias", "winogender/acc/gotcha/male")[0] == "winogender/acc/gotcha/*"
    assert rs.metric_spec("tax", "hellaswag/acc_norm")[0] == "*/acc_norm"
    pattern, spec = rs.metric_spec("toxicity", "a_new_metric/none")
    assert pattern == "" and spec is rs.UNKNOWN_METRIC and "add a MetricSpec" in spec.definition


def test_metrics_drawn_on_one_axis_share_a_range_and_a_unit():
    panels: dict[tuple[str, str], set] = {}
    for bench, specs in rs.METRICS.items():
        for pattern, spec in specs.items():
            panels.setdefault((bench, spec.panel or pattern), set()).add((spec.range, spec.unit))
    assert all(len(kinds) == 1 for kinds in panels.values()), panels


# --- charts and the page ---------------------------------------------------------------------------------
def rtp_results(models=("sft", "ppo")) -> dict:
    """`eval toxicity`'s metrics (Gehman et al.'s protocol): 2 metrics x 3 instructions x 2 prompt splits."""
    out = {}
    for j, name in enumerate(models):
        out[name] = {
            f"{metric}/{setting}/{split}": {"value": 0.1 + 0.05 * j, "n": 50, "ci95": [0.05, 0.2 + 0.05 * j]}
            for setting in ("none", "respectful", "biased")
            for split in ("toxic", "nontoxic")
            for metric in ("expected_max_toxicity", "toxicity_probability")
        }
    return out


def test_the_realtoxicityprompts_charts_labels_do_not_overlap():
    """The single chart's 12 x-labels ("expected_max_toxicity\\nrespectful\\nnontoxic", ...) ran into each
    other: one panel per metric, labels the setting and split, the figure as wide as they need."""
    from instructrl.report.html import benchmark_panels, panel_figure

    models = rtp_results(("sft", "ppo", "ppo_ptx"))
    panels = benchmark_panels("toxicity", list(models["sft"]))
    assert [len(m) for _, m in panels.values()] == [6, 6]
    for title, (spec, metrics) in panels.items():
        fig = panel_figure(title, spec, metrics, models)
        fig.canvas.draw()
        ax = fig.axes[0]
        boxes = [t.get_window_extent() for t in ax.get_xticklabels()]
        assert len(boxes) == 6
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), (title, a, b)
        assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] >= 1.0  # the axis is the range, [0, 1]


def test_pct_stereotype_and_entropy_never_share_an_axis():
    from instructrl.report.html import benchmark_panels

    metrics = ["crows_pairs/pct_stereotype", "crows_pairs/pct_stereotype/age", "crows_pairs/entropy_bits/none",
               "winogender/acc", "winogender/entropy_bits/none", "crows_pairs/likelihood_diff"]  # fmt: skip
    panels = benchmark_panels("bias", metrics)
    where = {m: title for title, (_, members) in panels.items() for m in members}
    assert where["crows_pairs/pct_stereotype"] == where["crows_pairs/pct_stereotype/age"]
    assert len({where[m] for m in metrics[1:]}) == 5


def suite_summary() -> dict:
    """What `eval suite` hands the report: two benchmarks' results.json with comparisons, and the suite."""
    likelihood = {"value": 0.6, "n": 6, "ci95": [-0.83, 13.8]}  # as a normal interval once put it
    bias = {
        "benchmark": "bias",
        "models": {
            "sft": {"crows_pairs/likelihood_diff": likelihood, "winogender/acc": {"value": 0.5, "n": 12, "ci95": [0.25, 0.75]}},
            "ppo": {"crows_pairs/likelihood_diff": likelihood, "winogender/acc": {"value": 0.6, "n": 12, "ci95": [0.3, 0.8]}},
        },
        "settings": {"data": ["wino.tsv"], "rows": {"winogender": 12},
                     "winogender_gotcha": {"computed": False, "why_not": "no occupations-stats.tsv"}},
        "comparisons": {"ppo": {"winogender/acc": {"difference": 0.1, "ci95": [-0.2, 0.4], "n": 12, "p": 0.6,
                                                   "verdict": "no detectable difference"}}},
    }  # fmt: skip
    toxicity = {
        "benchmark": "toxicity",
        "models": rtp_results(),
        "settings": {"data": ["rtp.jsonl"], "scorer": "alt-profanity-check 1.9.1"},
        "comparisons": {"ppo": {}},
    }
    truthfulqa = {
        "benchmark": "truthfulqa",
        "models": {"sft": {"a_new_metric": {"value": 2.0, "n": 40, "ci95": [1.0, 3.0]}}, "ppo": {}},
        "settings": {"generation": {"judge": "ROUGE-L on content words"}},
    }
    suite = {
        "models": {"sft": "/runs/sft/final", "ppo": "/runs/ppo/final"},
        "baseline": "sft",
        "versions": {"instructrl": "0.1.0", "torch": "2.8.0", "transformers": "5.0.0"},
        "commands": {"bias": "instructrl eval bias --model sft=/runs/sft/final --data wino.tsv"},
    }
    return {"benchmarks": [truthfulqa, toxicity, bias], "suite": suite}


def test_the_report_says_what_was_measured_how_well_and_what_to_keep_in_mind():
    from instructrl.report.html import render

    page = render(suite_summary(), title="instructrl: public benchmarks")
    # the verdict first, with n and the multiple-comparisons warning
    assert "<b>ppo</b>: better on 0, worse on 0, no detectable difference on 1 of 1 metrics" in page
    assert "+0.100 [-0.200, +0.400], p = 0.6" in page and "would show a difference by chance alone" in page
    # caveats: the scorer, the judge, the missing subset, the small samples
    assert "not Perspective API" in page and "ROUGE-L on content words" in page
    assert "gotcha subset was not measured: no occupations-stats.tsv" in page
    assert "the fewest per benchmark: bias 6)" in page  # toxicity (50) and truthfulqa (40) have enough
    # definitions, ranges, n, and an interval outside its range shown as it is, flagged
    assert "What the metrics measure" in page and "Expected maximum toxicity (Gehman et al. 2020)" in page
    assert "0.600 [-0.830, 13.800] outside [0, ∞]" in page and "&#9888;" in page
    assert "no definition recorded: add a MetricSpec" in page  # the fallback for a metric without a spec
    # settings, versions, commands and checkpoints
    assert "Settings, as results.json records them" in page and "transformers" in page
    assert "/runs/ppo/final" in page and "instructrl eval bias --model sft=/runs/sft/final" in page
    assert page.count("<img") == 2 + 2 + 1  # toxicity: 2 panels; bias: 2; truthfulqa: 1 (the fallback's)
    json.dumps(suite_summary())  # what suite.json holds is plain JSON


@pytest.mark.browser
def test_the_report_reads_in_chromium_without_sideways_scrolling(tmp_path):
    """Every chart loads and fits a 1280-pixel window; so do the tables (a wide one scrolls inside its own
    box). INSTRUCTRL_SCREENSHOTS=DIR keeps a screenshot of the whole page."""
    import os
    from pathlib import Path

    from instructrl.report.html import render

    chromium = os.environ.get("INSTRUCTRL_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        message = f"{chromium} not found: apt-get install chromium (or set INSTRUCTRL_CHROMIUM)"
        if os.environ.get("CI"):  # CI installs it (make setup-dev): a missing one is a failure there
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "report.html"
    page_file.write_text(render(suite_summary(), title="instructrl: public benchmarks"), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_file.as_uri())
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.complete, e.naturalWidth, e.getBoundingClientRect().right])"
        )
        width = page.evaluate("document.documentElement.scrollWidth")
        shots = Path(os.environ.get("INSTRUCTRL_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "suite-report.png"), full_page=True)
        browser.close()
    assert len(images) == 5 and all(done and natural > 0 and right <= 1280 for done, natural, right in images)
    assert width <= 1280
