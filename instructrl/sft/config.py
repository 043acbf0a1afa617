from __future__ import annotations

from instructrl.training.config import ShardableConfig


class SFTConfig(ShardableConfig):
    """Supervised fine-tuning. Defaults follow InstructGPT's SFT (Ouyang et al. 2022, Appendix C.1)."""

    epochs: int = 16
    """Passes over the demonstrations (the paper: 16; validation loss picks the best epoch)."""
    lr: float = 1e-5
    """Peak learning rate of the cosine schedule."""
    batch_size: int = 32
    """Demonstrations per optimizer step (over all processes and micro-batches)."""
    residual_dropout: float = 0.2
    """Dropout on the residual branches during SFT (the paper: 0.2)."""
