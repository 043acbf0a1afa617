"""`instructrl rm`: a reward model from rankings, initialised from the SFT model without its unembedding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from instructrl.datasets.io import read_comparisons, read_demonstrations
from instructrl.datasets.records import Comparison
from instructrl.datasets.tokenize import (
    RankedExample,
    pad_right,
    prompt_ids,
    response_ids,
    tokenize_comparisons,
)
from instructrl.errors import UserError
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.loading import load_reward_model, load_tokenizer
from instructrl.models.lora import ADAPTER_DIR
from instructrl.models.scoring import ScalarHead, add_reward_bias, score
from instructrl.reward.config import RMConfig
from instructrl.reward.summary import RMSummary
from instructrl.training.loop import SupervisedTask
from instructrl.training.losses import rank_forward
from instructrl.training.runtime import attention_implementation, eval_batches, shard, stage
from instructrl.training.sharding import is_sharded
from instructrl.training.stage import StageRun


@torch.no_grad()
def evaluate_rankings(
    model,
    examples: Sequence[RankedExample],
    pad_id: int,
    accelerator,
    batch_size: int = 16,
    share_prompt: bool = True,
):
    """Validation loss (mean over prompts) and pairwise accuracy (over all pairs)."""
    model.eval()
    total = torch.zeros(
        4, dtype=torch.float64, device=accelerator.device
    )  # loss sum, prompts, correct, pairs
    for batch_idx in eval_batches(
        len(examples),
        accelerator.num_processes,
        accelerator.process_index,
        batch_size,
        lockstep=is_sharded(model),
    ):
        batch = [examples[i] for i in batch_idx or [0]]  # an empty one is a stand-in pass (eval_batches)
        with accelerator.autocast():
            loss_sum, correct, pairs = rank_forward(model, batch, pad_id, accelerator.device, share_prompt)
        if not batch_idx:
            continue
        total += torch.tensor(
            [loss_sum.item(), len(batch), correct, pairs], dtype=torch.float64, device=total.device
        )
    if accelerator.num_processes > 1:
        total = accelerator.reduce(total, "sum")
    return {"val/loss": (total[0] / total[1]).item(), "val/accuracy": (total[2] / total[3]).item()}


def rm_task(
    train: list[RankedExample], val: list[RankedExample], pad_id: int, accelerator, share_prompt: bool
) -> SupervisedTask:
    def micro_loss(model, mb: list[int], n_prompts: float):
        batch = [train[i] for i in mb]
        loss_sum, correct, pairs = rank_forward(model, batch, pad_id, accelerator.device, share_prompt)
        return loss_sum / n_prompts, {"loss_sum": loss_sum.item(), "correct": correct, "pairs": pairs}

    def train_metrics(sums: dict[str, float], n_prompts: float) -> dict[str, float]:
        return {"train/loss": sums["loss_sum"] / n_prompts, "train/accuracy": sums["correct"] / sums["pairs"]}

    return SupervisedTask(
        n_train=len(train),
        normalizer=lambda batch: float(len(batch)),
        micro_loss=micro_loss,
        train_metrics=train_metrics,
        evaluate=lambda model: evaluate_rankings(model, val, pad_id, accelerator, share_prompt=share_prompt),
        select_key="val/loss",
        select_higher=False,
    )


@torch.no_grad()
def mean_reward(
    model, sequences: Sequence[list[int]], pad_id: int, accelerator, batch_size: int = 32
) -> float:
    model.eval()
    idx = shard(range(len(sequences)), accelerator.num_processes, accelerator.process_index)
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for s in range(0, len(idx), batch_size):
        ids, mask = pad_right([sequences[i] for i in idx[s : s + batch_size]], pad_id)
        with accelerator.autocast():
            r = score(model, ids.to(accelerator.device), mask.to(accelerator.device))
        total += torch.tensor([r.sum().item(), len(r)], dtype=torch.float64, device=total.device)
    if accelerator.num_processes > 1:
        total = accelerator.reduce(total, "sum")
    return (total[0] / total[1]).item()


def round_weights(comparisons: Sequence[Comparison], latest_weight: float) -> tuple[list[float], int]:
    """Each comparison's weight in the loss (`latest_weight` for the newest round's, 1 for the others) and
    the newest round (comparisons without a round are round 1)."""
    rounds = [c.round or 1 for c in comparisons]
    latest = max(rounds, default=1)
    return [latest_weight if r == latest else 1.0 for r in rounds], latest


@stage
def run_rm(
    *,
    model_dir: str | Path | None = None,
    data: Any,
    out: str | Path,
    config: RMConfig,
    init_dir: str | Path | None = None,
    val_data: Any = None,
    norm_data: Any = None,
    resume: bool = False,
    changed_keys: set[str] | None = None,
) -> dict[str, Any]:
    """A reward model from the SFT model in `model_dir` (InstructGPT), or continued from an earlier round's
    reward model in `init_dir` on the comparisons so far (ChatGPT's loop)."""
    changed_keys = changed_keys or set()
    if (model_dir is None) == (init_dir is None):
        raise UserError(
            "give the SFT model (--model SFT_DIR) or an earlier reward model (--init RM_DIR), not both"
        )
    start = model_dir if init_dir is None else init_dir
    assert start is not None
    saved = CheckpointMeta.find(start)
    if "prompt_template" not in changed_keys and saved is not None:
        config.prompt_template = saved.prompt_template  # the SFT model's own format
    start_meta = saved or CheckpointMeta()
    run = StageRun(out, config, resume=resume, changed_keys=changed_keys)
    config, accelerator = run.config, run.accelerator

    # 1. data
    tokenizer = load_tokenizer(start)
    train_c, val_c = run.train_val(read_comparisons, data, val_data)
    weights, latest_round = round_weights(train_c, config.latest_round_weight)
    norm_demos = read_demonstrations(norm_data) if norm_data is not None else None
    attention = attention_implementation(accelerator)
    rm: torch.nn.Module = load_reward_model(start, attn_implementation=attention)
    # with LoRA the backbone gets adapters and the scalar head, new here, trains whole
    model: torch.nn.Module = ScalarHead(run.adapt(rm, "SEQ_CLS"))
    max_length = run.max_length(start)
    tok = (tokenizer, config.prompt_template, max_length, config.too_long)
    train, train_stats = tokenize_comparisons(train_c, *tok, weights=weights)
    val, val_stats = tokenize_comparisons(val_c, *tok)

    # 2. train on all C(K,2) pairs of each prompt at once
    sft_model = str(model_dir) if init_dir is None else start_meta.sft_model
    meta = CheckpointMeta(
        stage="rm",
        prompt_template=config.prompt_template,
        sft_model=sft_model,
        round=latest_round,
        lora_r=config.lora_r,
        # the reward models this one continues, round by round
        lineage=[
            *start_meta.lineage,
            {"stage": "rm", "round": latest_round, "init": str(start), "comparisons": len(train_c)},
        ],
    )
    task = rm_task(train, val, tokenizer.pad_token_id, accelerator, config.share_prompt)
    result = run.train(model, task, tokenizer=tokenizer, meta=meta, desc="rm")

    # 3. the best model, normalised so that reference responses score 0 on average
    accelerator.wait_for_everyone()
    best = load_reward_model(result["best_dir"], attn_implementation=attention).to(accelerator.device)
    val_metrics = evaluate_rankings(
        best, val, tokenizer.pad_token_id, accelerator, share_prompt=config.share_prompt
    )
    bias, where, reference = 0.0, None, None
    if config.normalize:
        if norm_demos is not None:
            reference = "demonstrations"
            seqs = [
                prompt_ids(tokenizer, d.conversation, config.prompt_template)
                + response_ids(tokenizer, d.response, d.conversation)
                for d in norm_demos
            ]
        else:
            reference = "best-ranked responses of the training comparisons"
            seqs = [e.sequences[e.pairs[0][0]] if e.pairs else e.sequences[0] for e in train]
        seqs = [s[:max_length] for s in seqs]
        bias = -mean_reward(best, seqs, tokenizer.pad_token_id, accelerator)
        where = add_reward_bias(best, bias)
        meta = meta.model_copy(
            update=dict(reward_bias=bias, reward_bias_stored_in=where, reward_bias_reference=reference)
        )
    run.save_final(best, tokenizer, meta)
    if accelerator.is_main_process:
        import shutil

        # LoRA: the best epoch's adapter too; the normalising bias, added after training, is in the merged
        # weights and in instructrl.json (reward_bias), not in the adapter
        if (result["best_dir"] / ADAPTER_DIR).is_dir():
            shutil.copytree(result["best_dir"] / ADAPTER_DIR, run.dir.path / "final" / ADAPTER_DIR)
        shutil.rmtree(result["best_dir"], ignore_errors=True)
    summary = RMSummary(
        val_accuracy=val_metrics["val/accuracy"],
        val_loss=val_metrics["val/loss"],
        bias=bias,
        bias_reference=reference,
        best_step=result["best_step"],
        steps=result["steps"],
        round=latest_round,
        init=str(start),
        train_prompts=len(train),
        train_pairs=sum(len(e.pairs) for e in train),
        val_prompts=len(val),
        skipped_too_long=train_stats.skipped_too_long + val_stats.skipped_too_long,
        truncated=train_stats.truncated + val_stats.truncated,
        max_length=max_length,
        **run.facts(),
    )
    return run.finish(summary)
