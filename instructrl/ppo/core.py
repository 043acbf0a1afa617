"""PPO's math for RLHF, in the paper's names. Imports only torch, so every piece is unit-tested alone.

Shapes: B episodes, R response tokens (right-padded; `mask` is 1 up to and including EOS).
Losses are returned as sums over tokens divided by a given `normalizer` (the global token count of the
minibatch), so that any split across processes and micro-batches gives the same update.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (biased variance, as in lm-human-preferences)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_penalised_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token reward: -β·(log π_RL - log π_SFT) on every token, plus the RM score on the last one.

    scores: (B,), logprobs/ref_logprobs/mask: (B, R). Returns (rewards, non_score_reward, kl), each (B, R).
    """
    kl = (logprobs - ref_logprobs) * mask  # (B, R)
    non_score_reward = -kl_coef * kl  # (B, R)
    last = mask.sum(-1).long().clamp(min=1) - 1  # (B,) index of each response's last token
    rewards = non_score_reward.clone()
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards, non_score_reward, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) as one matrix product instead of a loop.

    δ_t = r_t + γ V_{t+1} - V_t (V = 0 after the last token);  A_t = Σ_{s≥t} (γλ)^{s-t} δ_s;  returns = A + V.
    rewards, values, mask: (B, R). Returns (advantages, returns), each (B, R), zero past the end.
    """
    values = values * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # (B, R)
    deltas = (rewards + gamma * next_values - values) * mask  # (B, R)
    R = rewards.shape[1]
    t = torch.arange(R, device=rewards.device, dtype=torch.float64)
    power = t.unsqueeze(0) - t.unsqueeze(1)  # (R, R): s - t
    discount = torch.where(power >= 0, (gamma * lam) ** power.clamp(min=0), 0.0)  # (R, R) upper-triangular
    advantages = (deltas.double() @ discount.T).to(rewards.dtype) * mask  # (B, R)
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    normalizer: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate: mean of max(-A·ratio, -A·clip(ratio, 1-ε, 1+ε)) over response tokens."""
    logratio = logprobs - old_logprobs  # (B, R)
    ratio = torch.exp(logratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = (torch.maximum(pg_losses, pg_losses_clipped) * mask).sum() / normalizer
    with torch.no_grad():
        stats = {
            "clipped": ((pg_losses_clipped > pg_losses).float() * mask).sum().item(),
            "approxkl": (0.5 * logratio**2 * mask).sum().item(),  # http://joschu.net/blog/kl-approx.html
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
    normalizer: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: 0.5·max((V - G)², (clip(V, V_old ± ε) - G)²), mean over response tokens."""
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses = (values - returns) ** 2
    vf_losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * (torch.maximum(vf_losses, vf_losses_clipped) * mask).sum() / normalizer
    with torch.no_grad():
        stats = {"clipped": ((vf_losses_clipped > vf_losses).float() * mask).sum().item()}
    return loss, stats


class FixedKLController:
    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences"): move β so that the
    KL stays near `target`, by at most 20% of the proportional error per `horizon` episodes."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
