"""SFT's loss covers response tokens only."""

import pytest
import torch

from instructrl.datasets.records import Demonstration
from instructrl.datasets.tokenize import tokenize_demonstrations
from instructrl.models.loading import load_causal_lm, load_tokenizer
from instructrl.training.losses import batch_nll, length_groups


def test_loss_counts_response_tokens_only(tiny_model_dir):
    tok, lm = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, dropout=False).eval()
    demo = Demonstration(prompt="say cat twice", response="cat cat")
    (ex,), _ = tokenize_demonstrations([demo], tok, "{prompt}\n", 64, "error")
    n_resp = len(tok("cat cat", add_special_tokens=False).input_ids) + 1  # + EOS
    assert len(ex.input_ids) - ex.n_prompt == n_resp
    with torch.no_grad():
        nll, n = batch_nll(lm, [ex], tok.pad_token_id, torch.device("cpu"))
        logits = lm(input_ids=torch.tensor([ex.input_ids])).logits[0]
        logp = torch.log_softmax(logits, -1)
        # by hand: the response tokens are predicted from positions n_prompt-1 .. end-1
        want = -sum(logp[t - 1, ex.input_ids[t]] for t in range(ex.n_prompt, len(ex.input_ids)))
    assert n == n_resp
    assert torch.allclose(nll, want, atol=1e-4)


def test_no_gradient_reaches_positions_that_predict_prompt_tokens(tiny_model_dir):
    """The loss gradient reaches the logits of response positions only."""
    tok, lm = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, dropout=False).eval()
    (ex,), _ = tokenize_demonstrations(
        [Demonstration(prompt="write a long prompt here", response="ok")], tok, "{prompt}\n", 64, "error"
    )
    logits_grad = []

    def keep_grad(module, inputs, output):
        output.register_hook(logits_grad.append)

    h = lm.lm_head.register_forward_hook(keep_grad)
    nll, _ = batch_nll(lm, [ex], tok.pad_token_id, torch.device("cpu"))
    nll.backward()
    h.remove()
    g = logits_grad[0][0].abs().sum(-1)  # (T,) gradient mass per position
    assert (g[: ex.n_prompt - 1] == 0).all()  # positions predicting prompt tokens get nothing
    assert (g[ex.n_prompt - 1 : len(ex.input_ids) - 1] > 0).all()


def test_length_groups_split_a_batch_by_length_only_where_the_padding_saved_pays_for_the_passes(monkeypatch):
    from instructrl.training import losses

    short = [30, 5, 7, 29, 6, 31, 8, 28]  # 8 x 31 + 256 = 504 padded tokens in one pass, 668 in two
    assert length_groups(short) == [list(range(8))]  # one pass keeps the order
    long = [200, 10, 12, 190, 11, 205, 9, 198]  # one pass 1896, two 1380, three 1805, four 1874
    assert length_groups(long) == [[6, 1, 4, 2], [3, 7, 0, 5]]
    assert length_groups(short, max_rows=1) == [[i] for i in (1, 4, 2, 6, 7, 3, 0, 5)]
    assert length_groups([10, 10, 9, 10], max_rows=2) == [[2, 0], [1, 3]]
    assert length_groups([3]) == [[0]] and length_groups([]) == []
    monkeypatch.setattr(losses, "PASS_OVERHEAD_TOKENS", 0)  # passes for free: as many as LENGTH_GROUPS allows
    assert length_groups(short) == [[1, 4], [2, 6], [7, 3], [0, 5]]


def test_the_lm_loss_in_passes_by_length_equals_one_padded_pass(tiny_model_dir, monkeypatch):
    """Documents of 2 to 40 tokens: batch_nll runs them in passes of similar length (no pass wider than its
    own longest row), and the loss, the token count and every gradient are those of one padded pass."""
    import random

    from instructrl.datasets.tokenize import Example
    from instructrl.training import losses

    tok, lm = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, dropout=False).eval()
    rng = random.Random(0)
    examples = [
        Example([rng.randrange(5, 60) for _ in range(n)], n // 3) for n in (40, 2, 9, 33, 5, 17, 3, 26)
    ]
    passes = []
    lm.get_input_embeddings().register_forward_pre_hook(lambda m, args: passes.append(tuple(args[0].shape)))
    monkeypatch.setattr(
        losses, "PASS_OVERHEAD_TOKENS", 0
    )  # the tiny model's rows are short: split them anyway
    results = []
    for groups in (losses.LENGTH_GROUPS, 1):
        monkeypatch.setattr(losses, "LENGTH_GROUPS", groups)
        lm.zero_grad()
        nll, n = batch_nll(lm, examples, tok.pad_token_id, torch.device("cpu"))
        nll.backward()
        results.append((nll.item(), n, [p.grad.clone() for p in lm.parameters()]))
    (nll_g, n_g, grads_g), (nll_1, n_1, grads_1) = results
    assert n_g == n_1 == sum(len(e.input_ids) - max(e.n_prompt, 1) for e in examples)
    assert nll_g == pytest.approx(nll_1, rel=1e-6)
    for a, b in zip(grads_g, grads_1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert passes[:4] == [(2, 3), (2, 9), (2, 26), (2, 40)] and passes[4:] == [(8, 40)]
