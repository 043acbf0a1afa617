"""OUT/summary.json of `instructrl rm`."""

from __future__ import annotations

from typing import Literal

from instructrl.training.summary import StageSummary


class RMSummary(StageSummary):
    """A reward model: the best epoch's, normalised, as final/."""

    stage: Literal["rm"] = "rm"
    val_accuracy: float
    """Pairwise accuracy of final/ on the validation comparisons (over all pairs)."""
    val_loss: float
    """Its validation loss (mean over prompts)."""
    bias: float
    """The bias added after training (normalize); 0 without it."""
    bias_reference: str | None
    """The responses that bias centres on 0; None without normalize."""
    best_step: int | None
    """The optimizer step of the kept epoch."""
    steps: int
    """Optimizer steps run."""
    round: int
    """The newest round of the training comparisons."""
    init: str
    """The model training started from: the SFT model, or an earlier round's reward model."""
    train_prompts: int
    train_pairs: int
    """Pairs over all training prompts: C(K, 2) each."""
    val_prompts: int
    skipped_too_long: int
    """Comparisons left out (too_long=skip) because their prompt does not fit in max_length."""
    truncated: int
    """Comparisons with a response cut at max_length."""
    max_length: int
    """Tokens per sequence: the config's max_length, or the model's context window if smaller."""
