"""OUT/summary.json of `instructrl ppo`: written by `train_ppo` alone, read through `PPOSummary.read` by the
pipeline's rounds and the demo. Imports no torch, so its readers need not."""

from __future__ import annotations

from typing import Any, Literal

from instructrl.training.summary import StageSummary

Evaluation = dict[str, int | float]
"""One evaluation on held-out prompts: iteration, score_mean, raw_score_mean, kl_mean, length_mean, and
pretrain_loss with pretraining text (the score keys are absent without held-out prompts)."""


class PPOSummary(StageSummary):
    """What one PPO run did and where it ended. "final" is the kept policy's (in final/), "last" the last
    iteration's: with keep=best they may differ."""

    stage: Literal["ppo", "ppo-ptx"]
    """ppo-ptx when ptx_coef > 0."""
    kept_iteration: int
    """The iteration of the policy in final/."""
    keep: str
    """best: final/ is the best evaluated policy within kl_budget; last: the last one."""
    kl_budget: float | None
    reward_norm: dict[str, int | float | None]
    """The reward's gain and bias, and the SFT samples they were measured on (`RewardNorm`)."""
    value_norm: dict[str, int | float | None] | None = None
    """The gain and bias given to the value model's head: the reward's, or, when the value model starts from a
    model of its own (`--value-model`), those that put its scores of the same samples on the reward's scale
    (raw_mean and raw_std: its own scores'). None in runs written before it was recorded."""
    initial_score_mean: float | None
    """Held-out mean normalised score of the starting policy; None without held-out prompts."""
    final_score_mean: float | None
    last_score_mean: float | None
    initial_raw_score_mean: float | None
    final_raw_score_mean: float | None
    initial_kl_mean: float | None
    final_kl_mean: float | None
    last_kl_mean: float | None
    final_kl_coef: float
    evaluations: list[Evaluation]
    """Every evaluation, initial and final included, in order."""
    iterations: int
    optimizer_steps: int
    episodes: int
    train_prompts: int
    eval_prompts: int
    skipped_too_long: int
    pretrain_loss_initial: float | None = None
    """PPO with pretraining text: the starting and the kept policy's loss on held-out text (alignment tax)."""
    pretrain_loss_final: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """What the file holds: the pretraining losses only when there was pretraining text."""
        data = super().as_dict()
        for key in ("pretrain_loss_initial", "pretrain_loss_final"):
            if data[key] is None:
                del data[key]
        return data
