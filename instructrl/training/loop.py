"""The supervised training loop SFT and the reward model share: epochs of seeded global batches, exact
loss normalisation, validation each epoch, the best checkpoint kept, stop/resume at any step.

Why losses are `sum / global count` (times the number of processes): DDP averages gradients over
processes and accumulation sums them over micro-batches, so this makes the update identical for any
split of the same global batch (1x8 = 8x1 micro-batches, 1 process = 2 processes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from instructrl.config import StageConfig
from instructrl.errors import UserError
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.training.rundir import RunDir
from instructrl.training.runtime import (
    Stopped,
    StopSignal,
    epoch_batches,
    local_micro_batches,
    micro_batch_size,
    progress,
)
from instructrl.training.sharding import clip_grad_norm, gradient_sync


@dataclass
class SupervisedTask:
    """What differs between stages; the loop is `fit`."""

    n_train: int
    normalizer: Callable[[list[int]], float]
    """Global count a batch's loss is averaged over (response tokens for SFT, prompts for the RM)."""
    micro_loss: Callable[[torch.nn.Module, list[int], float], tuple[torch.Tensor, dict[str, float]]]
    """(model, micro-batch indices, normalizer) -> (loss to backprop = sum / normalizer, sums to log)."""
    train_metrics: Callable[[dict[str, float], float], dict[str, float]]
    """(summed logging values of a global batch, normalizer) -> 'train/...' metrics."""
    evaluate: Callable[[torch.nn.Module], dict[str, float]]
    """Validation metrics ('val/...'), identical on every process."""
    select_key: str
    select_higher: bool


def reduce_sums(accelerator: Accelerator, sums: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1 or not sums:
        return sums
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, "sum")
    return dict(zip(keys, t.tolist(), strict=True))


def add_sums(total: dict[str, float], new: dict[str, float]) -> None:
    for k, v in new.items():
        total[k] = total.get(k, 0.0) + v


def fit(
    task: SupervisedTask,
    *,
    accelerator: Accelerator,
    run: RunDir,
    config: StageConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    tokenizer: Any,
    meta: CheckpointMeta,
    desc: str,
) -> dict[str, Any]:
    """Train; returns {'best_metric', 'best_step', 'steps', 'best_dir', 'last_metrics'}."""
    world, rank = accelerator.num_processes, accelerator.process_index
    micro = micro_batch_size(config, world)
    steps_per_epoch = task.n_train // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"{task.n_train} training examples are fewer than batch_size={config.batch_size}; "
            f"lower batch_size (--set batch_size=N) or add data"
        )
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    state: dict[str, Any] = {"step": 0, "best": None, "best_step": None}
    if run.has_checkpoint():
        state = run.load_checkpoint()
    stop = StopSignal()
    bar = progress(total_steps, state["step"], desc, accelerator)
    t0, last_val = time.perf_counter(), {}
    batches: list[list[int]] = []
    batches_epoch: int | None = None
    try:
        for step in range(state["step"], total_steps):
            epoch, i = divmod(step, steps_per_epoch)
            if batches_epoch != epoch:
                batches, batches_epoch = (
                    epoch_batches(task.n_train, config.batch_size, config.seed, epoch),
                    epoch,
                )
            batch = batches[i]
            norm = task.normalizer(batch)

            # forward/backward over this process's micro-batches, syncing gradients on the last only
            model.train()
            sums: dict[str, float] = {}
            micros = local_micro_batches(batch, world, rank, micro)
            for j, mb in enumerate(micros):
                sync = j == len(micros) - 1
                with gradient_sync(accelerator, model, sync):
                    loss, mb_sums = task.micro_loss(model, mb, norm)
                    accelerator.backward(loss * world)  # DDP and FSDP2 average over processes
                add_sums(sums, mb_sums)
            grad_norm = clip_grad_norm(accelerator, model, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            metrics = {"step": step + 1, "epoch": epoch + (i + 1) / steps_per_epoch}
            metrics.update(task.train_metrics(reduce_sums(accelerator, sums), norm))
            metrics["train/lr"] = scheduler.get_last_lr()[0]
            metrics["train/grad_norm"] = float(grad_norm)

            end_of_epoch = (i + 1) == steps_per_epoch or step + 1 == total_steps
            if end_of_epoch:
                last_val = task.evaluate(accelerator.unwrap_model(model))
                metrics.update(last_val)
                value = last_val[task.select_key]
                better = state["best"] is None or (
                    value > state["best"] if task.select_higher else value < state["best"]
                )
                if better:
                    state["best"], state["best_step"] = value, step + 1
                    run.save_model(model, tokenizer, "best", meta)
            metrics["time/elapsed_s"] = time.perf_counter() - t0
            if (step + 1) % config.log_every == 0 or end_of_epoch:
                run.log(metrics)
            shown = {
                k.split("/")[-1]: f"{v:.4g}"
                for k, v in metrics.items()
                if k.startswith(("train/loss", "val/"))
            }
            bar.set_postfix(shown, refresh=False)  # a refresh here would print every step into log files
            bar.update(1)

            state["step"] = step + 1
            if stop.should_stop(accelerator):
                run.save_checkpoint(state)
                raise Stopped(f"stopped at step {step + 1}/{total_steps}; continue with --resume")
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < total_steps:
                run.save_checkpoint(state)
    finally:
        bar.close()
        stop.restore()
    return {
        "best_metric": state["best"],
        "best_step": state["best_step"],
        "steps": total_steps,
        "best_dir": Path(run.path) / "best",
        "last_val": last_val,
    }
