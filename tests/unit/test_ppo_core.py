"""PPO's math against hand-computed examples."""

import math

import pytest
import torch

from instructrl.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    kl_penalised_rewards,
    masked_whiten,
    policy_loss,
    value_loss,
)


def gae_loop(rewards, values, mask, gamma, lam):
    """The textbook backward recursion, for reference."""
    B, R = rewards.shape
    adv = torch.zeros_like(rewards)
    for b in range(B):
        last = 0.0
        n = int(mask[b].sum())
        for t in reversed(range(n)):
            next_v = values[b, t + 1] if t + 1 < n else 0.0
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
    return adv, (adv + values) * mask


def test_gae_hand_example():
    # one episode of 3 tokens: r = [0, 0, 1], V = [0.5, 0.2, 0.1], γ = 1, λ = 0.5
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.2, 0.1]])
    m = torch.ones(1, 3)
    adv, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    # δ = [0 + 0.2 - 0.5, 0 + 0.1 - 0.2, 1 + 0 - 0.1] = [-0.3, -0.1, 0.9]
    # A2 = 0.9; A1 = -0.1 + 0.5*0.9 = 0.35; A0 = -0.3 + 0.5*0.35 = -0.125
    assert adv.tolist()[0] == pytest.approx([-0.125, 0.35, 0.9])
    assert ret.tolist()[0] == pytest.approx([0.375, 0.55, 1.0])


def test_gae_matches_the_recursion_with_padding():
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    m = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6]).float()
    adv, ret = gae(r, v, m, gamma=0.99, lam=0.95)
    ref_adv, ref_ret = gae_loop(r, v * m, m, 0.99, 0.95)
    assert torch.allclose(adv, ref_adv, atol=1e-5) and torch.allclose(ret, ref_ret, atol=1e-5)
    assert (adv[m == 0] == 0).all()


def test_kl_penalty_on_every_token_and_score_on_the_last():
    scores = torch.tensor([2.0, -1.0])
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -0.3, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -0.9, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, non_score, kl = kl_penalised_rewards(scores, logp, ref, mask, kl_coef=0.1)
    close = lambda a, b: torch.allclose(a, torch.tensor(b), atol=1e-6)  # noqa: E731
    assert close(kl, [[0.5, -1.0, 0.0], [-0.1, 0.6, 0.0]])
    assert close(non_score, [[-0.05, 0.1, 0.0], [0.01, -0.06, 0.0]])
    # the score lands on each episode's last response token (index 2 and index 1)
    assert close(rewards, [[-0.05, 0.1, 2.0], [0.01, -1.06, 0.0]])


def test_clipped_policy_loss_hand_values():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.7, 1.1]]))  # ratios 1.5, 0.7, 1.1
    adv = torch.tensor([[1.0, -2.0, 3.0]])
    mask = torch.ones(1, 3)
    loss, stats = policy_loss(new, old, adv, mask, cliprange=0.2, normalizer=3.0)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(1.4, 1.6) = 1.6 (clipped); token 2: max(-3.3, -3.3)
    assert loss.item() == pytest.approx((-1.2 + 1.6 - 3.3) / 3, rel=1e-5)
    assert stats["clipped"] == 2
    expected_kl = 0.5 * sum(math.log(x) ** 2 for x in (1.5, 0.7, 1.1))
    assert stats["approxkl"] == pytest.approx(expected_kl, rel=1e-5)


def test_clipped_value_loss_hand_values():
    old = torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[1.5, 0.9]])
    ret = torch.tensor([[2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0]])
    loss, stats = value_loss(new, old, ret, mask, cliprange_value=0.2, normalizer=2.0)
    # token 0: unclipped (1.5-2)^2 = 0.25, clipped (1.2-2)^2 = 0.64 -> 0.64; token 1: 0.81 vs 0.81 -> 0.81
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert stats["clipped"] == 1


def test_adaptive_kl_controller_update():
    ctl = AdaptiveKLController(kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=64)  # error 0.5 clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    ctl.update(current_kl=5.4, n_steps=100)  # error -0.1
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000) * (1 - 0.1 * 100 / 10000))
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05


def test_masked_whiten_uses_only_masked_entries():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, m)
    assert w[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert (w[0, :3] ** 2).mean().item() == pytest.approx(1.0, rel=1e-4)
    assert w[0, 3].item() == 0.0
