"""Step 6 of a PPO iteration: PPO epochs over the rollout in minibatches (`ppo_epochs`), one optimizer step of
the policy and the value model each (`ppo_update`), with PPO-ptx's pretraining batches (`ptx_batch_rows`);
and the iteration's metrics (`iteration_metrics`)."""

from __future__ import annotations

import contextlib
import functools

import torch

from instructrl.datasets.tokenize import Example
from instructrl.models.generation import mix_seed
from instructrl.models.scoring import entropy_from_logits, response_logits, token_logprobs, values
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.core import policy_loss, value_loss
from instructrl.ppo.rollout import Rollout
from instructrl.ppo.setup import PPOSetup
from instructrl.training.loop import add_sums, reduce_sums
from instructrl.training.losses import batch_nll, length_groups
from instructrl.training.optim import clip_grad_norms
from instructrl.training.runtime import micro_batch_size
from instructrl.training.sharding import clip_grad_norm, gradient_sync


def ppo_epochs(
    s: PPOSetup, r: Rollout, advantages: torch.Tensor, returns: torch.Tensor, it: int, step: int
) -> dict[str, float]:
    """config.epochs passes over the rollout in seeded minibatches, one optimizer step each."""
    c = s.config
    sums: dict[str, float] = {}
    for ppo_epoch in range(c.epochs):
        g = torch.Generator().manual_seed(mix_seed(c.seed, it, ppo_epoch))
        perm = torch.randperm(c.rollout_batch_size, generator=g)  # (B,)
        for k in range(c.minibatches):
            mb = perm[k * c.batch_size : (k + 1) * c.batch_size].tolist()
            ptx = [s.ptx_train[x] for x in ptx_batch_rows(step, len(s.ptx_train), s.ptx_batch, c)]
            add_sums(sums, ppo_update(s, r, advantages, returns, mb, ptx))
            step += 1
    return reduce_sums(s.accelerator, sums)


def iteration_metrics(
    s: PPOSetup, r: Rollout, sums: dict[str, float], non_score_reward: torch.Tensor, mean_kl: float
) -> dict[str, float]:
    updates = s.steps_per_iteration * s.accelerator.num_processes  # grad norms were summed over both
    metrics = {
        "objective/scores": r.scores.mean().item(),
        "objective/raw_scores": r.raw_scores.mean().item(),
        "objective/kl": mean_kl,
        "objective/kl_coef": s.kl_ctl.value,
        "objective/non_score_reward": non_score_reward.sum(-1).mean().item(),
        "objective/rlhf_reward": (r.scores + non_score_reward.sum(-1)).mean().item(),
        "losses/policy": sums["pg_loss"] / sums["tokens"],
        "losses/value": sums["vf_loss"] / sums["tokens"],
        "policy/clipfrac": sums["pg_clipped"] / sums["tokens"],
        "policy/approxkl": sums["approxkl"] / sums["tokens"],
        "policy/entropy": sums["entropy"] / sums["tokens"],
        "policy/grad_norm": sums["policy_grad_norm"] / updates,
        "value/clipfrac": sums["vf_clipped"] / sums["tokens"],
        "value/grad_norm": sums["value_grad_norm"] / updates,
        "response/length": r.mask.float().sum(-1).mean().item(),
        "response/width": float(r.response.shape[1]),
        "response/eos_fraction": r.has_eos.float().mean().item(),
        "train/lr": s.scheduler.get_last_lr()[0],
    }
    if "ptx_tokens" in sums:
        metrics["ptx/loss"] = sums["ptx_nll"] / max(sums["ptx_tokens"], 1)
    return metrics


# ---------------------------------------------------------------------------------------------------------
# 6. one PPO minibatch update
# ---------------------------------------------------------------------------------------------------------
def ppo_update(
    s: PPOSetup,
    r: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mb: list[int],
    ptx_examples: list[Example],
) -> dict[str, float]:
    """One optimizer step of the policy and the value model on global minibatch rows `mb`.

    Every process holds the whole rollout, takes every world-th row of the minibatch, and normalises the
    losses by the global token counts, so the step is the same for any number of processes. Sharded, every
    process runs as many forward and backward passes as the others (each gathers from all of them): its rows
    in passes of `micro` in order, not by length, and stand-in PPO-ptx passes where its share is shorter.
    """
    c, acc = s.config, s.accelerator
    policy, value_model = s.policy, s.value_model
    world, rank = acc.num_processes, acc.process_index
    policy.train()
    value_model.train()
    micro = micro_batch_size(c, world)
    mask = r.mask.float()  # (B, R)
    norm = mask[mb].sum().item()  # response tokens in the global minibatch
    mine = mb[rank::world]
    if s.sharded:
        micros = [mine[i : i + micro] for i in range(0, len(mine), micro)]
    else:  # passes of rows of similar length
        lengths = (r.query_mask[mine].sum(-1) + r.mask[mine].sum(-1)).tolist()
        micros = [[mine[i] for i in g] for g in length_groups(lengths, micro)]
    ptx_norm = float(sum(len(e.input_ids) - 1 for e in ptx_examples))  # their target tokens
    ptx_mine = ptx_examples[rank::world]
    ptx_micros = [ptx_mine[i : i + micro] for i in range(0, len(ptx_mine), micro)]
    if s.sharded:  # as many passes as the largest share needs; an empty one is a stand-in (eval_batches)
        largest = -(-len(ptx_examples) // world)  # ceil
        ptx_micros += [[] for _ in range(-(-largest // micro) - len(ptx_micros))]

    def autocast() -> contextlib.AbstractContextManager[None]:  # prepared models autocast their own forward
        return acc.autocast() if s.sharded else contextlib.nullcontext()

    sums: dict[str, float] = {}

    for j, rows in enumerate(micros):
        last = j == len(micros) - 1
        # sync gradients on each model's last backward only
        with (
            gradient_sync(acc, value_model, last),
            gradient_sync(acc, policy, last and not ptx_micros),
        ):
            ids, attn, p, n = r.trimmed(rows)  # (b, p + n)
            with autocast():
                logits = response_logits(policy, ids, attn, n)  # (b, n, V)
                new_values = values(value_model, ids, attn)[:, p - 1 : p + n - 1]  # (b, n)
            logits = logits.float() / c.temperature  # (b, n, V)
            new_logprobs = token_logprobs(logits, r.response[rows, :n])  # (b, n)
            m = mask[rows, :n]  # (b, n)
            pg_loss, pg_stats = policy_loss(
                new_logprobs, r.logprobs[rows, :n], advantages[rows, :n], m, c.cliprange, norm
            )
            vf_loss, vf_stats = value_loss(
                new_values, r.values[rows, :n], returns[rows, :n], m, c.cliprange_value, norm
            )
            acc.backward((pg_loss + vf_loss) * world)
        with torch.no_grad():
            entropy = (entropy_from_logits(logits) * m).sum().item()
        add_sums(
            sums,
            {
                "pg_loss": pg_loss.item() * norm,
                "vf_loss": vf_loss.item() * norm,
                "pg_clipped": pg_stats["clipped"],
                "vf_clipped": vf_stats["clipped"],
                "approxkl": pg_stats["approxkl"],
                "entropy": entropy,
                "tokens": m.sum().item(),
            },
        )

    # PPO-ptx: γ · language-model loss on pretraining text, added to the policy's objective
    if ptx_examples:  # every process reports the keys, also one whose share of the batch is empty
        add_sums(sums, {"ptx_nll": 0.0, "ptx_tokens": 0.0})
    for j, examples in enumerate(ptx_micros):
        with gradient_sync(acc, policy, j == len(ptx_micros) - 1):
            with autocast():
                nll, n = batch_nll(
                    policy, examples or ptx_examples[:1], s.tokenizer.pad_token_id, acc.device, s.sharded
                )
            acc.backward(c.ptx_coef * nll / ptx_norm * world * (1.0 if examples else 0.0))
        if examples:
            add_sums(sums, {"ptx_nll": nll.item(), "ptx_tokens": n})

    if s.sharded:  # fp16's loss scaling is refused with sharding: nothing to unscale
        policy_norm, value_norm = (clip_grad_norm(acc, m, c.max_grad_norm) for m in (policy, value_model))
    else:
        policy_norm, value_norm = clip_grad_norms(acc, [policy, value_model], c.max_grad_norm)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    add_sums(sums, {"policy_grad_norm": policy_norm, "value_grad_norm": value_norm})
    return sums


def ptx_batch_rows(step: int, n: int, ptx_batch: int, config: PPOConfig) -> list[int]:
    """Pretraining sequences for optimizer step `step`: consecutive slices of seeded per-epoch permutations,
    a function of the step alone (so a resumed run reads the same text)."""
    if n == 0 or config.ptx_coef <= 0:
        return []
    rows = []
    for pos in range(step * ptx_batch, (step + 1) * ptx_batch):
        epoch, i = divmod(pos, n)
        rows.append(_ptx_permutation(n, config.seed, epoch)[i])
    return rows


@functools.lru_cache(maxsize=2)
def _ptx_permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(mix_seed(seed, 0x9742, epoch))
    return torch.randperm(n, generator=g).tolist()
