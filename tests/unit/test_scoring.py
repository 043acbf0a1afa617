"""score(), values() and log-probs: padding side does not matter; the RM bias survives a plain HF load."""

import torch
from transformers import AutoModelForSequenceClassification

from instructrl.datasets.tokenize import pad_right
from instructrl.models.generation import left_pad
from instructrl.models.loading import load_causal_lm, load_reward_model
from instructrl.models.scoring import add_reward_bias, response_logprobs, score, token_logprobs, values

ROWS = [[5, 9, 12, 7], [3, 4], [8, 8, 8, 8, 8, 2], [11]]


def test_left_and_right_padding_give_the_same_score(tiny_model_dir):
    rm = load_reward_model(tiny_model_dir).eval()
    pad = rm.config.pad_token_id
    with torch.no_grad():
        right = score(rm, *pad_right(ROWS, pad))
        left = score(rm, *left_pad(ROWS, pad))
        alone = torch.cat([score(rm, *pad_right([r], pad)) for r in ROWS])
    assert torch.allclose(right, left, atol=1e-5) and torch.allclose(right, alone, atol=1e-5)


def test_values_are_per_token_and_padding_free(tiny_model_dir):
    vm = load_reward_model(tiny_model_dir).eval()
    pad = vm.config.pad_token_id
    with torch.no_grad():
        ids, mask = left_pad(ROWS, pad)
        v = values(vm, ids, mask)  # (B, T)
        last = score(vm, ids, mask)
    assert v.shape == ids.shape
    assert torch.allclose(v[:, -1], last, atol=1e-5)  # V at the last token = r


def test_reward_bias_is_folded_so_plain_hugging_face_sees_it(tiny_model_dir, tmp_path):
    rm = load_reward_model(tiny_model_dir).eval()
    ids, mask = pad_right(ROWS, rm.config.pad_token_id)
    with torch.no_grad():
        before = score(rm, ids, mask)
    where = add_reward_bias(rm, 1.25)
    assert where == "final_norm_bias"  # GPT-2's ln_f has a bias to carry it
    rm.save_pretrained(tmp_path)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=1).eval()
    with torch.no_grad():
        after_ours = score(rm, ids, mask)
        # Hugging Face's own pooling: last non-pad token (our pad id is not a real token)
        after_hf = plain(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    assert torch.allclose(after_ours, before + 1.25, atol=1e-4)
    assert torch.allclose(after_hf, before + 1.25, atol=1e-4)


def test_response_logprobs_equal_a_full_forward(tiny_model_dir):
    lm = load_causal_lm(tiny_model_dir, dropout=False).eval()
    ids, mask = left_pad([[5, 9, 12, 7, 20, 21], [3, 4, 30, 31]], 1)
    R = 2
    with torch.no_grad():
        got = response_logprobs(lm, ids, mask, R)
        full = lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        want = token_logprobs(full[:, -R - 1 : -1], ids[:, -R:])
        ref = torch.log_softmax(full[:, -R - 1 : -1].float(), -1).gather(-1, ids[:, -R:, None]).squeeze(-1)
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(want, ref, atol=1e-5)


def test_scalar_head_is_fp32_under_bf16_autocast(tiny_model_dir):
    rm = load_reward_model(tiny_model_dir).eval()
    ids, mask = pad_right(ROWS, rm.config.pad_token_id)
    with torch.no_grad():
        exact = score(rm, ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = score(rm, ids, mask)
            hidden = rm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            bf16_head = rm.score(hidden).dtype
    assert bf16_head == torch.bfloat16  # what autocast would do to the head on its own
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, exact, atol=0.05)
    assert len(set(mixed.tolist())) == len(ROWS)  # no ties from rounding


def test_a_bias_that_would_not_shift_exactly_goes_to_the_config_instead(tiny_model_dir, monkeypatch):
    """If the module found to feed the head is read by more than the head, folding the bias into it would
    move the scores by something else: the probe sees it, the module is restored and the config keeps it."""
    from instructrl.models import scoring

    rm = load_reward_model(tiny_model_dir).eval()
    first_norm = rm.transformer.h[0].ln_1  # its output feeds the rest of the network, not just the head
    monkeypatch.setattr(scoring, "_output_module", lambda model: first_norm)
    kept = first_norm.bias.detach().clone()
    ids, mask = pad_right(ROWS, rm.config.pad_token_id)
    with torch.no_grad():
        before = score(rm, ids, mask)
        where = add_reward_bias(rm, 1.25)
        after = score(rm, ids, mask)
    assert where == "config.reward_bias" and torch.equal(first_norm.bias, kept)
    assert torch.allclose(after, before + 1.25, atol=1e-5)
