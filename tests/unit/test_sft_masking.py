"""SFT's loss covers response tokens only."""

import torch

from instructrl.datasets.records import Demonstration
from instructrl.datasets.tokenize import tokenize_demonstrations
from instructrl.models.loading import load_causal_lm, load_tokenizer
from instructrl.training.losses import batch_nll


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
