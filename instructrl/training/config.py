"""Config keys of the stages whose trained models may be sharded over processes (SFT, the reward model, PPO)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from instructrl.config import StageConfig


class ShardableConfig(StageConfig):
    """A stage config with the `sharding` key; SFTConfig, RMConfig and PPOConfig build on it."""

    sharding: Literal["none", "fsdp"] = "none"
    """How the processes of a distributed run hold the trained model. 'none': DDP, every process a whole copy.
    'fsdp': torch's FSDP2 (`fully_shard` per transformer block, then the whole model): each process holds
    1/N of the parameters, gradients and AdamW state, gathering a block's parameters for its forward and
    backward; bf16 mixed precision keeps fp32 master weights and reduces gradients in fp32. The same under
    `accelerate launch` (any config, configs/accelerate/fsdp.yaml included) and `torchrun`, on CPU (gloo) or
    GPUs. With one process there is nothing to shard and it runs unsharded."""

    @model_validator(mode="after")
    def _sharding_supported(self) -> ShardableConfig:
        if self.sharding == "fsdp" and self.lora_r:
            raise ValueError("sharding=fsdp with LoRA (lora_r > 0) is not built yet; use one or the other")
        if self.sharding == "fsdp" and self.mixed_precision == "fp16":
            raise ValueError(
                "sharding=fsdp runs bf16 or fp32 (mixed_precision=bf16 or no): fp16's loss scaling is not "
                "built for sharded gradients"
            )
        return self
