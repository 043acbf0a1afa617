"""The losses more than one stage computes, defined once below them all.

- the language-model loss: SFT and pretraining train on it, PPO-ptx mixes it into the policy loss, and the
  evaluation measures the alignment tax with it;
- the reward model's ranking loss (Ouyang et al. 2022, eq. 1): the RM trains on it, the evaluation reports
  its pairwise accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from instructrl.datasets.tokenize import Example, RankedExample, pad_right
from instructrl.models.generation import left_pad
from instructrl.models.scoring import (
    SharedPrompts,
    position_ids_from_mask,
    score,
    score_shared_prompts,
    token_logprobs,
)
from instructrl.training.runtime import eval_batches
from instructrl.training.sharding import is_sharded

# ---- batching -----------------------------------------------------------------------------------------------
LENGTH_GROUPS = 4
"""A batch whose rows differ in length may run in up to this many forward passes of rows of similar length, each
padded to its own longest row rather than the batch's; the summed losses and their gradients are those of one
pass. See length_groups for when it does."""
PASS_OVERHEAD_TOKENS = 256
"""What a forward + backward pass costs beyond its tokens, in padded tokens. Measured on the demo's 4-layer
policy on 2 CPU cores: ~150 (PPO-ptx's pretraining batches: 16 documents in 1, 2, 4 passes took 158, 120,
113 ms; a PPO minibatch of policy and value model 136, 136, 172 ms)."""


def length_groups(lengths: Sequence[int], max_rows: int | None = None) -> list[list[int]]:
    """Indices into `lengths` in passes of at most `max_rows` rows: the fewest passes that fit, or up to
    LENGTH_GROUPS passes of rows sorted by length when that saves more padded tokens than the passes cost
    (PASS_OVERHEAD_TOKENS each). One pass keeps the rows' order."""
    n = len(lengths)
    if n == 0:
        return []
    fewest = -(-n // (max_rows or n))  # ceil
    order = torch.tensor(sorted(range(n), key=lambda i: lengths[i]))

    def cost(passes: int) -> int:
        return sum(
            len(g) * max(lengths[i] for i in g.tolist()) + PASS_OVERHEAD_TOKENS
            for g in order.tensor_split(passes)
        )

    passes = min(range(fewest, max(fewest, min(n, LENGTH_GROUPS)) + 1), key=cost)
    if passes == 1:
        return [list(range(n))]
    return [g.tolist() for g in order.tensor_split(passes)]


# ---- language modelling ----------------------------------------------------------------------------------
def batch_nll(
    model: torch.nn.Module,
    examples: Sequence[Example],
    pad_id: int,
    device: torch.device,
    one_pass: bool = False,
) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the target tokens (from n_prompt on) and their count. Examples of
    different lengths run in passes by length (length_groups), or in `one_pass` (a sharded model: every
    process must run as many forward passes as the others)."""
    total, count = torch.zeros((), device=device), 0
    groups = [list(range(len(examples)))] if one_pass else length_groups([len(e.input_ids) for e in examples])
    for group in groups:
        part = [examples[i] for i in group]
        ids, mask = pad_right([e.input_ids for e in part], pad_id)  # (b, T)
        targets = torch.zeros_like(mask)
        for b, e in enumerate(part):
            targets[b, e.n_prompt : len(e.input_ids)] = 1  # response tokens (all tokens for plain text)
        ids, mask, targets = ids.to(device), mask.to(device), targets.to(device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        logp = token_logprobs(logits[:, :-1], ids[:, 1:])  # (b, T-1): log p(token t+1 | tokens <= t)
        tmask = targets[:, 1:].float()  # (b, T-1)
        total = total - (logp * tmask).sum()
        count += int(tmask.sum().item())
    return total, count


@torch.no_grad()
def eval_loss(
    model, examples: Sequence[Example], pad_id: int, accelerator: Any, batch_size: int = 16
) -> float:
    """Mean per-token NLL over `examples`, each process taking a shard, summed across processes."""
    model.eval()
    sharded = is_sharded(model)
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for batch in eval_batches(
        len(examples), accelerator.num_processes, accelerator.process_index, batch_size, lockstep=sharded
    ):
        with accelerator.autocast():
            nll, n = batch_nll(
                model, [examples[i] for i in batch or [0]], pad_id, accelerator.device, sharded
            )
        if batch:  # an empty one is a stand-in pass (eval_batches)
            total += torch.tensor([nll.item(), n], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        total = accelerator.reduce(total, "sum")
    return (total[0] / total[1].clamp(min=1)).item()


# ---- ranking -----------------------------------------------------------------------------------------------
def ranking_pairs(
    pairs_per_prompt: list[list[tuple[int, int]]], sizes: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten per-prompt (better, worse) pairs into indices of one reward vector holding every prompt's
    K responses back to back, plus each pair's prompt index. Returns (winners, losers, prompt_of_pair)."""
    winners, losers, prompt_of_pair, offset = [], [], [], 0
    for p, (pairs, k) in enumerate(zip(pairs_per_prompt, sizes, strict=True)):
        for better, worse in pairs:
            winners.append(offset + better)
            losers.append(offset + worse)
            prompt_of_pair.append(p)
        offset += k
    return torch.tensor(winners), torch.tensor(losers), torch.tensor(prompt_of_pair)


def ranking_loss_sum(
    rewards: torch.Tensor,
    winners: torch.Tensor,
    losers: torch.Tensor,
    prompt_of_pair: torch.Tensor,
    prompt_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over prompts of  -w/C(K,2) * sum over the prompt's pairs of log sigmoid(r(x, y_w) - r(x, y_l)).

    rewards: (N,) one reward per response (each response scored once, however many pairs it is in).
    prompt_weights: (prompts,) w of each prompt (default 1: the paper's loss).
    Divide by the number of prompts for the paper's loss; the trainer divides by the global batch's.
    """
    logits = rewards[winners] - rewards[losers]  # (P,)
    pairs_of_prompt = torch.bincount(prompt_of_pair).to(rewards.dtype)  # (prompts,) = C(K,2) each
    weight = 1.0 / pairs_of_prompt[prompt_of_pair]  # (P,)
    if prompt_weights is not None:
        weight = weight * prompt_weights.to(rewards)[prompt_of_pair]
    return -(weight * F.logsigmoid(logits)).sum()


def rank_forward(
    model, examples: Sequence[RankedExample], pad_id: int, device: torch.device, share_prompt: bool = True
):
    """Score every response of every prompt in one batch; returns (loss sum, correct pairs, pairs).

    With `share_prompt`, each prompt runs through the transformer once for its K responses (a cache they all
    continue), not K times: the same rewards, for a fraction of the work when prompts are longer than
    responses. Without it each row is prompt+response.
    """
    sizes = [len(e.sequences) for e in examples]
    if share_prompt:
        prompt_ids, prompt_mask = left_pad(
            [e.sequences[0][: e.n_prompt] for e in examples], pad_id
        )  # (B, Tp)
        of_row = torch.repeat_interleave(torch.arange(len(examples)), torch.tensor(sizes))  # (N,)
        ids, mask = pad_right([s[e.n_prompt :] for e in examples for s in e.sequences], pad_id)  # (N, R)
        prompts = SharedPrompts(prompt_ids, prompt_mask, of_row).to(device)
        rewards = score_shared_prompts(model, prompts, ids.to(device), mask.to(device))  # (N,)
    else:
        ids, mask = pad_right([s for e in examples for s in e.sequences], pad_id)  # (N, T)
        rewards = score(model, ids.to(device), mask.to(device))  # (N,)
    winners, losers, prompt_of_pair = ranking_pairs([e.pairs for e in examples], sizes)
    prompt_weights = torch.tensor([e.weight for e in examples])  # (prompts,)
    loss_sum = ranking_loss_sum(rewards, winners, losers, prompt_of_pair, prompt_weights)
    correct = (rewards[winners] > rewards[losers]).sum().item()
    return loss_sum, correct, len(winners)
