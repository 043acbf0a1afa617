"""`instructrl eval suite`: the public benchmarks whose data is given, on the same models, each run in this
process from its own config (`registry.BENCHMARKS`), every other model compared with the baseline item by item
from the results the runs return, and one report.html."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from instructrl.evaluation.benchmarks import runs
from instructrl.evaluation.benchmarks._results import BenchmarkResult


class SuiteConfig(BaseModel):
    """What `eval suite` runs: the fields are its flags. A benchmark runs when its data is given, with its
    command's defaults but for what the suite sets (`benchmarks`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    models: dict[str, str]
    """NAME -> a model folder or a Hub id ORG/NAME[@REVISION], in the order they run (--model NAME=DIR)"""
    out: Path
    """the output folder: one folder per benchmark, suite.json, report.html"""
    truthfulqa: str | None = None
    """TruthfulQA data (as `eval truthfulqa --data`)"""
    toxicity: tuple[str, ...] = ()
    """RealToxicityPrompts files (as `eval toxicity --data`)"""
    bias: tuple[str, ...] = ()
    """CrowS-Pairs / Winogender files (as `eval bias --data`)"""
    tax: tuple[str, ...] = ()
    """multiple-choice / QA JSONL files (as `eval tax --data`)"""
    baseline: str | None = None
    """the model every other is compared with, item by item, and the alignment tax is against (None: the first)"""
    toxicity_protocol: Literal["gehman", "instructgpt"] = "gehman"
    """as `eval toxicity --protocol`"""
    samples: int = 25
    """toxicity, gehman protocol: continuations per prompt"""
    limit: int | None = None
    """toxicity and bias: only the first N rows of each file"""
    occupation_stats: str | None = None
    """bias: Winogender's occupations-stats.tsv for the gotcha subset (as `eval bias --occupation-stats`)"""

    def baseline_model(self) -> str:
        return self.baseline or next(iter(self.models))

    def benchmarks(self) -> dict[str, runs.BenchmarkConfig]:
        """The config of each benchmark whose data is given, in the order they run, writing into OUT/NAME."""
        models = dict(self.models)
        out: dict[str, runs.BenchmarkConfig] = {}
        if self.truthfulqa:
            out["truthfulqa"] = runs.TruthfulQAEval(
                models=models, out=self.out / "truthfulqa", data=self.truthfulqa
            )
        if self.toxicity:
            out["toxicity"] = runs.ToxicityEval(
                models=models, out=self.out / "toxicity", data=self.toxicity, protocol=self.toxicity_protocol,
                samples=self.samples if self.toxicity_protocol == "gehman" else None, limit=self.limit,
            )  # fmt: skip
        if self.bias:
            out["bias"] = runs.BiasEval(
                models=models, out=self.out / "bias", data=self.bias, limit=self.limit,
                occupation_stats=self.occupation_stats,
            )  # fmt: skip
        if self.tax:
            out["tax"] = runs.TaxEval(
                models=models, out=self.out / "tax", data=self.tax, baseline=self.baseline_model()
            )
        return out


@dataclass(frozen=True)
class SuiteResult:
    results: dict[str, BenchmarkResult]
    """each benchmark's, by name"""
    comparisons: dict[str, dict[str, dict[str, dict[str, Any]]]]
    """{BENCHMARK: {MODEL: {METRIC: difference to the baseline}}} (`_results.compare_with_baseline`)"""
    report: Path
    """report.html"""


def run_suite(config: SuiteConfig) -> SuiteResult:
    """Each benchmark whose data is given, as its own command runs it, into OUT/<benchmark>/ (results.json,
    per_item.json); every other model against the baseline, item by item, into OUT/suite.json; and
    OUT/report.html: verdicts, caveats, and per benchmark charts, n, intervals, definitions and settings.
    Every benchmark's inputs are read and checked before any runs: bad input stops the suite with nothing
    written."""
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks._results import compare_with_baseline, verdict_sentence
    from instructrl.evaluation.benchmarks.registry import BENCHMARKS
    from instructrl.report.html import write_report

    runs.check_models(config.models)
    baseline = config.baseline_model()
    if baseline not in config.models:
        raise UserError(f"--baseline {baseline!r} is not one of the --model names {sorted(config.models)}")
    configs = config.benchmarks()
    if not configs:
        raise UserError(
            "eval suite: give the data of at least one benchmark (--truthfulqa, --toxicity, --bias, --tax)"
        )
    inputs = {name: BENCHMARKS[name].load(c) for name, c in configs.items()}

    results: dict[str, BenchmarkResult] = {}
    docs, commands = [], {}
    for i, (name, c) in enumerate(configs.items(), start=1):
        print(f"== eval suite: {name} ({i} of {len(configs)}) ==")
        commands[name] = runs.command_line(name, c)
        results[name] = BENCHMARKS[name].run(c, inputs[name])
        doc = results[name].document()
        doc["comparisons"] = compare_with_baseline(name, results[name].per_item(), baseline)
        docs.append(doc)

    suite = {
        "models": {
            name: str(Path(path).resolve()) if Path(path).exists() else path
            for name, path in config.models.items()
        },
        "baseline": baseline,
        "versions": _versions(),
        "commands": commands,
    }
    comparisons = {doc["benchmark"]: doc["comparisons"] for doc in docs}
    (config.out / "suite.json").write_text(
        json.dumps({**suite, "comparisons": comparisons}, indent=2, allow_nan=True) + "\n", encoding="utf-8"
    )
    print(f"\nagainst {baseline}, item by item (95%):")
    for bench, per_model in comparisons.items():
        for name, per_metric in per_model.items():
            found = [c for c in per_metric.values() if c["verdict"] != "no detectable difference"]
            print(f"  {bench}: {name}: a difference on {len(found)} of {len(per_metric)} metrics")
            for metric, c in per_metric.items():
                if c["verdict"] != "no detectable difference":
                    print(f"    {verdict_sentence(name, baseline, metric, c)}")
    summary = {"benchmarks": docs, "suite": suite}
    report = write_report(summary, config.out / "report.html", title="instructrl: public benchmarks")
    print(f"wrote {report}")
    return SuiteResult(results, comparisons, report)


def _versions() -> dict[str, str]:
    """The versions the numbers came from, for the report's reproducibility section."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("instructrl", "torch", "transformers", "lm-eval", "alt-profanity-check", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
