from __future__ import annotations

from pydantic import Field, model_validator

from instructrl.training.config import ShardableConfig


class RMConfig(ShardableConfig):
    """Reward-model training. Defaults follow InstructGPT's RM (Ouyang et al. 2022, Appendix C.2)."""

    epochs: int = 1
    """Passes over the comparisons (the paper: 1; more overfits)."""
    lr: float = 9e-6
    """Peak learning rate."""
    lr_min_ratio: float = 0.1
    """The cosine schedule ends at 10% of the peak, as in the paper."""
    batch_size: int = 64
    """Prompts per optimizer step; each brings all C(K,2) pairs of its K responses."""
    latest_round_weight: float = Field(default=1.0, gt=0)
    """Weight in the loss of the newest round's comparisons relative to earlier rounds' (ChatGPT's loop:
    rankings of the current policy's answers describe where the policy now is); comparisons without a round
    are round 1. 1: every comparison counts the same."""
    share_prompt: bool = True
    """Run each prompt through the model once for its K responses (they continue its KV cache) rather than
    K times: the same rewards and gradients, fewer FLOPs when prompts are longer than responses."""
    normalize: bool = True
    """After training, add a bias so that the reference responses (--norm-data demonstrations, else each
    training comparison's best response) get a mean reward of 0, as the paper did before RL."""

    @model_validator(mode="after")
    def _shared_prompts_unsharded(self) -> RMConfig:
        # the shared prompt and its responses run each block twice in one forward; FSDP2 (torch 2.13) then
        # frees a block's gathered weights that the first pass's backward still needs
        if self.sharding == "fsdp" and self.share_prompt:
            raise ValueError("sharding=fsdp needs share_prompt=false (--set share_prompt=false)")
        return self
