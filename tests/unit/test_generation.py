"""Seeded batched sampling: each sample depends only on its own seed, and follows the model's distribution.

The batch-invariance tests run in fp32, the only precision in which they hold: under bf16 autocast the logits
depend on the batch's shape (tests/demo/test_eval_precision.py shows what the demo does about it)."""

import torch

from instructrl.models.generation import (
    SHARED_PREFIX_MIN,
    encode_prompts,
    generate,
    left_pad,
    mix_seed,
    response_mask,
    sample_responses,
    shared_prefix_length,
    uniform_from_seeds,
)
from instructrl.models.loading import load_causal_lm, load_tokenizer


def test_a_sample_does_not_depend_on_its_batch(tiny_model_dir):
    tok, lm = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, dropout=False).eval()
    enc = encode_prompts(tok, ["the cat", "a dog sat on the mat", "one"])
    seeds = torch.tensor([mix_seed(0, i) for i in range(3)])
    kw = dict(max_new_tokens=8, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    together = generate(lm, *left_pad(enc, tok.pad_token_id), seeds=seeds, **kw)
    for i in range(3):
        alone = generate(lm, *left_pad([enc[i]], tok.pad_token_id), seeds=seeds[i : i + 1], **kw)[0]
        n = int(response_mask(alone[None], tok.eos_token_id).sum())
        assert together[i, :n].tolist() == alone[:n].tolist()


def test_samples_follow_the_softmax(tiny_model_dir):
    tok, lm = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, dropout=False).eval()
    n = 4000
    ids, mask = left_pad(encode_prompts(tok, ["the cat"]) * n, tok.pad_token_id)
    first = generate(
        lm, ids, mask, seeds=torch.arange(n), max_new_tokens=1, eos_token_id=-1, pad_token_id=tok.pad_token_id
    )[:, 0]
    with torch.no_grad():
        p = lm(input_ids=ids[:1], attention_mask=mask[:1]).logits[0, -1].softmax(-1)
    freq = torch.bincount(first, minlength=p.numel()).float() / n
    top = p.topk(5).indices  # the frequent tokens: each within 4 standard errors
    stderr = (p[top] * (1 - p[top]) / n).sqrt()
    assert ((freq[top] - p[top]).abs() < 4 * stderr).all()


def test_uniforms_are_uniform_and_deterministic():
    u = uniform_from_seeds(torch.arange(100_000), step=7)
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    assert torch.equal(u, uniform_from_seeds(torch.arange(100_000), step=7))
    assert not torch.equal(u, uniform_from_seeds(torch.arange(100_000), step=8))


def test_response_mask_stops_after_eos():
    r = torch.tensor([[5, 6, 0, 9, 9], [5, 6, 7, 8, 9]])
    assert response_mask(r, eos_token_id=0).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_sample_responses_is_independent_of_batch_size(tiny_model_dir):
    tok, lm = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, dropout=False)
    prompts = ["the cat", "a dog", "two fish"]
    a = sample_responses(lm, tok, prompts, k=3, max_new_tokens=6, seed=4, batch_size=9)
    b = sample_responses(lm, tok, prompts, k=3, max_new_tokens=6, seed=4, batch_size=2)
    assert a == b and len(a) == 3 and all(len(x) == 3 for x in a)


def test_a_checkpoints_generation_config_does_not_change_what_the_sampler_draws_from(
    tiny_model_dir, tmp_path, monkeypatch
):
    """generate() fills every field we leave None from generation_config.json (Qwen2.5-Instruct ships
    temperature, top_k, top_p, repetition_penalty); those processors must not run before the sampler,
    whose draws PPO describes with plain softmax(logits / T) log-probs."""
    import shutil

    from transformers import GenerationConfig

    from instructrl.models import generation
    from instructrl.models.scoring import response_logits

    tok = load_tokenizer(tiny_model_dir)
    plain = load_causal_lm(tiny_model_dir, dropout=False).eval()
    shipped = tmp_path / "shipped"
    shutil.copytree(tiny_model_dir, shipped)
    first = plain(**tok(["the cat"], return_tensors="pt")).logits[0, -1].topk(3).indices.tolist()
    GenerationConfig(
        do_sample=True,
        temperature=0.3,
        top_k=2,
        top_p=0.5,
        repetition_penalty=3.0,
        no_repeat_ngram_size=1,
        bad_words_ids=[[t] for t in first],
    ).save_pretrained(shipped)
    opinionated = load_causal_lm(shipped, dropout=False).eval()
    assert opinionated.generation_config.repetition_penalty == 3.0  # the file is read

    ids, mask = left_pad(encode_prompts(tok, ["the cat", "a dog sat", "one"] * 4), tok.pad_token_id)
    seeds, T = torch.arange(len(ids)), 0.7
    kw = dict(max_new_tokens=8, eos_token_id=-1, pad_token_id=tok.pad_token_id, temperature=T)
    seen: list[torch.Tensor] = []  # the scores the sampler receives at each step (B, V)
    filter_logits = generation.filter_logits
    monkeypatch.setattr(generation, "filter_logits", lambda s, *a: seen.append(s) or filter_logits(s, *a))
    want = generate(plain, ids, mask, seeds=seeds, **kw)
    seen.clear()
    got = generate(opinionated, ids, mask, seeds=seeds, **kw)
    assert torch.equal(got, want)

    # what the sampler drew from is what PPO's log-probs describe
    R = got.shape[1]
    full, full_mask = torch.cat([ids, got], 1), torch.cat([mask, torch.ones_like(got)], 1)
    with torch.no_grad():
        logged = torch.log_softmax(response_logits(opinionated, full, full_mask, R) / T, -1)  # (B, R, V)
    sampler = torch.log_softmax(torch.stack(seen, 1).float() / T, -1)  # (B, R, V)
    assert torch.allclose(sampler, logged, atol=1e-4)


def test_the_prefix_all_rows_share_is_found_in_left_padded_rows():
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [5, 6, 7, 9, 9, 9], [0, 5, 6, 7, 1, 2]])
    mask = (torch.arange(6) >= torch.tensor([[2], [0], [1]])).long()
    assert shared_prefix_length(ids, mask) == 3
    # each row keeps a token of its own: a row that is all prefix caps it at its length - 1
    short = torch.tensor([[0, 5, 6, 7], [5, 6, 7, 8]])
    assert shared_prefix_length(short, (short > 0).long()) == 2
    assert shared_prefix_length(ids[:1], mask[:1]) == 0  # one row shares with no one
    right_padded = torch.tensor([[1, 1, 1, 1, 0, 0]] * 3)
    assert shared_prefix_length(ids, right_padded) == 0


def test_a_shared_prefix_runs_once_and_the_samples_are_those_of_the_plain_batch(tiny_model_dir):
    """A few-shot prefix is the longest part of each prompt: it runs once (a 1-row pass), its keys and
    values repeated for the rows; the rows' samples are token for token those of the plain batch."""
    tok, lm = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, dropout=False).eval()
    prefix = "the cat sat on the mat . a dog ran to the big red tree . one fish"
    prompts = [f"{prefix} {p}" for p in ("the cat", "a dog sat on the mat", "one", "two fish swim")]
    n_prefix = len(encode_prompts(tok, [prefix], "{prompt}")[0])
    assert n_prefix >= SHARED_PREFIX_MIN
    passes = []
    lm.get_input_embeddings().register_forward_pre_hook(lambda m, args: passes.append(tuple(args[0].shape)))
    kw = dict(k=3, max_new_tokens=8, seed=5, prompt_template="{prompt}")
    shared = sample_responses(lm, tok, prompts, **kw)
    shared_passes, passes[:] = list(passes), []
    plain = sample_responses(lm, tok, prompts, share_prefix=False, **kw)
    assert shared == plain and any(any(s) for s in shared)
    assert shared_passes[0] == (1, n_prefix)  # the prefix, once
    widest = max(len(e) for e in encode_prompts(tok, prompts, "{prompt}"))
    assert shared_passes[1] == (12, widest - n_prefix) and passes[0] == (12, widest)  # the rest / whole rows
