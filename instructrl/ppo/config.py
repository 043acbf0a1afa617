from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from instructrl.training.config import ShardableConfig


class PPOConfig(ShardableConfig):
    """PPO / PPO-ptx against a reward model (Ouyang et al. 2022, section 3.5 and Appendix C.3)."""

    iterations: int = 100
    """PPO iterations; each samples rollout_batch_size prompts, generates, scores and updates."""
    rollout_batch_size: int = 64
    """Episodes (prompts) per iteration, over all processes."""
    batch_size: int = 16
    """Episodes per PPO minibatch (one optimizer step for the policy and one for the value model)."""
    epochs: int = 4
    """PPO epochs over each iteration's episodes."""
    lr: float = 1e-5
    """Policy learning rate."""
    value_lr: float | None = None
    """Value-model learning rate (empty: same as lr)."""
    warmup_ratio: float = 0.0
    """Share of the optimizer steps spent warming the learning rate up."""
    lr_min_ratio: float = 1.0
    """1.0 keeps the learning rate constant after warm-up; lower values decay it by a cosine."""
    max_length: int = 512
    """Longest prompt + max_new_tokens; longer prompts are skipped or rejected (too_long)."""
    max_new_tokens: int = 48
    """Longest response the policy may generate."""
    temperature: float = 1.0
    """Sampling temperature for rollouts (log-probs use the same temperature)."""
    top_p: float = 1.0
    """Must stay 1.0: rollouts are sampled from the full distribution, which the log-probs, the PPO ratio and
    the KL describe (nucleus-truncated samples would make the update off-policy and the KL biased)."""
    reward_norm: bool = True
    """Normalise the reward: a gain and bias that give the SFT policy's samples on training prompts a mean
    score of 0 and a standard deviation of 1 (lm-human-preferences), applied to every score PPO sees and to
    the value model's head. kl_coef, cliprange_value and missing_eos_penalty are then in those units."""
    reward_norm_samples: int = 256
    """SFT samples (one per training prompt) the normalisation is measured on. The gain and bias stay fixed
    for the run (no per-batch whitening of rewards, which would change the objective every batch and hide
    its trend in the logs; the advantages are whitened)."""
    kl_coef: float = 0.02
    """β, the per-token KL penalty coefficient (the paper: 0.02); the start value when kl_target is set."""
    ref_temperature: float | None = Field(default=None, gt=0)
    """Temperature of the SFT reference the KL is measured to (empty: `temperature`, as lm-human-preferences
    and TRL do). Below 1 the reference is SFT sharpened, π_SFT^(1/T) renormalised per token, so the KL pulls
    the policy toward SFT's likelier answers: per token the penalty is β(log π - log π_SFT/T + log Z_T), which
    adds about β(1/T - 1)·log π_SFT to the reward, a likelihood prior the reward model lacks (in the demo
    SFT's likelier samples hold more right facts: RM + 0.1·log π_SFT orders SFT's samples better than the
    RM alone, benchmarks/results/rm_levers.jsonl). Off unless set."""
    kl_target: float | None = None
    """Target KL per episode for the adaptive controller of Ziegler et al. 2019 (empty: β stays fixed)."""
    kl_horizon: int = 10000
    """Episodes over which the adaptive controller moves β by its full proportional error."""
    missing_eos_penalty: float | None = None
    """Added to the (normalised) score of a response that hits max_new_tokens without EOS or the chat
    template's end-of-turn token (e.g. -1.0, as
    TRL's TL;DR recipe; empty: none). Off by default: the reward model scores the last token of a cut-off
    response as it would an ended one, so set it when responses run long (`response/eos_fraction` < 1)."""
    gamma: float = 1.0
    """Discount γ of GAE."""
    lam: float = 0.95
    """λ of GAE."""
    cliprange: float = 0.2
    """ε of the clipped surrogate objective."""
    cliprange_value: float = 0.2
    """ε of the clipped value loss."""
    whiten_advantages: bool = True
    """Normalise advantages over the rollout batch."""
    ptx_coef: float = 0.0
    """γ of PPO-ptx: weight of the pretraining language-model loss added to the policy loss (0: plain PPO).
    Needs --pretrain-data. The paper's 27.8 multiplies a loss on its own scale; here the loss is the mean
    per-token NLL of ptx_batch_size sequences per minibatch."""
    ptx_batch_size: int | None = None
    """Pretraining sequences per PPO minibatch (empty: batch_size)."""
    eval_prompts: int = 64
    """Held-out prompts scored before and after training (and every eval_every iterations); 0: none."""
    eval_every: int = 10
    """Evaluate on the held-out prompts every this many iterations (0: only before and after)."""
    keep: Literal["best", "last"] = "best"
    """Which policy becomes final/: 'best' — of the evaluated ones (the SFT start, every eval_every
    iterations, the last), the one with the highest mean reward on the held-out prompts within kl_budget;
    'last' — the last iteration's. summary.json says which (kept_iteration)."""
    kl_budget: float | None = None
    """With keep=best: the largest mean KL to the SFT model (nats per response, on the held-out prompts) a
    kept policy may have (empty: no limit)."""
    forward_batch_size: int = 64
    """Sequences per no-grad forward pass when scoring rollouts (memory knob; results do not change)."""
    frozen_dtype: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Precision of the frozen models, the SFT reference and the reward model (never trained, so no optimizer
    state or gradients): 'bf16' or 'fp16' halve their memory, rounding their log-probs and scores (the reward
    head stays fp32); 'auto' follows mixed_precision. With LoRA the reference is the policy's own weights with
    its adapters off, which stay fp32 (they are also the trained policy's): only the reward model changes,
    and the reference too when it is loaded apart (--reference other than --policy)."""
    reward_device: str | None = None
    """Device of the frozen reward model, e.g. cuda:1, to free the training GPU (empty: the run's device);
    sequences go there to be scored and the scores come back."""
    log_rollouts: bool = True
    """Write every episode (prompt, response, score, KL) to rollouts.jsonl."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every this many iterations."""

    @field_validator("top_p")
    @classmethod
    def _full_distribution(cls, v: float) -> float:
        if v != 1.0:
            raise ValueError(
                "top_p < 1 is refused for PPO: rollouts would come from the nucleus-truncated distribution "
                "while the log-probs, the PPO ratio and the KL use the full softmax (off-policy updates, a "
                "biased KL). Sample PPO rollouts with top_p=1"
            )
        return v

    @field_validator("lora_dropout")
    @classmethod
    def _no_lora_dropout(cls, v: float) -> float:
        if v > 0:
            raise ValueError(
                "lora_dropout > 0 is refused for PPO: the policy and value model run without dropout, so that "
                "log-probs and values are the same function of the weights in rollout and in training. Use 0"
            )
        return v

    @model_validator(mode="after")
    def _check_sizes(self) -> PPOConfig:
        if self.rollout_batch_size % self.batch_size:
            raise ValueError(
                f"rollout_batch_size ({self.rollout_batch_size}) must be a multiple of batch_size ({self.batch_size})"
            )
        if self.kl_target is not None and self.kl_target <= 0:
            raise ValueError("kl_target must be positive (or empty for a fixed β)")
        if self.reward_norm and self.reward_norm_samples < 2:
            raise ValueError("reward_norm_samples must be at least 2 (a standard deviation needs two scores)")
        return self

    @property
    def minibatches(self) -> int:
        return self.rollout_batch_size // self.batch_size
