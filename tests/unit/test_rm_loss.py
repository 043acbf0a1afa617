"""The reward-model loss against hand-computed values, and its cost: K forward rows per prompt."""

import math

import pytest
import torch

from instructrl.training.losses import ranking_loss_sum, ranking_pairs


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_loss_weights_each_prompt_by_one_over_c_k_2():
    # prompt A: K=3, ranking best->worst = [2, 0, 1]; prompt B: K=2, ranking [1, 0]
    r = torch.tensor([0.5, -1.0, 2.0, 0.3, 0.1])  # A's three rewards, then B's two
    pairs_a = [(2, 0), (2, 1), (0, 1)]
    pairs_b = [(1, 0)]
    w, l_, g = ranking_pairs([pairs_a, pairs_b], [3, 2])
    assert w.tolist() == [2, 2, 0, 4] and l_.tolist() == [0, 1, 1, 3] and g.tolist() == [0, 0, 0, 1]

    loss_a = -(logsig(2.0 - 0.5) + logsig(2.0 + 1.0) + logsig(0.5 + 1.0)) / 3  # 1/C(3,2)
    loss_b = -logsig(0.1 - 0.3) / 1  # 1/C(2,2)
    got = ranking_loss_sum(r, w, l_, g).item()
    assert got == pytest.approx(loss_a + loss_b, rel=1e-6)
    # by hand: A = (0.2014 + 0.0486 + 0.2014) / 3 = 0.1505; B = log(1 + e^0.2) = 0.7981
    assert got == pytest.approx(0.1505 + 0.7981, abs=1e-4)


def test_a_later_rounds_weight_multiplies_its_prompts_loss():
    from instructrl.datasets.records import Comparison
    from instructrl.reward.train import round_weights

    r = torch.tensor([0.5, -1.0, 2.0, 0.3, 0.1])
    w, l_, g = ranking_pairs([[(2, 0), (2, 1), (0, 1)], [(1, 0)]], [3, 2])
    loss_a = -(logsig(2.0 - 0.5) + logsig(2.0 + 1.0) + logsig(0.5 + 1.0)) / 3
    loss_b = -logsig(0.1 - 0.3)
    got = ranking_loss_sum(r, w, l_, g, torch.tensor([1.0, 3.0])).item()
    assert got == pytest.approx(loss_a + 3 * loss_b, rel=1e-6)

    def cmp(round_):
        return Comparison(prompt="p", responses=["a", "b", "c", "d"], ranking=[0, 1, 2, 3], round=round_)

    # no round is round 1; the newest round present gets the weight
    assert round_weights([cmp(None), cmp(2), cmp(1), cmp(2)], 3.0) == ([1.0, 3.0, 1.0, 3.0], 2)
    assert round_weights([cmp(None), cmp(None)], 3.0) == ([3.0, 3.0], 1)


def test_comparison_pairs_come_from_the_ranking():
    from instructrl.datasets.records import Comparison

    c = Comparison(prompt="p", responses=["a", "b", "c", "d"], ranking=[3, 1, 0, 2])
    assert c.pairs() == [(3, 1), (3, 0), (3, 2), (1, 0), (1, 2), (0, 2)]
    assert len(c.pairs()) == math.comb(4, 2)


def test_a_k_response_prompt_costs_k_forward_rows(sft_dir):
    """Each of the K responses goes through the model once, not once per pair (C(6,2) = 15 pairs), after
    its prompt, which goes through once for all of them."""
    from accelerate import Accelerator

    from instructrl.datasets.records import Comparison
    from instructrl.datasets.tokenize import tokenize_comparisons
    from instructrl.models.loading import load_reward_model, load_tokenizer
    from instructrl.training.losses import rank_forward

    tok = load_tokenizer(sft_dir)
    model = load_reward_model(sft_dir)
    c = Comparison(
        prompt="write a", responses=["a b", "c", "d e f", "a", "b b", "c c"], ranking=[5, 4, 3, 2, 1, 0]
    )
    examples, _ = tokenize_comparisons([c], tok, "{prompt}\n", 64, "error")
    rows = []
    model.base_model.register_forward_hook(
        lambda m, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    loss, correct, pairs = rank_forward(model, examples, tok.pad_token_id, Accelerator(cpu=True).device)
    assert rows[0] == 1 and sum(rows[1:]) == 6  # the prompt, then the 6 responses (in passes by length)
    assert pairs == 15 and 0 <= correct <= 15 and loss.item() > 0
