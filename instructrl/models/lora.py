"""LoRA adapters through peft (Hu et al. 2021, https://arxiv.org/abs/2106.09685), for SFT, the RM and PPO.

A stage with `lora_r > 0` wraps its trained model in a peft model: the loaded weights freeze, low-rank
adapters (and a reward model's scalar head, whole) train. What a stage saves stays a plain Hugging Face
checkpoint: the adapters merged into a copy of the weights, the adapter alone in `adapter/` beside it.
peft is imported only when LoRA is on.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from instructrl.config import StageConfig
from instructrl.errors import UserError

ADAPTER_DIR = "adapter"


def add_lora(model: nn.Module, config: StageConfig, task: Literal["CAUSAL_LM", "SEQ_CLS"]) -> nn.Module:
    """`model` with LoRA adapters on `config.lora_target_modules`; only the adapters (and, for SEQ_CLS, the
    scalar head, as peft's modules_to_save) require gradients."""
    try:
        from peft import LoraConfig, get_peft_model
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    except ImportError:
        raise UserError("lora_r > 0 needs peft, an instructrl dependency: pip install peft") from None
    targets = config.lora_target_modules
    if targets is None and getattr(model.config, "model_type", None) not in DEFAULTS:
        targets = "all-linear"  # peft knows no default for this architecture
    lora = LoraConfig(
        task_type=task,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
    )
    try:
        with warnings.catch_warnings():
            # GPT-2's Conv1D stores weights transposed; peft notices, says so, and handles it
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            return get_peft_model(model, lora)  # type: ignore[arg-type]
    except ValueError as e:
        raise UserError(f"lora_target_modules={targets!r}: {e}") from None


def is_peft(model: nn.Module) -> bool:
    return callable(getattr(model, "get_base_model", None))


def hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a peft model, its adapters in place (the model itself otherwise).

    Forward passes that need the model's own attributes (a classifier's `base_model`, `generate` with the
    model's own generation_config) go through it; the adapters still run, and `disable_adapter` still holds.
    """
    return model.get_base_model() if is_peft(model) else model  # type: ignore[operator]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def merged_state_dict(peft_model: Any) -> dict[str, torch.Tensor]:
    """The state dict of the plain model with the active adapter merged in, keyed as the model before
    peft wrapped it. The training weights are not touched: merging in place and back would round them, and
    the PPO reference is those weights."""
    from peft.tuners.lora import LoraLayer

    adapter = peft_model.active_adapter
    base = peft_model.get_base_model()
    out: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key or ".original_module." in key:
            continue  # the adapter's own weights; the head's frozen original (its trained copy is kept)
        key = key.replace(".base_layer.", ".").replace(f".modules_to_save.{adapter}.", ".")
        out[key] = value
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            assert not module.merged, name
            layer: Any = module  # each LoraLayer subclass (Linear, Conv1D's, Embedding) has get_delta_weight
            key = f"{name}.weight"
            out[key] = out[key] + layer.get_delta_weight(adapter).to(out[key].dtype)
    return out


def save_merged(peft_model: Any, path: Path) -> None:
    """A plain Hugging Face checkpoint of the merged model in `path`, the adapter alone in path/adapter/."""
    base = peft_model.get_base_model()
    base.save_pretrained(path, state_dict=merged_state_dict(peft_model), safe_serialization=True)
    peft_model.save_pretrained(path / ADAPTER_DIR, safe_serialization=True)
