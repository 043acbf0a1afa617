"""Optimizer and learning-rate schedule from a stage config."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from instructrl.config import StageConfig


def make_optimizer(
    model: torch.nn.Module | list[dict[str, Any]], config: StageConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over a model's parameters (or over parameter groups, each with its own lr) and the stage's
    warm-up + cosine schedule, which scales every group's lr alike."""
    # only what trains: with LoRA most weights are frozen and need no optimizer state
    if isinstance(model, torch.nn.Module):
        params: Any = [p for p in model.parameters() if p.requires_grad]
    else:
        params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in model]
    # fused: one kernel for all parameters; the default per-tensor loop took 6x as long on CPU
    # (instructrl runs on CPU or CUDA, where torch has the fused kernel)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=max(total_steps, 1),
        min_lr_rate=config.lr_min_ratio,
    )
    return optimizer, scheduler


def clip_grad_norms(accelerator: Accelerator, models: list[torch.nn.Module], max_norm: float) -> list[float]:
    """Clip each model's gradient norm on its own; returns the norms before clipping.

    Under fp16 loss scaling the gradients are unscaled once for all of them: accelerate's clip_grad_norm_
    unscales every prepared optimizer on each call, so calling it per model would unscale twice.
    """
    accelerator.unscale_gradients()
    return [float(torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm)) for m in models]


def planned_steps(n_train: int, config: StageConfig) -> int:
    steps = config.epochs * (n_train // config.batch_size)
    return min(steps, config.max_steps) if config.max_steps is not None else steps
