"""The paper's human evaluation from the labeling app's export (Ouyang et al. 2022, Fig. 3, Fig. 4, Table 4).

Per model, with held-out and training labelers apart (the paper's headline numbers are held-out labelers'):

    {group}/ab/win_rate          A/B judgements: share preferring the model to the baseline (a tie is 0.5)
    {group}/round{r}/win_rate    rankings of round r that hold both the model's and the baseline's responses
    {group}/round{r}/likert      mean 1-7 quality score of the model's responses
    {group}/round{r}/{flag}      share of the model's labelled responses carrying that metadata flag

Shares carry Wilson 95% intervals, Likert means a percentile bootstrap (inside 1-7 unclipped); every metric carries its n.
A/B judgements belong to no round (the app's rounds are rankings' alone), so their win rate is per model;
a ranking without a round counts as round 1, as `Comparison.round` says.

A ranking gives one win-rate outcome per model, not one per response pair: the share of its (model,
baseline) pairs in which the model's response is ranked above. Pairs from one ranking share a prompt and
a labeler, so counting each pair would shrink the interval as if they were independent judgements.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from instructrl.datasets.io import expand_paths, iter_json_lines, read_records, text_lines
from instructrl.datasets.records import METADATA_FLAGS, ABJudgement, Comparison, Record
from instructrl.errors import UserError
from instructrl.evaluation.benchmarks._results import Metric, format_table, mean, proportion

HELDOUT = "heldout"
"""The `labeler_group` the labeling app exports for held-out labelers (`labeling.models.HELDOUT_GROUP`,
not imported: that module brings in the web stack)."""
GROUPS = (HELDOUT, "training")
NAMES = ("win_rate", "likert", *METADATA_FLAGS)
"""Metric names inside a group and scope, in the order they are listed."""

DEFINITIONS = {
    "heldout": "labelers the export marks held out (labeler_group 'heldout') or named by --heldout",
    "training": "every other labeler, those of records without a labeler_id included",
    "{group}/ab/win_rate": "A/B judgements of the model against the baseline: 1 preferred, 0.5 tie, 0 not",
    "{group}/round{r}/win_rate": "rankings of round r holding responses of the model and of the baseline: per "
    "ranking, the share of (model, baseline) response pairs with the model's ranked above",
    "{group}/round{r}/likert": "the labelers' 1-7 score of each of the model's responses",
    "{group}/round{r}/{flag}": "share of the model's labelled responses with that flag (records.METADATA_FLAGS)",
}


@dataclass
class HumanEval:
    models: dict[str, dict[str, Metric]]
    """Per model (the baseline first), its metrics in the order of `metric_order`."""
    labelers: dict[str, list[str]]
    """The labeler ids of each group."""
    notes: dict[str, int]
    """What was left out or assumed, and for how many records."""


# ---- reading --------------------------------------------------------------------------------------------


def read_labels(
    paths: str | Path | Iterable[str | Path],
) -> tuple[list[Comparison], list[ABJudgement], dict[str, dict[str, object]]]:
    """The rankings and A/B judgements in export files (`comparisons.jsonl`, `ab.jsonl`; a folder: its
    *.jsonl), and per file its kind and record count. A file holds one kind, told by its first record."""
    comparisons: list[Comparison] = []
    judgements: list[ABJudgement] = []
    files: dict[str, dict[str, object]] = {}
    for path in dict.fromkeys(p.resolve() for p in expand_paths(paths)):  # a file given twice counts once
        first = next(iter_json_lines(path), None)
        if first is None:  # the exporter writes empty files for splits without records
            files[str(path)] = {"kind": None, "records": 0}
            continue
        lineno, obj = first
        if "preferred" in obj or "response_a" in obj:
            kind = "ab"
        elif "responses" in obj or "ranking" in obj:
            kind = "comparisons"
        else:
            raise UserError(
                f"{path}:{lineno}: neither a ranking (fields 'responses', 'ranking') nor an A/B judgement "
                "(fields 'response_a', 'response_b', 'model_a', 'model_b', 'preferred'); give the labeling "
                "app export's comparisons.jsonl or ab.jsonl"
            )
        records = read_records(path, kind)
        comparisons += [r for r in records if isinstance(r, Comparison)]
        judgements += [r for r in records if isinstance(r, ABJudgement)]
        files[str(path)] = {"kind": kind, "records": len(records)}
    if not comparisons and not judgements:
        raise UserError(f"{', '.join(files)}: no rankings or A/B judgements (the files are empty)")
    return comparisons, judgements, files


def read_heldout_ids(values: Iterable[str]) -> list[str]:
    """Labeler ids from `--heldout` values: each an id, or a file of ids (one a line, '#' starts a comment)."""
    ids: list[str] = []
    for value in values:
        if Path(value).is_file():
            lines = (line.partition("#")[0].strip() for line in text_lines(Path(value)))
            ids += [line for line in lines if line]
        else:
            ids.append(value)
    return ids


# ---- one record's contribution --------------------------------------------------------------------------


def labeler_group(record: Record, heldout_ids: set[str]) -> str:
    """'heldout' when the export marks the record's labeler held out or their id is in `heldout_ids`."""
    marked = getattr(record, "labeler_group", None) == HELDOUT
    return HELDOUT if marked or getattr(record, "labeler_id", None) in heldout_ids else "training"


def response_models(c: Comparison) -> list[str] | None:
    """The model behind each response, or None when the export does not say."""
    if c.models is not None:
        return c.models
    return [c.model] * c.k if c.model else None


def ab_outcome(j: ABJudgement, baseline: str) -> tuple[str, float] | None:
    """(the other model, 1 if preferred / 0.5 tie / 0 not) for a judgement of the baseline against another
    model; None for any other judgement."""
    if baseline not in (j.model_a, j.model_b) or j.model_a == j.model_b:
        return None
    other = j.model_b if j.model_a == baseline else j.model_a
    if j.preferred == "tie":
        return other, 0.5
    return other, float((j.model_a if j.preferred == "a" else j.model_b) == other)


def ranking_outcomes(c: Comparison, baseline: str) -> dict[str, float]:
    """Per model ranked together with the baseline, the share of its (model, baseline) response pairs in
    which the labeler put the model's response above the baseline's."""
    models = response_models(c)
    if models is None:
        return {}
    wins: dict[str, list[float]] = defaultdict(list)
    for better, worse in c.pairs():
        if models[worse] == baseline and models[better] != baseline:
            wins[models[better]].append(1.0)
        elif models[better] == baseline and models[worse] != baseline:
            wins[models[worse]].append(0.0)
    return {m: sum(w) / len(w) for m, w in wins.items()}


# ---- the evaluation -------------------------------------------------------------------------------------


def human_eval(
    comparisons: Iterable[Comparison],
    judgements: Iterable[ABJudgement],
    *,
    baseline: str | None = None,
    heldout_ids: Iterable[str] = (),
) -> HumanEval:
    """Win rates against `baseline` (none without one), Likert means and flag rates per model, labeler
    group and round. Raises UserError for a baseline or held-out id the data does not hold, and for A/B
    judgements without a baseline."""
    heldout = set(heldout_ids)
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    labelers: dict[str, set[str]] = {g: set() for g in GROUPS}
    seen_models: set[str] = set()
    notes: Counter[str] = Counter()

    def note_labeler(record: Record, group: str) -> None:
        labeler = getattr(record, "labeler_id", None)
        if labeler is None:
            notes["records without labeler_id (counted as training labelers)"] += 1
        else:
            labelers[group].add(labeler)

    judgements = list(judgements)
    seen_models |= {m for j in judgements for m in (j.model_a, j.model_b) if m}
    if judgements and baseline is None:
        raise UserError(
            f"{len(judgements)} A/B judgements need a baseline to win against: give --baseline, one of "
            f"{sorted(seen_models)}"
        )
    for j in judgements:
        group = labeler_group(j, heldout)
        note_labeler(j, group)
        outcome = ab_outcome(j, baseline) if baseline is not None else None
        if outcome is None:
            notes["A/B judgements not of the baseline against another model (left out)"] += 1
            continue
        model, won = outcome
        samples[model][f"{group}/ab/win_rate"].append(won)

    for c in comparisons:
        group = labeler_group(c, heldout)
        note_labeler(c, group)
        models = response_models(c)
        if models is None:
            notes["rankings without model or models (left out)"] += 1
            continue
        seen_models |= set(models)
        scope = f"{group}/round{c.round or 1}"
        if baseline is not None:
            for model, share in ranking_outcomes(c, baseline).items():
                samples[model][f"{scope}/win_rate"].append(share)
        if c.labels is None:
            notes["rankings without labels (win rates only)"] += 1
            continue
        for model, label in zip(models, c.labels, strict=True):
            if label.likert is not None:
                samples[model][f"{scope}/likert"].append(label.likert)
            for flag in METADATA_FLAGS:
                samples[model][f"{scope}/{flag}"].append(float(flag in label.flags))

    if baseline is not None and baseline not in seen_models:
        raise UserError(
            f"baseline {baseline!r} is not a model in the data; give --baseline one of {sorted(seen_models)}"
        )
    known = set().union(*labelers.values())
    if missing := sorted(heldout - known):
        raise UserError(
            f"held-out labeler(s) {missing} have no records in the data (labelers: {sorted(known)}); "
            "check the ids given with --heldout"
        )
    order = sorted(samples, key=lambda m: (m != baseline, m))
    keys = metric_order({k for per in samples.values() for k in per})
    metrics = {m: {k: _metric(k, samples[m][k]) for k in keys if k in samples[m]} for m in order}
    return HumanEval(metrics, {g: sorted(ids) for g, ids in labelers.items()}, dict(sorted(notes.items())))


def metric_order(keys: Iterable[str]) -> list[str]:
    """Held-out labelers first; A/B, then the rounds in order; win rate, Likert, then the flags."""

    def rank(key: str) -> tuple[int, int, int]:
        group, scope, name = key.split("/")
        return (
            GROUPS.index(group),
            0 if scope == "ab" else int(scope.removeprefix("round")),
            NAMES.index(name),
        )

    return sorted(keys, key=rank)


def _metric(key: str, values: list[float]) -> Metric:
    return mean(values, bounds=(1.0, 7.0)) if key.endswith("/likert") else proportion(values)


def table(models: dict[str, dict[str, Metric]]) -> str:
    """`format_table` with every metric in `metric_order`: it lists metrics in the order it first meets
    them, so the first model gets every key, None ('-') where it has no value."""
    keys = metric_order({k for per in models.values() for k in per})
    full = {m: {k: per.get(k) for k in keys} for m, per in models.items()}
    return format_table(cast(dict[str, dict[str, Metric]], full))
