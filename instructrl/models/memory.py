"""Memory knobs: gradient checkpointing for the trained models; the frozen models (PPO's reference and reward
model) in a lower precision, or the reward model on a device of its own.

None of them changes what is computed, up to rounding: checkpointing recomputes the same forward in backward
(the same losses, gradient norms and weights to 1e-6 in tests/integration/test_memory_knobs.py); bf16/fp16
frozen models round their weights and activations; another device only moves tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from instructrl.errors import UserError
from instructrl.models.lora import hf_model

FROZEN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Keep only each layer's input in the forward pass and recompute the layer in backward (Chen et al. 2016,
    https://arxiv.org/abs/1604.06174): activation memory falls from O(layers) to O(1) layers, for about one
    more forward pass of compute.

    Non-reentrant checkpointing (torch's recommended one): with LoRA the embeddings are frozen, so the
    layers' inputs need no gradient, which the reentrant variant requires (or peft's
    `enable_input_require_grads`) to reach the adapters. Transformers checkpoints only in training mode, so
    rollouts (eval mode) still generate with the KV cache.
    """
    lm: Any = hf_model(model)  # with LoRA: the Hugging Face model inside the peft model
    if not getattr(lm, "supports_gradient_checkpointing", False):
        raise UserError(
            f"gradient_checkpointing: {type(lm).__name__} does not support gradient checkpointing in "
            f"transformers; --set gradient_checkpointing=false"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):  # its name since transformers 5.x; the old one warns
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def frozen_dtype(setting: str, mixed_precision: str) -> torch.dtype:
    """The dtype of PPO's frozen models: 'auto' follows the run's mixed precision ('no': fp32)."""
    if setting == "auto":
        setting = {"bf16": "bf16", "fp16": "fp16"}.get(mixed_precision, "fp32")
    return FROZEN_DTYPES[setting]


def to_frozen_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """`model` in `dtype`, except a reward model's scalar head: `score()` runs it in fp32 (close rewards
    would tie in bf16)."""
    model.to(dtype)
    head = getattr(model, "score", None)
    if isinstance(head, nn.Module):
        head.float()
    return model


def resolve_device(name: str | None, key: str) -> torch.device | None:
    """The device named in config key `key`, checked to exist on this machine (None when it is empty)."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(
            f"{key}={name} is not a device name; use e.g. cpu, cuda or cuda:1 (empty: the run's device)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (device.index or 0) >= count:
            raise UserError(
                f"{key}={name}: this machine has {count} CUDA device(s); use cpu, "
                f"{', '.join(f'cuda:{i}' for i in range(count)) or 'no cuda device'}, or leave it empty"
            )
    elif device.type != "cpu":
        raise UserError(
            f"{key}={name}: only cpu and cuda devices are supported; leave it empty for the run's"
        )
    return device
