"""A prompt run once for its K responses (a KV cache they continue) gives the rewards and the ranking loss's
gradients of K prompt+response rows; where it cannot (an empty response, no cache), the plain rows are used."""

import pytest
import torch

from instructrl.datasets.records import Comparison
from instructrl.datasets.tokenize import pad_right, tokenize_comparisons
from instructrl.models.generation import left_pad
from instructrl.models.loading import load_reward_model, load_tokenizer
from instructrl.models.scoring import RESPONSE_GROUPS, ScalarHead, SharedPrompts, score, score_shared_prompts
from instructrl.training.losses import rank_forward

# prompts of 2, 6 and 10 words with K = 3, 2 and 5 responses of 1 to 6 words
COMPARISONS = [
    Comparison(prompt="write a", responses=["a b", "c", "d e f a b c"], ranking=[2, 0, 1]),
    Comparison(prompt="what is the big red dog", responses=["yes", "no no"], ranking=[1, 0]),
    Comparison(
        prompt="write a story about the small blue bird and tree",
        responses=["one", "two three", "the cat sat on the mat", "no", "very good"],
        ranking=[4, 2, 0, 3, 1],
    ),
]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def examples(tiny_model_dir):
    examples, _ = tokenize_comparisons(COMPARISONS, load_tokenizer(tiny_model_dir), "{prompt}\n", 64, "error")
    assert [e.n_prompt for e in examples] == [2, 6, 10]  # a word-level tokenizer: one id a word
    return examples


def shared_rows(examples, pad_id: int) -> tuple[SharedPrompts, torch.Tensor, torch.Tensor]:
    sizes = torch.tensor([len(e.sequences) for e in examples])
    prompts = SharedPrompts(
        *left_pad([e.sequences[0][: e.n_prompt] for e in examples], pad_id),
        of_row=torch.repeat_interleave(torch.arange(len(examples)), sizes),
    )
    return prompts, *pad_right([s[e.n_prompt :] for e in examples for s in e.sequences], pad_id)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # eager: what bf16 on CPU runs
def test_a_shared_prompt_scores_each_response_as_its_whole_sequence_does(tiny_model_dir, examples, attention):
    rm = load_reward_model(tiny_model_dir, attn_implementation=attention).eval()
    pad = rm.config.pad_token_id
    seqs = [s for e in examples for s in e.sequences]
    with torch.no_grad():
        shared = score_shared_prompts(rm, *shared_rows(examples, pad))
        right = score(rm, *pad_right(seqs, pad))
        left = score(rm, *left_pad(seqs, pad))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            shared_bf16 = score_shared_prompts(rm, *shared_rows(examples, pad))
            right_bf16 = score(rm, *pad_right(seqs, pad))
    assert shared.shape == (10,)
    assert torch.allclose(shared, right, atol=1e-5) and torch.allclose(shared, left, atol=1e-5)
    # in bf16 the two ways round differently (2e-4 apart with SDPA, 0 with eager); both within 1e-3 of fp32
    assert torch.allclose(shared_bf16, right_bf16, atol=2e-3) and torch.allclose(
        shared_bf16, right, atol=5e-3
    )


def test_the_ranking_loss_and_its_gradients_are_those_of_the_plain_rows(tiny_model_dir, examples):
    rm = load_reward_model(tiny_model_dir).train()  # a tiny GPT-2 saved without dropout
    pad = rm.config.pad_token_id
    results = []
    for share in (True, False):
        rm.zero_grad()
        loss, correct, pairs = rank_forward(rm, examples, pad, CPU, share_prompt=share)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
        results.append((loss.item(), correct, pairs, grads))
    (loss_s, correct_s, pairs_s, grads_s), (loss_p, correct_p, pairs_p, grads_p) = results
    assert loss_s == pytest.approx(loss_p, abs=1e-5) and (correct_s, pairs_s) == (correct_p, pairs_p)
    assert pairs_s == 3 + 1 + 10
    # every weight gets a gradient on both paths, the prompt pass's included (wte, the first block)
    assert grads_s.keys() == grads_p.keys() == {n for n, _ in rm.named_parameters()}
    for name, g in grads_s.items():
        assert torch.allclose(g, grads_p[name], atol=1e-5, rtol=1e-4), name
        assert g.abs().sum() > 0, name


def test_a_prompt_runs_once_for_its_k_responses(tiny_model_dir, examples):
    rm = load_reward_model(tiny_model_dir).eval()
    shapes = []
    rm.base_model.register_forward_hook(
        lambda m, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    with torch.no_grad():
        rank_forward(rm, examples, rm.config.pad_token_id, CPU)
        rank_forward(rm, examples, rm.config.pad_token_id, CPU, share_prompt=False)
    # 3 prompts of up to 10 tokens, then 10 responses of up to 6 words + EOS in RESPONSE_GROUPS passes by length
    # (shortest first), each as wide as its longest; the plain path: 10 rows of up to 10 + 7
    lengths = sorted(len(seq) - e.n_prompt for e in examples for seq in e.sequences)
    groups = [g.tolist() for g in torch.tensor(lengths).tensor_split(RESPONSE_GROUPS)]
    assert shapes == [(3, 10), *((len(g), max(g)) for g in groups), (10, 17)]
    assert max(lengths) == 7 and sum(len(g) * max(g) for g in groups) < 10 * 7


def test_an_empty_response_is_scored_on_its_prompts_last_token(tiny_model_dir, examples):
    """The response pass has no token to read an empty response's reward on: the plain rows are used."""
    rm = load_reward_model(tiny_model_dir).eval()
    pad = rm.config.pad_token_id
    prompts, ids, mask = shared_rows(examples, pad)
    mask[1] = 0  # the first prompt's second response, "c" + EOS, now empty
    seqs = [s for e in examples for s in e.sequences]
    seqs[1] = seqs[1][: examples[0].n_prompt]
    with torch.no_grad():
        shared = score_shared_prompts(rm, prompts, ids, mask)
        plain = score(rm, *pad_right(seqs, pad))
    assert torch.allclose(shared, plain, atol=1e-5)


def test_a_transformer_without_a_kv_cache_gets_the_plain_rows(tiny_model_dir, examples, monkeypatch):
    rm = load_reward_model(tiny_model_dir).eval()
    pad = rm.config.pad_token_id
    base_forward = rm.base_model.forward
    rows = []

    def no_cache(input_ids, attention_mask, position_ids):  # a forward that takes no cache argument
        rows.append(input_ids.shape[0])
        return base_forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    monkeypatch.setattr(rm.base_model, "forward", no_cache)
    prompts, ids, mask = shared_rows(examples, pad)
    with torch.no_grad():
        shared = ScalarHead(rm)(ids, mask, prompts=prompts)
    monkeypatch.undo()
    with torch.no_grad():
        plain = score(rm, *pad_right([s for e in examples for s in e.sequences], pad))
    assert rows == [10] and torch.allclose(shared, plain, atol=1e-5)


def test_with_lora_the_adapters_get_the_gradients_of_the_plain_rows(tiny_model_dir, examples):
    from instructrl.models.lora import add_lora, trainable_parameters
    from instructrl.reward.config import RMConfig

    torch.manual_seed(0)
    peft_rm = add_lora(load_reward_model(tiny_model_dir), RMConfig(lora_r=8), "SEQ_CLS")
    with torch.no_grad():
        for name, p in peft_rm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)  # B starts at 0, where A gets no gradient: make the adapters do something
    head = ScalarHead(peft_rm).train()
    results = []
    for share in (True, False):
        head.zero_grad()
        loss, _, _ = rank_forward(head, examples, peft_rm.config.pad_token_id, CPU, share_prompt=share)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in trainable_parameters(head)]))
    (loss_s, grads_s), (loss_p, grads_p) = results
    assert loss_s == pytest.approx(loss_p, abs=1e-5)
    assert len(grads_s) == 2 * 2 + 1  # c_attn's A and B in 2 blocks; the head
    for g_s, g_p in zip(grads_s, grads_p, strict=True):
        assert g_s.abs().sum() > 0 and torch.allclose(g_s, g_p, atol=1e-5, rtol=1e-4)


def test_the_repeated_prompt_cache_gives_the_same_gradients_every_time():
    """The prompt's keys and values repeated for its rows: their gradient sums each row's back into its prompt.
    Indexing's backward (index_put_ with accumulate) sums in a thread-dependent order on CPU, so two RM runs of
    the same data ended 1e-7 apart (and a demo's PPO then drew other samples); index_select's sums in order."""
    from transformers import DynamicCache

    from instructrl.models.cache import cache_rows

    torch.set_num_threads(2)  # the tests run on one thread (conftest); the order differs from two on
    torch.manual_seed(0)
    keys, values = (torch.randn(16, 4, 40, 24, requires_grad=True) for _ in range(2))
    rows = torch.arange(16).repeat_interleave(5)[torch.randperm(80)]  # each prompt 5 times, shuffled
    upstream = torch.randn(80, 4, 40, 24)
    grads = []
    for _ in range(20):
        cache = DynamicCache()
        cache.update(keys, values, 0)
        layer = cache_rows(cache, rows, copy=True).layers[0]
        keys.grad = values.grad = None
        ((layer.keys + layer.values) * upstream).sum().backward()
        grads.append((keys.grad.clone(), values.grad.clone()))
    assert all(torch.equal(k, grads[0][0]) and torch.equal(v, grads[0][1]) for k, v in grads)
