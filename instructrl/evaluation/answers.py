"""`instructrl eval answers`: several models' responses to the same prompts, as A/B pairs against a baseline
(what the labeling app's A/B tasks take) or one row per model and prompt. One typed config and one function,
which the command and the pipeline both call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from instructrl.errors import UserError


class AnswersEval(BaseModel):
    """`instructrl eval answers`."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    models: dict[str, str]
    """NAME -> a model folder or a Hub id ORG/NAME[@REVISION], in the order they answer (--model NAME=DIR)"""
    prompts: list[Path] = Field(min_length=1)
    """prompts JSONL files (a plain prompt or a conversation a line; user_id not needed)"""
    out: Path
    """the output JSONL"""
    baseline: str | None = None
    """NAME of the model the others are compared with: writes A/B pairs (None: a row per model and prompt)"""
    seed: int = 0
    max_new_tokens: int = 64
    best_of: int = 1
    """answer with the best of N samples by the reward model (`reward`); 1: one sample"""
    reward: str | None = None
    """the reward model that picks the best of N"""

    @model_validator(mode="after")
    def _consistent(self) -> AnswersEval:
        if self.baseline is not None and self.baseline not in self.models:
            raise UserError(
                f"--baseline {self.baseline!r} is not one of the --model names {sorted(self.models)}"
            )
        if self.best_of < 1:
            raise UserError(f"--best-of {self.best_of}: must be 1 or more")
        if self.best_of > 1 and self.reward is None:
            raise UserError(
                f"--best-of {self.best_of} needs --reward RM_DIR, the reward model that picks the best"
            )
        return self


def write_answers(config: AnswersEval) -> dict[str, Any]:
    """Sample every model's answers, write them to `config.out`; returns what the command prints."""
    from instructrl.datasets.io import read_records, write_jsonl
    from instructrl.datasets.records import ABPair, EvalPrompt
    from instructrl.evaluation.benchmarks.runs import check_models, progress_bar, ticker
    from instructrl.evaluation.models import best_of_n, best_of_n_kl, generate_answers
    from instructrl.models.loading import resolve_model

    check_models(config.models)  # a missing directory or uncached Hub id fails here, before any work
    if config.reward is not None:
        resolve_model(config.reward, "reward model")
    files = [str(p) for p in config.prompts]
    records: list[EvalPrompt] = read_records(files, "eval_prompts")  # type: ignore[assignment]
    prompts = [r.conversation for r in records]  # what the models read: a conversation or a plain prompt
    texts = [r.prompt for r in records]
    answers, scores = {}, {}
    for name, path in config.models.items():
        with progress_bar(len(prompts) * config.best_of, f"answers: {name}") as bar:
            tick = ticker(bar)
            if config.best_of > 1:
                assert config.reward is not None  # the config's check
                answers[name], scores[name] = best_of_n(
                    path, config.reward, prompts, config.best_of, seed=config.seed,
                    max_new_tokens=config.max_new_tokens, progress=tick,
                )  # fmt: skip
            else:
                answers[name] = generate_answers(
                    path, prompts, seed=config.seed, max_new_tokens=config.max_new_tokens, progress=tick
                )
    rows: list[ABPair] | list[dict[str, str]]
    if config.baseline is None:
        rows = [
            {"prompt": p, "model": name, "response": answers[name][i]}
            for name in config.models
            for i, p in enumerate(texts)
        ]
    else:
        rows = [
            ABPair(
                prompt=p,
                model_a=name,
                response_a=answers[name][i],
                model_b=config.baseline,
                response_b=answers[config.baseline][i],
            )
            for name in config.models
            if name != config.baseline
            for i, p in enumerate(texts)
        ]
    n = write_jsonl(config.out, rows)
    report: dict[str, Any] = {"written": n, "out": str(config.out)}
    if config.best_of > 1:
        report["best_of"] = config.best_of
        report["kl_to_sampling_policy_at_most"] = best_of_n_kl(config.best_of)
        report["mean_reward"] = {name: sum(sc) / len(sc) for name, sc in scores.items()}
    return report
