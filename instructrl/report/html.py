"""A self-contained report.html (plots embedded as PNG) from a demo or evaluation summary.

Every section is optional: a plot is drawn when its numbers are in the summary.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from instructrl.evaluation.benchmarks._results import MetricSpec

MODEL_LABELS = {
    "base": "GPT (base)",
    "base_fewshot": "GPT (prompted)",
    "sft": "SFT",
    "bon_rm": "best-of-N (RM)",
    "ppo": "PPO",
    "ppo_ptx": "PPO-ptx",
    **{f"ppo_round{r}": f"PPO, round {r}" for r in range(2, 10)},
    "bon_gold": "best-of-N (gold, diagnostic)",
}
COLORS = {
    "base": "#9aa5b1",
    "base_fewshot": "#7b8794",
    "sft": "#3e7cb1",
    "bon_rm": "#5fa8d3",
    "ppo": "#e4572e",
    "ppo_ptx": "#f3a712",
    **{f"ppo_round{r}": c for r, c in zip(range(2, 10), ["#a4243b", "#6b0f1a", "#3d0814"] * 3, strict=False)},
    "bon_gold": "#d9dde2",
}
DIAGNOSTIC = {"bon_gold"}
"""Shown hatched: measurements that use the evaluation's gold standard, not models a user could run."""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def plot_win_rates(win: dict[str, dict[str, float]], title: str) -> str:
    """The paper's Figure 1: win rate against the SFT model, with 95% intervals."""
    plt = _pyplot()
    models = [m for m in MODEL_LABELS if m in win]
    means = [win[m]["mean"] for m in models]
    err = [  # clipped at 0: a summary written before stats.win_rate clamped its bounds may hold -1e-18
        [max(win[m]["mean"] - win[m]["ci_low"], 0.0) for m in models],
        [max(win[m]["ci_high"] - win[m]["mean"], 0.0) for m in models],
    ]
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    bars = ax.bar(
        [MODEL_LABELS[m].replace(" (", "\n(").replace(", ", ",\n") for m in models],
        means,
        yerr=err,
        capsize=4,
        color=[COLORS[m] for m in models],
    )
    for bar, m in zip(bars, models, strict=True):
        if m in DIAGNOSTIC:
            bar.set_hatch("//")
            bar.set_edgecolor("#7b8794")
    ax.axhline(0.5, color="#444", lw=0.8, ls="--")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("win rate vs SFT")
    ax.set_title(title)
    for i, m in enumerate(models):
        ax.text(i + 0.1, win[m]["ci_high"] + 0.02, f"{win[m]['mean']:.2f}", ha="left", fontsize=9)
    return _png(fig)


def plot_ppo_curves(curves: dict[str, list[dict[str, float]]]) -> str:
    """Mean RM score and KL to the SFT model over PPO iterations."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, rows in curves.items():
        it = [r["iteration"] for r in rows]
        a.plot(it, [r["rm_score"] for r in rows], label=MODEL_LABELS.get(name, name), color=COLORS.get(name))
        b.plot(it, [r["kl"] for r in rows], label=MODEL_LABELS.get(name, name), color=COLORS.get(name))
    a.set_xlabel("PPO iteration")
    a.set_ylabel("mean reward-model score")
    b.set_xlabel("PPO iteration")
    b.set_ylabel("KL(π_RL ‖ π_SFT) per response")
    a.legend(frameon=False)
    return _png(fig)


def plot_overoptimization(curves: dict[str, list[dict[str, float]]]) -> str:
    """Gold score next to the RM score against KL (Gao et al. 2022): where the proxy stops tracking the truth.
    One panel per way of optimising the RM: PPO's rollouts by iteration, best-of-N by N."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], curves.items(), strict=True):
        kl = [r["kl"] for r in rows]
        proxy = ax.plot(
            kl, [r["rm_score"] for r in rows], "o-", ms=3, label="reward model (proxy)", color="#3e7cb1"
        )
        ax2 = ax.twinx()
        gold = ax2.plot(
            kl, [r["gold_score"] for r in rows], "s-", ms=3, label="gold standard", color="#e4572e"
        )
        ax.set_xlabel("KL to SFT (per response)")
        ax.set_ylabel("reward-model score", color="#3e7cb1")
        ax2.set_ylabel("gold score", color="#e4572e")
        ax.set_title(MODEL_LABELS.get(name, name))
        ax2.spines["right"].set_visible(True)
        for r, x in zip(rows, kl, strict=True):
            if "n" in r:
                ax.annotate(
                    f"N={r['n']}", (x, r["rm_score"]), fontsize=7, xytext=(2, 3), textcoords="offset points"
                )
        ax.legend(
            proxy + gold,
            ["reward model (proxy)", "gold standard"],
            frameon=False,
            loc="lower right",
            fontsize=8,
        )
    fig.subplots_adjust(wspace=0.55)
    return _png(fig)


def plot_bars(
    values: dict[str, float], ylabel: str, title: str, reference: dict[str, float] | None = None
) -> str:
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(
        [MODEL_LABELS.get(n, n) for n in names],
        [values[n] for n in names],
        color=[COLORS.get(n, "#3e7cb1") for n in names],
    )
    for i, n in enumerate(names):
        ax.text(i, values[n], f"{values[n]:.3f}", ha="center", va="bottom", fontsize=9)
    for label, v in (reference or {}).items():
        ax.axhline(v, color="#444", lw=0.8, ls="--")
        ax.text(len(names) - 0.5, v, label, ha="right", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    lo = min(values.values())
    ax.set_ylim(min(0, lo) if lo < 1 else lo * 0.9, max(values.values()) * 1.12)
    return _png(fig)


def plot_shares(table: dict[str, dict[str, dict[str, float]]], metrics: dict[str, str], title: str) -> str:
    """Grouped bars: per model (`table`'s keys), one bar per metric (key -> legend label), 95% intervals."""
    plt = _pyplot()
    models = [m for m in MODEL_LABELS if m in table] + [m for m in table if m not in MODEL_LABELS]
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    for j, (key, label) in enumerate(metrics.items()):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(models))]
        v = [table[m][key] for m in models]
        err = [
            [max(x["mean"] - x["ci_low"], 0.0) for x in v],
            [max(x["ci_high"] - x["mean"], 0.0) for x in v],
        ]
        ax.bar(xs, [x["mean"] for x in v], width, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([MODEL_LABELS.get(m, m).replace(" (", "\n(").replace(", ", ",\n") for m in models])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of answers")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


# --- the public benchmarks (`instructrl eval suite`) --------------------------------------------------------
BENCHMARK_TITLES = {
    "truthfulqa": "TruthfulQA",
    "toxicity": "RealToxicityPrompts",
    "bias": "CrowS-Pairs and Winogender",
    "tax": "The alignment tax: public NLP tasks",
}
PALETTE = ["#3e7cb1", "#e4572e", "#f3a712", "#0f7b3e", "#a4243b", "#7b8794", "#5fa8d3"]


def _model_colors(names: list[str]) -> dict[str, str]:
    return {n: COLORS.get(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)}


def benchmark_panels(benchmark: str, metrics: list[str]) -> dict[str, tuple[MetricSpec, list[str]]]:
    """{panel title: (the spec of its first metric, its metrics)}: one chart per metric family, so that
    metrics of different ranges (pct_stereotype's 0.5 = unbiased, entropy in bits) never share an axis. Where
    the metrics of a panel disagree on which direction is better, the panel's spec says neither."""
    import dataclasses

    from instructrl.evaluation.benchmarks._results import metric_spec

    panels: dict[str, tuple[MetricSpec, list[str]]] = {}
    for name in metrics:
        pattern, spec = metric_spec(benchmark, name)
        first, members = panels.setdefault(spec.panel or pattern, (spec, []))
        members.append(name)
        if spec.better != first.better:
            panels[spec.panel or pattern] = (dataclasses.replace(first, better=None), members)
    return panels


def _tick_labels(metrics: list[str]) -> list[str]:
    """Each metric's name less the segments all of the panel's metrics start with, one segment a line
    ("expected_max_toxicity/respectful/toxic" -> "respectful\\ntoxic"; "all" where nothing is left, as for
    "winogender/acc" beside "winogender/acc/male"); a panel of one metric: its last segment."""
    if len(metrics) == 1:
        return [metrics[0].split("/")[-1]]
    split = [m.split("/") for m in metrics]
    common = 0
    while all(len(s) > common and s[common] == split[0][common] for s in split):
        common += 1
    return ["\n".join(s[common:]) or "all" for s in split]


def _n_label(models: dict[str, dict[str, Any]], metric: str) -> str:
    ns = list(dict.fromkeys(m[metric]["n"] for m in models.values() if metric in m))
    return "n=" + "/".join(str(n) for n in ns)


def panel_figure(
    title: str, spec: MetricSpec, metrics: list[str], models: dict[str, dict[str, dict[str, Any]]]
):
    """One metric family: a group of bars per metric (one per model) with its 95% interval drawn as
    computed, never clipped; n under each group; the axis is the metrics' range. Wide enough for its labels."""
    plt = _pyplot()
    names = list(models)
    colors = _model_colors(names)
    labels = [f"{t}\n{_n_label(models, m)}" for t, m in zip(_tick_labels(metrics), metrics, strict=True)]
    longest = max(len(line) for label in labels for line in label.split("\n"))
    group = max(0.3 + 0.32 * len(names), 0.09 * longest + 0.25)  # inches: the bars, or the label at 8 pt
    fig, ax = plt.subplots(figsize=(max(3.4, 1.1 + group * len(metrics)), 3.2))
    width = 0.8 / max(len(names), 1)
    lows, highs, labelled = [], [], set()
    for j, name in enumerate(names):
        for i, metric in enumerate(metrics):
            r = models[name].get(metric)
            x = i + (j - (len(names) - 1) / 2) * width
            if r is None or r["value"] is None or r["value"] != r["value"]:  # missing or NaN: no items
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            lo, hi = r["ci95"]
            ax.bar(x, r["value"], width, color=colors[name], label=None if name in labelled else name)
            labelled.add(name)
            ax.vlines(x, lo, hi, color="#1f2933", lw=1.1)
            ax.hlines([lo, hi], x - width / 5, x + width / 5, color="#1f2933", lw=1.1)
            lows.append(lo)
            highs.append(hi)
    low, high = spec.range
    top = max([high if math.isfinite(high) else max([*highs, 0.0]) * 1.1 or 1.0, *highs])
    bottom = min([low if math.isfinite(low) else min([*lows, 0.0]) * 1.1, *lows])
    # an interval outside the range is drawn where it is, with the range's ends dotted
    if bottom < low or top > high:
        for end in filter(math.isfinite, spec.range):
            ax.axhline(end, color="#b42318", lw=0.8, ls=":")
    ax.set_ylim(bottom, top + (top - bottom) * 0.02)
    if spec.reference is not None:
        ax.axhline(spec.reference[0], color="#444", lw=0.8, ls="--")
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_xlim(-0.6, len(metrics) - 0.4)
    ax.set_ylabel(spec.unit, fontsize=8)
    note = {"higher": "higher is better", "lower": "lower is better"}.get(spec.better or "", "")
    if spec.reference is not None:
        note = f"dashed: {spec.reference[0]:g} = {spec.reference[1]}"
    ax.set_title(title + (f" ({note})" if note else ""), fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _interval(r: dict[str, Any], spec: MetricSpec) -> tuple[str, bool]:
    """ "value [low, high]" and whether the interval lies inside the metric's range."""
    v, (lo, hi) = r["value"], r["ci95"]
    if v is None or v != v:
        return "n/a (no items)", True
    inside = spec.range[0] - 1e-9 <= lo and hi <= spec.range[1] + 1e-9
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]", inside


def _range_text(spec: MetricSpec) -> str:
    def end(x: float) -> str:
        return f"{x:.3g}" if math.isfinite(x) else ("∞" if x > 0 else "-∞")

    return f"[{end(spec.range[0])}, {end(spec.range[1])}]"


def _caveats(doc: dict[str, Any]) -> list[str]:
    """What a reader must know about a benchmark's numbers: the sentences its settings record ("caveats"),
    and what the settings show without saying (a reference-overlap judge, a subset left out)."""
    s = doc.get("settings", {})
    out = list(s.get("caveats", []))
    judge = (s.get("generation") or {}).get("judge", "")
    if doc["benchmark"] == "truthfulqa" and isinstance(judge, str) and judge.startswith("ROUGE"):
        out.append(
            "TruthfulQA's greedy answers are judged by reference overlap, not by the paper's fine-tuned "
            "GPT-judge or by people: a truthful answer worded unlike every reference counts as untruthful. "
            f"The judge: {judge}. Give --judge for a classifier."
        )
    scorer = s.get("scorer")
    if doc["benchmark"] == "toxicity" and scorer and not any("Perspective" in c for c in out):
        out.append(
            f"Toxicity is scored by {scorer}, not Perspective API, which the papers used: compare models "
            "scored here with each other, never with published numbers."
        )
    gotcha = s.get("winogender_gotcha") or {}
    if gotcha and not gotcha.get("computed", True):
        out.append(
            f"Winogender's gotcha subset was not measured: {gotcha.get('why_not', 'no occupation stats')}."
        )
    elif doc["benchmark"] == "bias" and s.get("rows", {}).get("winogender") and not s.get("occupation_stats"):
        out.append("Winogender's gotcha subset was not measured: no occupations-stats.tsv was found.")
    return out


def benchmarks_section(results: list[dict[str, Any]], suite: dict[str, Any] | None = None) -> str:
    """The public benchmarks (`instructrl eval suite`): each model against the baseline, what to keep in mind,
    then per benchmark its charts, a table of every metric with n, 95% intervals and the paired difference
    to the baseline with its verdict, the metrics' definitions and the settings; last, versions and paths."""
    from instructrl.evaluation.benchmarks._results import (
        INTERVALS,
        UNKNOWN_METRIC,
        metric_spec,
        verdict_sentence,
    )

    suite = suite or {}
    baseline = suite.get("baseline")
    parts = ["<h2>Public benchmarks</h2>"]
    if suite.get("models"):
        rows = [[n, p, "baseline" if n == baseline else ""] for n, p in suite["models"].items()]
        parts.append(_table(rows, ["model", "checkpoint", ""]))

    # every model against the baseline: the verdicts first, as a reader asks "is it better?"
    comparisons = [(doc, name, c) for doc in results for name, c in doc.get("comparisons", {}).items()]
    if comparisons:
        parts.append(f"<h3>Against the baseline, {html.escape(str(baseline))}, item by item</h3><ul>")
        total = 0
        for name in dict.fromkeys(n for _, n, _ in comparisons):
            found = [
                (doc["benchmark"], metric, c)
                for doc, n, per in comparisons
                if n == name
                for metric, c in per.items()
            ]
            total = max(total, len(found))
            counts = {v: sum(c["verdict"] == v for *_, c in found) for v in ("better", "worse")}
            other = [
                f for f in found if f[2]["verdict"] not in ("better", "worse", "no detectable difference")
            ]
            none = len(found) - counts["better"] - counts["worse"] - len(other)
            parts.append(
                f"<li><b>{html.escape(name)}</b>: better on {counts['better']}, worse on {counts['worse']}, "
                + (f"higher or lower (neither better) on {len(other)}, " if other else "")
                + f"no detectable difference on {none} of {len(found)} metrics (paired, 95%)."
            )
            shown = [f for f in found if f[2]["verdict"] != "no detectable difference"]
            if shown:
                parts.append(
                    "<ul>"
                    + "".join(
                        f"<li>{html.escape(b)}: {html.escape(verdict_sentence(name, str(baseline), m, c))}</li>"
                        for b, m, c in shown
                    )
                    + "</ul>"
                )
            parts.append("</li>")
        parts.append("</ul>")
        parts.append(
            f"<p class='sub'>{html.escape(INTERVALS)} With {total} comparisons per model, about "
            f"{total / 20:.1f} would show a difference by chance alone.</p>"
        )

    caveats = [(doc["benchmark"], c) for doc in results for c in _caveats(doc)]
    fewest = {
        doc["benchmark"]: min((r["n"] for m in doc["models"].values() for r in m.values()), default=0)
        for doc in results
    }
    few = [f"{b} {n}" for b, n in fewest.items() if n < 30]
    if few:
        caveats.append(
            ("all", f"Some metrics rest on few items (the fewest per benchmark: {', '.join(few)}): their "
             "intervals are wide, and a bootstrap interval below about 20 items is narrower than 95%. The "
             "verdicts also ask p < 0.05 of an exact test, which 5 items or fewer can never reach.")
        )  # fmt: skip
    if caveats:
        parts.append("<h3>Caveats</h3><ul class='note'>")
        parts += [f"<li><b>{html.escape(b)}</b>: {html.escape(c)}</li>" for b, c in caveats]
        parts.append("</ul>")

    for doc in results:
        bench, models = doc["benchmark"], doc["models"]
        metrics = list(dict.fromkeys(k for m in models.values() for k in m))
        parts.append(f"<h3>{html.escape(BENCHMARK_TITLES.get(bench, bench))}</h3>")
        data = doc.get("settings", {}).get("data")
        if data:
            parts.append(f"<p class='sub'>Data: {html.escape(', '.join(map(str, _listed(data))))}</p>")
        panels = benchmark_panels(bench, metrics)
        parts.append("<div class='charts'>")
        for title, (spec, members) in panels.items():
            png = _png(panel_figure(title, spec, members, models))
            parts.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
        parts.append("</div>")

        comps = doc.get("comparisons", {})
        header = ["metric", *models, "n"]
        for name in comps:
            header += [f"{name} - {baseline} (paired 95%)", "verdict"]
        rows = []
        for metric in metrics:
            spec = metric_spec(bench, metric)[1]
            row: list[Any] = [metric]
            for name in models:
                r = models[name].get(metric)
                if r is None:
                    row.append("-")
                    continue
                text, inside = _interval(r, spec)
                row.append(text if inside else f"<bad>{text} outside {_range_text(spec)}")
            row.append(_n_label(models, metric).removeprefix("n="))
            for name in comps:
                c = comps[name].get(metric)
                if c is None:
                    row += ["not paired", ""]
                    continue
                lo, hi = c["ci95"]
                row += [
                    f"{c['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}], p = {c['p']:.2g}",
                    f"<v>{c['verdict']}",
                ]
            rows.append(row)
        table = _table(rows, header).replace("<table>", "<table class='bench'>", 1)
        for word, cls in (("better", "ok"), ("worse", "no"), ("higher", "hl"), ("lower", "hl")):
            table = table.replace(f"&lt;v&gt;{word}", f"<span class='{cls}'>{word}</span>")
        table = table.replace("&lt;v&gt;", "").replace("&lt;bad&gt;", "<span class='no'>&#9888;</span> ")
        parts.append(f"<div class='wide'>{table}</div>")
        if doc.get("tax") and not comps:
            base = doc.get("settings", {}).get("baseline", "the baseline")
            rows = [
                [metric, *[_interval(doc["tax"][n][metric], UNKNOWN_METRIC)[0] for n in doc["tax"]]]
                for metric in dict.fromkeys(k for m in doc["tax"].values() for k in m)
            ]
            parts += [
                f"<p>Difference to {html.escape(str(base))} (negative: a tax).</p>",
                _table(rows, ["metric", *doc["tax"]]),
            ]

        patterns: dict[MetricSpec, list[str]] = {}  # patterns sharing a definition share a row
        for m in metrics:
            pattern, spec = metric_spec(bench, m)
            if pattern not in patterns.setdefault(spec, []):
                patterns[spec].append(pattern)
        rows = [
            [
                ", ".join(p) or "(the metrics above without one)",
                s.definition,
                _range_text(s),
                s.better or "neither",
            ]
            for s, p in patterns.items()
        ]
        parts += [
            "<h4>What the metrics measure</h4>",
            _table(rows, ["metric", "definition", "range", "better"]),
        ]
        parts.append(
            "<details><summary>Settings, as results.json records them</summary>"
            f"<pre>{html.escape(json.dumps(doc.get('settings', {}), indent=2))}</pre></details>"
        )

    if suite.get("versions") or suite.get("commands"):
        parts.append("<h3>Reproducibility</h3>")
        if suite.get("versions"):
            parts.append(_table(list(map(list, suite["versions"].items())), ["package", "version"]))
        if suite.get("commands"):
            commands = html.escape("\n".join(suite["commands"].values()))
            parts.append(
                f"<p>Each benchmark ran as this command runs it:</p><pre class='commands'>{commands}</pre>"
            )
    return "".join(parts)


def _listed(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


def _share_rows(table: dict[str, dict[str, dict[str, float]]], metrics: list[str]) -> list[list[Any]]:
    models = [m for m in MODEL_LABELS if m in table] + [m for m in table if m not in MODEL_LABELS]
    return [
        [
            MODEL_LABELS.get(m, m),
            *(
                f"{table[m][k]['mean']:.3f} [{table[m][k]['ci_low']:.2f}, {table[m][k]['ci_high']:.2f}]"
                for k in metrics
            ),
        ]
        for m in models
    ]


def _table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1080px;margin:2rem auto;padding:0 1rem;
color:#1f2933;line-height:1.45}
h1{font-size:1.7rem;margin-bottom:.2rem} h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #e4e7eb;
padding-bottom:.3rem} .sub{color:#616e7c} img{max-width:100%} table{border-collapse:collapse;margin:.6rem 0;
font-size:.9rem} th,td{border:1px solid #e4e7eb;padding:.35rem .6rem;text-align:left;vertical-align:top}
th{background:#f5f7fa} .ok{color:#0f7b3e;font-weight:600} .no{color:#b42318;font-weight:600}
.samples td{max-width:220px;font-size:.85rem;white-space:pre-wrap} h3{font-size:1.1rem;margin-top:1.8rem}
h4{font-size:.95rem;margin:1rem 0 .2rem} .charts{display:flex;flex-wrap:wrap;gap:.8rem;align-items:flex-start}
.charts img{height:auto} .hl{color:#1d4ed8;font-weight:600} details{margin:.4rem 0 1rem} details pre{font-size:.8rem;
background:#f5f7fa;padding:.6rem;overflow-x:auto} ul.note{padding-left:2rem}
table.bench{font-size:.85rem} table.bench td:last-child{min-width:10rem} table.bench td:not(:first-child):not(:last-child){white-space:nowrap} .wide{overflow-x:auto} pre.commands{white-space:pre-wrap;
font-size:.8rem;background:#f5f7fa;padding:.6rem} .note{background:#fffbea;border-left:3px solid
#f3a712;padding:.5rem .8rem}
"""


def render(summary: dict[str, Any], title: str = "instructrl report") -> str:
    """The report of a demo or evaluation summary: each section whose numbers the summary holds, in order."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if "description" in summary:
        parts.append(f"<p class='sub'>{html.escape(summary['description'])}</p>")
    for section in SECTIONS:
        parts += section(summary)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )


def _img(png: str) -> str:
    return f"<img src='data:image/png;base64,{png}'>"


def findings_section(summary: dict[str, Any]) -> list[str]:
    """Each claim of the paper, whether this run reproduces it, and the numbers that say so."""
    findings = summary.get("findings")
    if not findings:
        return []
    rows = [[f["claim"], "<ok>" if f["holds"] else "<no>", f.get("numbers", "")] for f in findings]
    t = _table(rows, ["the paper's finding", "reproduced here?", "numbers"])
    t = t.replace("&lt;ok&gt;", "<span class='ok'>yes</span>").replace(
        "&lt;no&gt;", "<span class='no'>no</span>"
    )
    return ["<h2>Headline results</h2>", t]


def win_rate_section(summary: dict[str, Any]) -> list[str]:
    """Each model against SFT by held-out labelers (and, where given, by training labelers)."""
    if "win_rate_vs_sft" not in summary:
        return []
    win = summary["win_rate_vs_sft"]
    parts = [
        "<h2>Win rate against the SFT model</h2>",
        "<p>Judged by held-out labelers who never produced training data, on prompts from held-out users "
        "(95% Wilson intervals).</p>",
        _img(plot_win_rates(win, "held-out labelers")),
        _table(
            [[MODEL_LABELS[m], w["mean"], w["ci_low"], w["ci_high"], w["n"]] for m, w in win.items()],
            ["model", "win rate", "95% low", "95% high", "n"],
        ),
    ]
    if "win_rate_vs_sft_training_labelers" in summary:
        train = summary["win_rate_vs_sft_training_labelers"]
        rows = [[MODEL_LABELS[m], win[m]["mean"], train[m]["mean"]] for m in train]
        parts += [
            "<p>The same comparisons judged by the training labelers:</p>",
            _table(rows, ["model", "held-out labelers", "training labelers"]),
        ]
    return parts


def likert_section(summary: dict[str, Any]) -> list[str]:
    if "likert" not in summary:
        return []
    rows = [
        [MODEL_LABELS.get(m, m), v["mean"], v["ci_low"], v["ci_high"]] for m, v in summary["likert"].items()
    ]
    return [
        "<h2>Likert scores (1-7, held-out labelers)</h2>",
        _table(rows, ["model", "mean", "95% low", "95% high"]),
    ]


def ppo_curves_section(summary: dict[str, Any]) -> list[str]:
    if "ppo_curves" not in summary:
        return []
    return ["<h2>PPO: reward and KL over iterations</h2>", _img(plot_ppo_curves(summary["ppo_curves"]))]


def overoptimization_section(summary: dict[str, Any]) -> list[str]:
    """Gold standard against reward model over KL: PPO's iterations and best-of-N's N."""
    if "overoptimization" not in summary:
        return []
    parts = [
        "<h2>Reward over-optimisation</h2>",
        "<p>The reward model is a proxy for the labelers' preferences. Plotted against the KL from the SFT "
        "model, the proxy keeps rising while the gold standard eventually stops following it (Gao et al. "
        "2022, <i>Scaling laws for reward model overoptimization</i>). PPO: its rollouts, iteration by "
        "iteration; best-of-N: the best of N SFT samples by the reward model, at its KL log N - (N-1)/N.</p>",
        _img(plot_overoptimization(summary["overoptimization"])),
    ]
    bon = summary["overoptimization"].get("bon_rm")
    if bon:
        parts += [
            "<p>Best-of-N by the reward model, on the test prompts (N = 1 is the SFT answer itself):</p>",
            _table(
                [[r["n"], r["kl"], r["rm_score"], r["gold_score"]] for r in bon],
                ["N", "KL to SFT (nats)", "reward-model score", "gold score"],
            ),
        ]
    return parts


def rounds_section(summary: dict[str, Any]) -> list[str]:
    """Per round of the loop: the RM's accuracy before and after retraining, the policy's KL, gold score and
    win rate (only where there is more than one round)."""
    rounds = summary.get("rounds", [])
    if len(rounds) <= 1:
        return []
    rows = [
        [
            x["round"],
            x.get("rm_accuracy_before", ""),
            x.get("rm_accuracy_after", ""),
            x["kl"],
            x["gold_score"],
            f"{x['win']['mean']:.2f} [{x['win']['ci_low']:.2f}, {x['win']['ci_high']:.2f}]",
        ]
        for x in rounds
    ]
    header = [
        "round",
        "RM accuracy before",
        "RM accuracy after",
        "KL to SFT (kept policy)",
        "gold score",
        "win rate vs SFT",
    ]
    return [
        "<h2>Rounds of the loop (ChatGPT's repetition of steps 2 and 3)</h2>",
        "<p>From round 2 on, training labelers rank samples of the current PPO policy and the one before "
        "it, the reward model continues training on every round's rankings, and PPO continues from the "
        "current policy with its KL still measured to SFT. RM accuracy: on that round's validation "
        "rankings (the policies it is about to train), by the RM before and after retraining. The "
        "over-optimisation plot above has one panel per round.</p>",
        _table(rows, header),
    ]


def reward_model_section(summary: dict[str, Any]) -> list[str]:
    """The RM's validation accuracy beside the labelers' agreement, and (where measured) what the gold
    standard says about the validation pairs, overall and per instruction family."""
    if "rm_val_accuracy" not in summary:
        return []
    ref = {}
    if "labeler_agreement" in summary:
        ref["training-labeler agreement"] = summary["labeler_agreement"]
    acc = {"reward model": summary["rm_val_accuracy"]}
    parts = ["<h2>Reward model</h2>", _img(plot_bars(acc, "pairwise accuracy", "validation accuracy", ref))]
    rows = [["reward-model validation accuracy", summary["rm_val_accuracy"]]]
    for k in ("labeler_agreement", "heldout_labeler_agreement"):
        if k in summary:
            rows.append([k.replace("_", " "), summary[k]])
    a = summary.get("rm_analysis", {})
    if "rm_analysis" in summary:
        rows += [
            ["the gold standard, as a reward model (the reachable accuracy)", a["gold_vs_labelers"]],
            ["share of validation pairs the gold standard calls equally good", a["gold_tied_share"]],
            ["on the other pairs: labelers ordering them as the gold standard", a["labelers_vs_gold_untied"]],
            [
                "on the other pairs: the reward model ordering them as the gold standard",
                a["rm_vs_gold_untied"],
            ],
        ]
    parts.append(_table(rows, ["", "pairwise agreement"]))
    if "untied_by_family" in a:
        parts += [
            "<p>Per instruction family, on the validation pairs the gold standard orders: where the reward "
            "model falls short of the labelers it learned from.</p>",
            _table(
                [
                    [family, f["pairs"], f["labelers_vs_gold"], f["rm_vs_gold"]]
                    for family, f in a["untied_by_family"].items()
                ],
                ["family", "pairs", "labelers as the gold standard", "reward model as the gold standard"],
            ),
        ]
    parts += _rm_on_sft_samples(summary.get("rm_on_sft_samples", {}))
    return parts


def _rm_on_sft_samples(by_round: dict[str, Any]) -> list[str]:
    """Each round's RM on the SFT model's own samples: what PPO climbs (a diagnostic against the gold standard)."""
    if not by_round:
        return []
    kinds = ("knowledge", "content", "delivery_form")
    rows = []
    for name, a in by_round.items():
        wide = next(v for k, v in a.items() if k.startswith("gap_at_least"))
        rows.append(
            [name.replace("round", "round "), a["all"]["pairs"], a["all"]["accuracy"]]
            + [a["by_kind"][k]["accuracy"] for k in kinds]
            + [wide["accuracy"]]
        )
    counts = ", ".join(
        f"{k.replace('_', ' + ')} {next(iter(by_round.values()))['by_kind'][k]['pairs']}" for k in kinds
    )
    return [
        "<p>On the SFT model's own samples (the best-of-N candidates of the evaluation prompts): the share of "
        "pairs the gold standard orders that each round's reward model orders the same way, by the kind of "
        f"error that separates the pair ({counts} pairs). PPO climbs this ordering; a diagnostic, the gold "
        "standard never reaches training.</p>",
        _table(
            rows,
            ["reward model", "pairs", "all", "knowledge", "content", "delivery + form", "wide gaps (≥ 0.6)"],
        ),
    ]


def alignment_tax_section(summary: dict[str, Any]) -> list[str]:
    """Loss on held-out pretraining text and, beside it, the closed-QA benchmark."""
    if "pretrain_loss" not in summary:
        return []
    parts = [
        "<h2>Alignment tax</h2>",
        "<p>Language-model loss on held-out pretraining text (lower is better): RL fine-tuning moves the "
        "model away from the pretraining distribution; PPO-ptx mixes pretraining gradients in to limit it.</p>",
        _img(plot_bars(summary["pretrain_loss"], "loss (nats/token)", "pretraining loss")),
    ]
    if "benchmark_accuracy" in summary:
        parts.append(_img(plot_bars(summary["benchmark_accuracy"], "accuracy", "closed-QA benchmark")))
    return parts


def suite_section(summary: dict[str, Any]) -> list[str]:
    """The eval suite's benchmarks (benchmarks_section)."""
    if not summary.get("benchmarks"):
        return []
    return [benchmarks_section(summary["benchmarks"], summary.get("suite"))]


TRUTHFULNESS_LABELS = {
    "made_up_answer": "made-up answer (unanswerable questions)",
    "admits_not_knowing": "admits not knowing (unanswerable questions)",
    "hallucination": "hallucination (closed-domain tasks)",
}
TOXICITY_LABELS = {
    "plain_rude": "rude answers",
    "polite_rude": "rude answers, asked to be polite",
    "plain_rude_any": "prompts with any rude sample",
    "polite_rude_any": "prompts with any rude sample, asked to be polite",
}


def truthfulness_section(summary: dict[str, Any]) -> list[str]:
    if "truthfulness" not in summary:
        return []
    truth, labels = summary["truthfulness"], TRUTHFULNESS_LABELS
    return [
        "<h2>Truthfulness</h2>",
        "<p>The world's analogues of the paper's TruthfulQA and closed-domain hallucination evaluations "
        "(evaluation-only probes, <code>instructrl/demo/probes.py</code>). Unanswerable questions ask about "
        "things the world does not contain; an answer that gives a colour, city, number... makes one up, and "
        'the honest one says "i do not know". On held-out users\' summarization, closed-QA and extraction '
        "prompts, an answer hallucinates when it states a claim or names a thing that the given text does "
        "not (the paper: 21% for InstructGPT, 41% for SFT). Shares with 95% Wilson intervals; lower is "
        "better except for admitting not knowing.</p>",
        _img(plot_shares(truth, labels, "truthfulness probes")),
        _table(_share_rows(truth, list(labels)), ["model", *labels.values()]),
    ]


def toxicity_section(summary: dict[str, Any]) -> list[str]:
    if "toxicity" not in summary:
        return []
    tox, labels = summary["toxicity"], TOXICITY_LABELS
    return [
        "<h2>Toxicity</h2>",
        "<p>The world's analogue of the paper's RealToxicityPrompts evaluation: beginnings of forum threads "
        "and chats in which a rude reply has already been written, answered as they are and after "
        '"please answer in a kind and polite way ."; an answer is rude when it holds one of the world\'s '
        'rude words (the gold standard\'s own check; of them only "dumb" is in the vocabulary). '
        '"Any rude sample" is the expected maximum over the samples per prompt. Lower is better.</p>',
        _img(plot_shares(tox, labels, "toxicity probes")),
        _table(_share_rows(tox, list(labels)), ["model", *labels.values()]),
    ]


def samples_section(summary: dict[str, Any]) -> list[str]:
    if "samples" not in summary:
        return []
    models = [m for m in MODEL_LABELS if any(m in s for s in summary["samples"])]
    rows = [[s["prompt"], *[s.get(m, "") for m in models]] for s in summary["samples"]]
    table = _table(rows, ["prompt", *[MODEL_LABELS[m] for m in models]])
    return ["<h2>Samples for the same prompts</h2>", table.replace("<table>", "<table class='samples'>")]


def run_section(summary: dict[str, Any]) -> list[str]:
    """Wall time per step, the settings and any notes."""
    parts = []
    if "timings_s" in summary:
        rows = [[k, v] for k, v in summary["timings_s"].items()]
        parts += ["<h2>Wall time per step</h2>", _table(rows, ["step", "seconds"])]
    if "settings" in summary:
        parts += ["<h2>Settings</h2>", f"<pre>{html.escape(json.dumps(summary['settings'], indent=2))}</pre>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in summary.get("notes", [])]
    return parts


SECTIONS: tuple[Callable[[dict[str, Any]], list[str]], ...] = (
    findings_section,
    win_rate_section,
    likert_section,
    ppo_curves_section,
    overoptimization_section,
    rounds_section,
    reward_model_section,
    alignment_tax_section,
    suite_section,
    truthfulness_section,
    toxicity_section,
    samples_section,
    run_section,
)
"""The report's sections in order; each returns its HTML parts, none where the summary lacks its numbers."""


def write_report(summary: dict[str, Any], path: str | Path, title: str = "instructrl report") -> Path:
    from instructrl.datasets.io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, render(summary, title))
    return path
