"""The trained model of a distributed run: DDP through accelerate, or sharded with torch's FSDP2.

FSDP2 (`torch.distributed.fsdp.fully_shard`) is applied here, by instructrl, on every device: accelerate 1.x
applies it on GPUs only (on CPU it silently runs DDP), and torch's own runs on CPU with gloo as on GPUs with
NCCL. accelerate still provides the launch, the process group and the device; the sharded model is not
passed to `accelerator.prepare`, so its gradient sync, clipping, checkpoints and final save are done here and
in RunDir, the same code under `accelerate launch` and `torchrun`.

What sharding asks of the loops: every process must run the same forward passes in the same order (each
block all-gathers its parameters from every process), so a sharded model's losses run one pass per
micro-batch and evaluation runs the same number of batches on every process (`lockstep`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from instructrl.config import StageConfig
from instructrl.datasets.io import atomic_write_text
from instructrl.errors import UserError
from instructrl.training.config import ShardableConfig
from instructrl.training.optim import make_optimizer


def is_sharded(model: nn.Module) -> bool:
    """True for a model sharded by `fully_shard` (its parameters are DTensor shards)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def wants_sharding(config: StageConfig, accelerator: Accelerator) -> bool:
    return isinstance(config, ShardableConfig) and config.sharding == "fsdp" and accelerator.num_processes > 1


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's transformer blocks: the modules of the classes Hugging Face keeps whole
    (`_no_split_modules`, e.g. GPT2Block), outermost first."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    assert blocks, f"no transformer blocks found in {type(model).__name__} (_no_split_modules: {names})"
    return blocks


def mixed_precision_policy(mixed_precision: str) -> Any:
    """FSDP2's policy for the run's resolved mixed_precision: bf16 computes with bf16 copies of the fp32
    sharded weights and reduces gradients in fp32; 'no' computes and reduces in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if mixed_precision == "no":
        return MixedPrecisionPolicy()
    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    raise UserError(
        f"sharding=fsdp runs bf16 or fp32, and mixed_precision resolved to {mixed_precision}: "
        f"--set mixed_precision=bf16 (or no)"
    )


def shard_model(model: nn.Module, accelerator: Accelerator, autocast: bool = False) -> nn.Module:
    """FSDP2 over all processes: each transformer block its own unit (gathered for its forward and backward
    only), a scalar head its own fp32 unit, then the root, which holds the rest (embeddings, final norm, the
    language model's head). With `autocast` the weights are gathered in fp32 and the caller's
    `accelerator.autocast()` sets the precision, as for an unsharded model (PPO: the policy then computes
    what the frozen reference computes under autocast); else mixed_precision_policy's."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    policy = mixed_precision_policy("no" if autocast else accelerator.mixed_precision)
    # no model.to(device) first: fully_shard moves each unit's parameters and buffers (the root's: all the
    # rest) to the mesh's device as it shards them, so a GPU holds one whole block at a time, never the
    # whole model (not run on a GPU yet; each process still loads the whole model into host memory)
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # a reward or value model's scalar head (a sequence classifier's `score`) runs in fp32 under bf16 too
    # (models/scoring.py, ScalarHead): a unit of its own, gathered in fp32
    heads = [h for m in model.modules() if isinstance(h := getattr(m, "score", None), nn.Linear)]
    for head in heads:
        fully_shard(head, mesh=mesh, mp_policy=MixedPrecisionPolicy())
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def prepare_training(
    accelerator: Accelerator, model: nn.Module, config: StageConfig, total_steps: int
) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """(model, optimizer, scheduler) ready to train: with sharding=fsdp and more than one process, sharded
    before the optimizer is built (it must hold the shards); else prepared by accelerate (DDP)."""
    (model,), optimizer, scheduler = prepare_models(accelerator, [model], config, total_steps)
    return model, optimizer, scheduler


def prepare_models(
    accelerator: Accelerator,
    models: Sequence[nn.Module],
    config: StageConfig,
    total_steps: int,
    *,
    lrs: Sequence[float] | None = None,
    autocast: bool = False,
) -> tuple[list[nn.Module], torch.optim.Optimizer, Any]:
    """`prepare_training` for one model or several under one optimizer, each model a parameter group with its
    own lr (`lrs`; PPO's policy and value model). Sharded, each model is sharded on its own (`shard_model`'s
    `autocast`), and the optimizer holds their shards."""
    assert lrs is not None or len(models) == 1, "several models need an lr each (lrs)"
    sharded = wants_sharding(config, accelerator)
    if sharded:
        models = [shard_model(m, accelerator, autocast=autocast) for m in models]
    params: nn.Module | list[dict[str, Any]] = models[0]
    if lrs is not None:
        params = [{"params": list(m.parameters()), "lr": lr} for m, lr in zip(models, lrs, strict=True)]
    optimizer, scheduler = make_optimizer(params, config, total_steps)
    if not sharded:
        *models, optimizer = accelerator.prepare(*models, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return list(models), optimizer, scheduler


@contextlib.contextmanager
def gradient_sync(accelerator: Accelerator, model: nn.Module, sync: bool) -> Iterator[None]:
    """Reduce gradients over processes in this backward (`sync`) or only accumulate them locally: DDP's
    no_sync, FSDP2's set_requires_gradient_sync."""
    if is_sharded(model):
        model.set_requires_gradient_sync(sync)  # type: ignore[operator]
        yield
    elif sync:
        yield
    else:
        with accelerator.no_sync(model):
            yield


@contextlib.contextmanager
def gathered(*models: nn.Module) -> Iterator[None]:
    """The sharded models whole on every process for the duration of a `with`, for no-grad forward passes only:
    one all-gather per unit on entry, then each forward pass runs on this process alone. So a process may run
    as many passes as its own work needs (generation that stops when its rows have ended, a shorter shard of
    prompts), where a sharded model's passes must run in lockstep. Every process enters it together; on exit
    the models are sharded again. Unsharded models pass through."""
    from torch.distributed.fsdp import FSDPModule

    roots = [m for m in models if is_sharded(m)]
    units = [u for m in roots for u in m.modules() if isinstance(u, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        for root in roots:  # FSDP2's own setting: blocks reshard after forward, the root keeps its gathered
            root.set_reshard_after_forward(True)  # type: ignore[operator]
            root.set_reshard_after_forward(False, recurse=False)  # type: ignore[operator]


def clip_grad_norm(accelerator: Accelerator, model: nn.Module, max_norm: float) -> float:
    """Clip the gradients' global norm; returns it before clipping. A sharded model's norm is reduced over
    its shards by torch (a DTensor), which accelerate's clipping does not know of."""
    if not is_sharded(model):
        return float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def full_state_dict(model: nn.Module) -> dict[str, Any]:
    """The whole model's weights, gathered from the shards onto the CPU of the main process (an empty dict on
    the others). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # gathered, tied weights (GPT-2's unembedding = its embedding) are copies: tie them again, so that
    # save_pretrained writes one tensor as for the unsharded model
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    for first, *others in names.values():
        for other in others:
            if first in weights:
                weights[other] = weights[first]
    return weights


def save_gathered(model: nn.Module, hf_model: nn.Module, weights: dict[str, Any], path: str | Path) -> None:
    """save_pretrained of `hf_model` (the sharded `model` or a module in it, e.g. a ScalarHead's classifier)
    with the weights full_state_dict gathered, named as the unsharded model names them."""
    from torch.distributed.fsdp import FSDPModule

    prefix = next(f"{n}." if n else "" for n, m in model.named_modules() if m is hf_model)
    own = {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    hf_model.save_pretrained(path, state_dict=own, safe_serialization=True)  # type: ignore[operator]
    # a module fully_shard wrapped has FSDP's subclass of its class: name the model's own class
    cls = next(c for c in type(hf_model).__mro__ if not issubclass(c, FSDPModule))
    config_file = Path(path) / "config.json"
    config = json.loads(config_file.read_text())
    config["architectures"] = [cls.__name__]
    atomic_write_text(config_file, json.dumps(config, indent=2) + "\n")


def local_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What this process holds of the trained model: parameter, gradient (one per trainable parameter, as
    during a step) and optimizer-state bytes, and the parameters' tensor type ('DTensor' when sharded)."""

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    params = list(model.parameters())
    param_bytes = sum(local(p).numel() * p.element_size() for p in params)
    grad_bytes = sum(local(p).numel() * p.element_size() for p in params if p.requires_grad)
    optim_bytes = sum(
        local(v).numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0  # not AdamW's scalar step counts
    )
    types = sorted({type(p.data).__name__ for p in params})
    return {
        "params": param_bytes,
        "grads": grad_bytes,
        "optimizer": optim_bytes,
        "param_type": "/".join(types),
    }
