"""The InstructGPT reward-model loss (Ouyang et al. 2022, eq. 1). Imports only torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    rewards: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor, prompt_of_pair: torch.Tensor
) -> torch.Tensor:
    """Sum over prompts of  -1/C(K,2) * sum over the prompt's pairs of log sigmoid(r(x, y_w) - r(x, y_l)).

    rewards: (N,) one reward per response (each response scored once, however many pairs it is in).
    Divide by the number of prompts for the paper's loss; the trainer divides by the global batch's.
    """
    logits = rewards[winners] - rewards[losers]  # (P,)
    pairs_of_prompt = torch.bincount(prompt_of_pair).to(rewards.dtype)  # (prompts,) = C(K,2) each
    weight = 1.0 / pairs_of_prompt[prompt_of_pair]  # (P,)
    return -(weight * F.logsigmoid(logits)).sum()
