"""OUT/summary.json of `instructrl sft` and of pretraining (`run_pretrain`, the demo's base model)."""

from __future__ import annotations

from typing import Literal

from instructrl.training.summary import StageSummary


class LMSummary(StageSummary):
    """Language modelling with the epoch of the lowest validation loss kept as final/ (`train_lm`)."""

    val_loss: float | None
    """The kept epoch's validation loss (mean over target tokens); None when no step ran."""
    best_step: int | None
    """The optimizer step of the kept epoch."""
    steps: int
    """Optimizer steps run."""
    train_examples: int
    val_examples: int


class SFTSummary(LMSummary):
    stage: Literal["sft"] = "sft"
    skipped_too_long: int
    """Demonstrations left out (too_long=skip) because their prompt does not fit in max_length."""
    truncated: int
    """Demonstrations whose response was cut at max_length."""
    max_length: int
    """Tokens per example: the config's max_length, or the model's context window if smaller."""


class PretrainSummary(LMSummary):
    stage: Literal["pretrain"] = "pretrain"
    block_size: int
    """Tokens per packed block."""
    train_tokens: int
