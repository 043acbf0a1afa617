"""The public benchmarks by name, in the order `eval suite` runs them: each its config type, its `load` and its
`run` (`runs.py`). `instructrl eval NAME` builds the config from its flags and calls `Benchmark.__call__`; the
suite builds every config from its own (`suite.SuiteConfig.benchmarks`), loads them all, then runs them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from instructrl.evaluation.benchmarks import runs
from instructrl.evaluation.benchmarks._results import BenchmarkResult

C = TypeVar("C", bound=runs.BenchmarkConfig)
D = TypeVar("D")


@dataclass(frozen=True)
class Benchmark(Generic[C, D]):
    config: type[C]
    """its config: the fields are the flags of `instructrl eval NAME`"""
    load: Callable[[C], D]
    """checks the config and reads every input (D): a user's mistake stops here, nothing run or written"""
    run: Callable[[C, D], BenchmarkResult]
    """runs every model on the inputs, writes OUT/ and returns the results"""

    def __call__(self, config: C) -> BenchmarkResult:
        return self.run(config, self.load(config))


BENCHMARKS: dict[str, Benchmark[Any, Any]] = {
    "truthfulqa": Benchmark(runs.TruthfulQAEval, runs.load_truthfulqa, runs.run_truthfulqa),
    "toxicity": Benchmark(runs.ToxicityEval, runs.load_toxicity, runs.run_toxicity),
    "bias": Benchmark(runs.BiasEval, runs.load_bias, runs.run_bias),
    "tax": Benchmark(runs.TaxEval, runs.load_tax, runs.run_tax),
}
