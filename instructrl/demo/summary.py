"""OUT/summary.json of a demo run, typed: what `build_summary` writes, the report renders and the benchmarks
read (`DemoSummary.read`). The headline figures are typed to the number; the evaluation's detailed tables
(the RM-against-gold analysis, the probes, the curves) keep the shapes their functions give them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, model_serializer

from instructrl.datasets.io import atomic_write_text
from instructrl.training.summary import read_model_in

SUMMARY_FILE = "summary.json"


class Interval(BaseModel):
    """A mean with its 95% interval (`evaluation.stats.win_rate` / `mean_ci`): a win rate or a Likert score."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    ci_low: float
    ci_high: float
    n: int


class Finding(BaseModel):
    """One of the paper's claims, whether this run reproduces it, and the numbers that say so."""

    model_config = ConfigDict(extra="forbid")

    claim: str
    holds: bool
    numbers: str


class RoundRow(BaseModel):
    """One round of the loop: its PPO policy against SFT, and (from round 2) the RM before and after."""

    model_config = ConfigDict(extra="forbid")

    round: int
    model: str
    win: Interval
    gold_score: float
    kl: float | None
    kept_iteration: int | None
    rm_accuracy_before: float | None = None
    rm_accuracy_after: float | None = None

    @model_serializer(mode="wrap")
    def _without_round_ones_rm(self, handler: Any) -> dict[str, Any]:
        """Round 1 has no RM before it: its row leaves the two accuracies out rather than writing nulls."""
        fields = handler(self)
        if self.round == 1:
            for key in ("rm_accuracy_before", "rm_accuracy_after"):
                if fields.get(key) is None:
                    fields.pop(key, None)
        return fields


class DemoSummary(BaseModel):
    """Every figure of a demo run, in the order summary.json holds them."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    description: str
    findings: list[Finding]
    win_rate_vs_sft: dict[str, Interval]
    """Each model's answers against SFT's, judged by held-out labelers (SFT itself: a second sample)."""
    win_rate_vs_sft_training_labelers: dict[str, Interval]
    likert: dict[str, Interval]
    gold_score: dict[str, float]
    """The world's gold standard on each model's answers (the evaluation's alone)."""
    pretrain_loss: dict[str, float]
    benchmark_accuracy: dict[str, float]
    rm_val_accuracy: float
    labeler_agreement: float
    heldout_labeler_agreement: float
    rm_analysis: dict[str, Any]
    rm_on_sft_samples: dict[str, Any]
    overoptimization: dict[str, list[dict[str, float]]]
    truthfulness: dict[str, dict[str, Any]]
    toxicity: dict[str, dict[str, Any]]
    ppo_curves: dict[str, list[dict[str, float]]]
    rounds: list[RoundRow]
    intake: dict[str, Any]
    samples: list[dict[str, str]]
    timings_s: dict[str, float]
    """Seconds per step of the run (a step done in an earlier, resumed run: its seconds then) and the total."""
    settings: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The summary as summary.json holds it (NaN stays NaN, as json.dumps writes it)."""
        return self.model_dump()

    def write(self, out: str | Path) -> Path:
        file = Path(out) / SUMMARY_FILE
        atomic_write_text(file, json.dumps(self.as_json(), indent=2))
        return file

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """A finished demo's summary; `path` is its directory or its summary.json."""
        missing = "{file}: no such file; the demo has not finished (go on with --resume)"
        return read_model_in(cls, path, SUMMARY_FILE, missing)
