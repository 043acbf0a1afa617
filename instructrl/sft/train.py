"""`instructrl sft`: fine-tune a causal LM on demonstrations with the loss on response tokens only."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from instructrl.datasets.io import read_demonstrations
from instructrl.datasets.tokenize import (
    Example,
    pack_texts,
    split_by_user,
    tokenize_demonstrations,
)
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.loading import context_window, load_causal_lm, load_tokenizer
from instructrl.models.lora import add_lora
from instructrl.models.memory import enable_gradient_checkpointing
from instructrl.sft.config import SFTConfig
from instructrl.training.loop import SupervisedTask, fit
from instructrl.training.losses import batch_nll, eval_loss
from instructrl.training.optim import planned_steps
from instructrl.training.rundir import RunDir, resolve_config
from instructrl.training.runtime import attention_implementation, finish, make_accelerator, stage
from instructrl.training.sharding import is_sharded, local_state_bytes, prepare_training


def lm_task(
    model_examples: list[Example], val_examples: list[Example], pad_id: int, accelerator
) -> SupervisedTask:
    """Language-modelling loss on target tokens, averaged over the global batch's target tokens."""

    def normalizer(batch: list[int]) -> float:
        return float(
            sum(len(model_examples[i].input_ids) - max(model_examples[i].n_prompt, 1) for i in batch)
        )

    def micro_loss(model, mb: list[int], norm: float):
        examples = [model_examples[i] for i in mb]
        nll, n = batch_nll(model, examples, pad_id, accelerator.device, one_pass=is_sharded(model))
        return nll / norm, {"nll": nll.item(), "tokens": n}

    def train_metrics(sums: dict[str, float], norm: float) -> dict[str, float]:
        return {"train/loss": sums["nll"] / norm, "train/tokens": sums["tokens"]}

    def evaluate(model) -> dict[str, float]:
        return {"val/loss": eval_loss(model, val_examples, pad_id, accelerator)}

    return SupervisedTask(
        n_train=len(model_examples),
        normalizer=normalizer,
        micro_loss=micro_loss,
        train_metrics=train_metrics,
        evaluate=evaluate,
        select_key="val/loss",
        select_higher=False,
    )


@stage
def run_sft(
    *,
    model_dir: str | Path,
    data: Any,
    out: str | Path,
    config: SFTConfig,
    val_data: Any = None,
    resume: bool = False,
    changed_keys: set[str] | None = None,
) -> dict[str, Any]:
    """Fine-tune `model_dir` on demonstrations; writes OUT/final (the best epoch) and OUT/summary.json."""
    t_start = time.perf_counter()
    config = resolve_config(out, config, resume, changed_keys or set())
    accelerator = make_accelerator(config, out)

    # 1. data: validated and tokenized before anything is written
    tokenizer = load_tokenizer(model_dir)
    demos = read_demonstrations(data)
    if val_data is not None:
        train_demos, val_demos = demos, read_demonstrations(val_data)
    else:
        train_demos, val_demos = split_by_user(demos, config.val_fraction, config.seed)
    max_length = min(config.max_length, context_window(model_dir) or config.max_length)
    tok = (tokenizer, config.prompt_template, max_length, config.too_long)
    train, train_stats = tokenize_demonstrations(train_demos, *tok)
    val, val_stats = tokenize_demonstrations(val_demos, *tok)

    # 2.-4. train with the loss on response tokens, keep the best epoch
    summary = train_lm(
        model_dir=model_dir,
        tokenizer=tokenizer,
        train=train,
        val=val,
        config=config,
        out=out,
        accelerator=accelerator,
        stage="sft",
    )
    summary.update(
        skipped_too_long=train_stats.skipped_too_long + val_stats.skipped_too_long,
        truncated=train_stats.truncated + val_stats.truncated,
        max_length=max_length,
        time_s=time.perf_counter() - t_start,
    )
    RunDir(out, accelerator).write_summary(summary)
    finish(accelerator)
    return summary


@stage
def run_pretrain(
    *,
    model_dir: str | Path,
    texts: Sequence[str],
    val_texts: Sequence[str],
    out: str | Path,
    config: SFTConfig,
    block_size: int,
    resume: bool = False,
) -> dict[str, Any]:
    """Plain language modelling on documents packed into blocks of `block_size` tokens (every token a target).

    Used by `instructrl demo` to pretrain its base model from scratch; the same loop as SFT.
    """
    t_start = time.perf_counter()
    config = resolve_config(out, config, resume, set())
    accelerator = make_accelerator(config, out)
    tokenizer = load_tokenizer(model_dir)
    train, val = pack_texts(texts, tokenizer, block_size), pack_texts(val_texts, tokenizer, block_size)
    summary = train_lm(
        model_dir=model_dir,
        tokenizer=tokenizer,
        train=train,
        val=val,
        config=config,
        out=out,
        accelerator=accelerator,
        stage="pretrain",
    )
    summary.update(block_size=block_size, train_tokens=sum(len(e.input_ids) for e in train))
    summary["time_s"] = time.perf_counter() - t_start
    RunDir(out, accelerator).write_summary(summary)
    finish(accelerator)
    return summary


def train_lm(
    *,
    model_dir: str | Path,
    tokenizer: Any,
    train: list[Example],
    val: list[Example],
    config: SFTConfig,
    out: str | Path,
    accelerator,
    stage: str,
) -> dict[str, Any]:
    """Steps 2-4 shared by SFT and pretraining: model, optimizer, the loop, final/ = the best epoch."""
    # 2. run directory, model, optimizer, schedule
    model: torch.nn.Module = load_causal_lm(
        model_dir,
        residual_dropout=config.residual_dropout,
        attn_implementation=attention_implementation(accelerator),
    )
    if config.lora_r:
        model = add_lora(model, config, "CAUSAL_LM")
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    run = RunDir(out, accelerator)
    run.start(config)
    model, optimizer, scheduler = prepare_training(
        accelerator, model, config, planned_steps(len(train), config)
    )
    run.checkpoint_sharded(model, optimizer)

    # 3. train, keeping the epoch with the lowest validation loss
    meta = CheckpointMeta(
        stage=stage, prompt_template=config.prompt_template, base_model=str(model_dir), lora_r=config.lora_r
    )
    result = fit(
        lm_task(train, val, tokenizer.pad_token_id, accelerator),
        accelerator=accelerator,
        run=run,
        config=config,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        tokenizer=tokenizer,
        meta=meta,
        desc=stage,
    )

    # 4. final/ = the best epoch's model
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        result["best_dir"].rename(run.path / "final")
    run.remove_checkpoint()
    return {
        "stage": stage,
        "val_loss": result["best_metric"],
        "best_step": result["best_step"],
        "steps": result["steps"],
        "train_examples": len(train),
        "val_examples": len(val),
        "mixed_precision": accelerator.mixed_precision,
        "processes": accelerator.num_processes,
        "sharding": config.sharding if is_sharded(model) else "none",
        "process_state_bytes": local_state_bytes(model, optimizer),  # the main process's
    }
