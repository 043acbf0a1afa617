"""`instructrl sft`: fine-tune a causal LM on demonstrations with the loss on response tokens only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from instructrl.datasets.io import read_demonstrations
from instructrl.datasets.tokenize import (
    Example,
    pack_texts,
    tokenize_demonstrations,
)
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.loading import load_causal_lm, load_tokenizer
from instructrl.sft.config import SFTConfig
from instructrl.sft.summary import PretrainSummary, SFTSummary
from instructrl.training.loop import SupervisedTask
from instructrl.training.losses import batch_nll, eval_loss
from instructrl.training.runtime import attention_implementation, stage
from instructrl.training.sharding import is_sharded
from instructrl.training.stage import StageRun


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
    """Fine-tune `model_dir` on demonstrations; writes OUT/final (the best epoch) and OUT/summary.json
    (SFTSummary; returned as a dict)."""
    run = StageRun(out, config, resume=resume, changed_keys=changed_keys or ())
    config = run.config

    # 1. data: validated and tokenized before anything is written
    tokenizer = load_tokenizer(model_dir)
    train_demos, val_demos = run.train_val(read_demonstrations, data, val_data)
    max_length = run.max_length(model_dir)
    tok = (tokenizer, config.prompt_template, max_length, config.too_long)
    train, train_stats = tokenize_demonstrations(train_demos, *tok)
    val, val_stats = tokenize_demonstrations(val_demos, *tok)

    # 2.-4. train with the loss on response tokens, keep the best epoch
    lm = train_lm(run, model_dir=model_dir, tokenizer=tokenizer, train=train, val=val, stage="sft")
    summary = SFTSummary(
        **lm,
        skipped_too_long=train_stats.skipped_too_long + val_stats.skipped_too_long,
        truncated=train_stats.truncated + val_stats.truncated,
        max_length=max_length,
        **run.facts(),
    )
    return run.finish(summary)


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
    run = StageRun(out, config, resume=resume)
    tokenizer = load_tokenizer(model_dir)
    train, val = pack_texts(texts, tokenizer, block_size), pack_texts(val_texts, tokenizer, block_size)
    lm = train_lm(run, model_dir=model_dir, tokenizer=tokenizer, train=train, val=val, stage="pretrain")
    summary = PretrainSummary(
        **lm, block_size=block_size, train_tokens=sum(len(e.input_ids) for e in train), **run.facts()
    )
    return run.finish(summary)


def train_lm(
    run: StageRun[SFTConfig],
    *,
    model_dir: str | Path,
    tokenizer: Any,
    train: list[Example],
    val: list[Example],
    stage: str,
) -> dict[str, Any]:
    """Steps 2-4 shared by SFT and pretraining: model, optimizer, the loop, final/ = the best epoch.
    Returns LMSummary's fields."""
    # 2. the model
    config, accelerator = run.config, run.accelerator
    model: torch.nn.Module = load_causal_lm(
        model_dir,
        residual_dropout=config.residual_dropout,
        attn_implementation=attention_implementation(accelerator),
    )
    model = run.adapt(model, "CAUSAL_LM")

    # 3. train, keeping the epoch with the lowest validation loss
    meta = CheckpointMeta(
        stage=stage, prompt_template=config.prompt_template, base_model=str(model_dir), lora_r=config.lora_r
    )
    task = lm_task(train, val, tokenizer.pad_token_id, accelerator)
    result = run.train(model, task, tokenizer=tokenizer, meta=meta, desc=stage)

    # 4. final/ = the best epoch's model
    run.as_final(result["best_dir"])
    return {
        "val_loss": result["best_metric"],
        "best_step": result["best_step"],
        "steps": result["steps"],
        "train_examples": len(train),
        "val_examples": len(val),
    }
