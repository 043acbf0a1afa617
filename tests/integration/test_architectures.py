"""The pipeline is architecture-agnostic. Tiny random-weight GPT-2, GPT-NeoX, OPT, Llama, Qwen2, Mistral,
Gemma and Phi (built locally) each go through the contracts every stage relies on: the reward bias shifts
every score by exactly what was asked, scores do not depend on the padding side, rollouts and reference
passes run without dropout, and SFT, RM and PPO each take a step. A 2-layer Llama with a byte-level BPE
tokenizer also runs the three stages end to end."""

import json
from pathlib import Path

import pytest
import torch
from conftest import corpus, make_comparisons, make_demos, make_prompts, run_stage, write_jsonl
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from instructrl.datasets.tokenize import RankedExample, pad_right
from instructrl.models.generation import generate, left_pad
from instructrl.models.loading import load_causal_lm, load_reward_model
from instructrl.models.scoring import add_reward_bias, score
from instructrl.models.tiny import ARCHITECTURES, build_llama, save, tiny_config, train_tokenizer
from instructrl.training.losses import rank_forward

ROWS = [[5, 9, 12, 7], [3, 4], [8, 8, 8, 8, 8, 2], [11]]


@pytest.fixture(scope="module")
def bpe():
    """Byte-level BPE, as real checkpoints have: transformers 5 loads a Qwen2 checkpoint's tokenizer as
    Qwen2Tokenizer (BPE) whatever tokenizer_config.json says, and a word-level one then encodes to nothing."""
    return train_tokenizer(corpus(), vocab_size=300, kind="bpe")


def tiny_rm(model_type: str, tokenizer) -> torch.nn.Module:
    torch.manual_seed(0)
    config = tiny_config(model_type, tokenizer)
    config.num_labels = 1
    return AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_the_reward_bias_shifts_every_score_by_exactly_what_was_asked(model_type, bpe, tmp_path):
    rm = tiny_rm(model_type, bpe)
    ids, mask = pad_right(ROWS, bpe.pad_token_id)
    with torch.no_grad():
        before = score(rm, ids, mask)
        where = add_reward_bias(rm, 1.0)
        after = score(rm, ids, mask)
    assert torch.allclose(after - before, torch.ones(len(ROWS)), atol=1e-4), (where, after - before)
    # RMSNorm has no bias to fold the shift into: it is kept in the config, and the run says so
    rms_norm = model_type in ("llama", "qwen2", "mistral", "gemma")
    assert where == ("config.reward_bias" if rms_norm else "final_norm_bias")
    # and so does a reload of the saved reward model
    rm.save_pretrained(tmp_path)
    with torch.no_grad():
        reloaded = score(load_reward_model(tmp_path).eval(), ids, mask)
    assert torch.allclose(reloaded, after, atol=1e-4)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_scores_do_not_depend_on_the_padding_side(model_type, bpe):
    rm = tiny_rm(model_type, bpe)
    pad = bpe.pad_token_id
    with torch.no_grad():
        right = score(rm, *pad_right(ROWS, pad))
        left = score(rm, *left_pad(ROWS, pad))
        alone = torch.cat([score(rm, *pad_right([r], pad)) for r in ROWS])
    assert torch.allclose(right, left, atol=1e-5) and torch.allclose(right, alone, atol=1e-5)


# prompts of 5, 2 and 8 tokens with K = 3, 2 and 4 responses of 1 to 4 tokens
RANKED = [
    RankedExample(
        [[5, 9, 12, 7, 30] + r for r in ([11, 12], [33], [44, 45, 46, 47])], [(2, 0), (2, 1), (0, 1)], 5
    ),
    RankedExample([[3, 4] + r for r in ([50, 51, 52], [53])], [(1, 0)], 2),
    RankedExample(
        [[8, 8, 8, 8, 8, 2, 40, 41] + r for r in ([60], [61, 62], [63, 64, 65], [66, 67])],
        [(3, 2), (3, 1), (3, 0), (2, 1), (2, 0), (1, 0)],
        8,
    ),
]


@pytest.mark.parametrize(
    "model_type, window",
    [*((t, None) for t in ARCHITECTURES), ("mistral", 3)],
    ids=[*ARCHITECTURES, "mistral-window-3"],
)
def test_a_prompt_run_once_for_its_responses_gives_the_same_rewards_and_gradients(model_type, window, bpe):
    """Every architecture continues a repeated KV cache (none falls back to the plain rows): the ranking
    loss, its gradients and the pass shapes, shared and plain. Mistral with a 3-token sliding window too."""
    torch.manual_seed(0)
    config = tiny_config(model_type, bpe)
    config.num_labels = 1
    if window:
        config.sliding_window = window
    rm = AutoModelForSequenceClassification.from_config(config).eval()  # eval: no dropout, as in the RM
    shapes = []
    rm.base_model.register_forward_hook(
        lambda m, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    grads = []
    for share in (True, False):
        rm.zero_grad()
        loss, correct, _ = rank_forward(rm, RANKED, bpe.pad_token_id, torch.device("cpu"), share_prompt=share)
        loss.backward()
        grads.append((loss.item(), correct, {n: p.grad for n, p in rm.named_parameters()}))
    # shared: 3 prompts, then 9 responses in passes by length (none wider than the longest, 4); plain: 9 whole rows
    assert shapes[0] == (3, 8) and shapes[-1] == (9, 11) and len(shapes) > 3
    assert sum(n for n, _ in shapes[1:-1]) == 9 and max(w for _, w in shapes[1:-1]) == 4
    (loss_s, correct_s, shared), (loss_p, correct_p, plain) = grads
    assert loss_s == pytest.approx(loss_p, abs=1e-5) and correct_s == correct_p
    for name, g in shared.items():
        assert (g is None) == (plain[name] is None), name
        assert g is None or torch.allclose(g, plain[name], atol=1e-5, rtol=1e-4), name


def saved_with_dropout(model_type: str, tokenizer, out) -> Path:
    """A tiny checkpoint whose config sets every dropout rate it has (and OPT's layerdrop) to 0.5."""
    torch.manual_seed(0)
    config = tiny_config(model_type, tokenizer)
    for key, value in list(vars(config).items()):
        if ("dropout" in key or key.endswith("pdrop") or key == "layerdrop") and type(value) in (int, float):
            setattr(config, key, 0.5)
    return save(AutoModelForCausalLM.from_config(config), tokenizer, out)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_rollout_and_reference_forwards_run_without_dropout(model_type, bpe, tmp_path):
    """PPO loads the policy, the reference, the RM and the value model with dropout=False; even in train
    mode their forwards are then a function of the weights alone."""
    ckpt = saved_with_dropout(model_type, bpe, tmp_path)
    ids, mask = left_pad(ROWS, bpe.pad_token_id)
    with torch.no_grad():
        lm = load_causal_lm(ckpt, dropout=False).train()
        assert torch.equal(
            lm(input_ids=ids, attention_mask=mask).logits, lm(input_ids=ids, attention_mask=mask).logits
        )
        rm = load_reward_model(ckpt).train()
        assert torch.equal(score(rm, ids, mask), score(rm, ids, mask))
        noisy = load_causal_lm(ckpt).train()  # the check can see dropout: with it, two passes differ
        torch.manual_seed(0)  # OPT's layerdrop skips its one layer in both passes 1 time in 4
        assert not torch.equal(
            noisy(input_ids=ids, attention_mask=mask).logits, noisy(input_ids=ids, attention_mask=mask).logits
        )


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_sft_rm_and_ppo_each_take_a_step(model_type, bpe, tmp_path):
    base = saved_with_dropout(model_type, bpe, tmp_path / "base")
    one_step = ["epochs=1", "batch_size=16", "mixed_precision=no"]
    demos = write_jsonl(tmp_path / "d.jsonl", make_demos(20))
    comps = write_jsonl(tmp_path / "c.jsonl", make_comparisons(20))
    prompts = write_jsonl(tmp_path / "p.jsonl", make_prompts(20))
    sft = run_stage("sft", tmp_path / "sft", [*one_step, "residual_dropout=0"], model_dir=base, data=demos)
    rm = run_stage("rm", tmp_path / "rm", one_step, model_dir=tmp_path / "sft" / "final", data=comps)
    ppo_sets = [
        "iterations=1",
        "rollout_batch_size=4",
        "batch_size=4",
        "epochs=1",
        "max_new_tokens=4",
        "reward_norm_samples=4",
        "eval_prompts=2",
        "mixed_precision=no",
    ]
    ppo = run_stage(
        "ppo",
        tmp_path / "ppo",
        ppo_sets,
        policy_dir=tmp_path / "sft" / "final",
        reward_dir=tmp_path / "rm" / "final",
        prompts=prompts,
    )
    assert sft["val_loss"] > 0 and 0 <= rm["val_accuracy"] <= 1 and ppo["iterations"] == 1
    saved = json.loads((tmp_path / "ppo" / "final" / "config.json").read_text())
    assert saved["model_type"] == model_type


def test_llama_with_bpe_through_all_three_stages(tmp_path):
    tok = train_tokenizer(corpus(), vocab_size=300, kind="bpe")
    base = save(build_llama(tok, n_layer=2, hidden_size=64, n_head=4), tok, tmp_path / "base")
    demos = write_jsonl(tmp_path / "d.jsonl", make_demos(64))
    comps = write_jsonl(tmp_path / "c.jsonl", make_comparisons(64))
    prompts = write_jsonl(tmp_path / "p.jsonl", make_prompts(64))

    sft = run_stage(
        "sft",
        tmp_path / "sft",
        ["epochs=1", "batch_size=8", "lr=1e-3", "mixed_precision=no"],
        model_dir=base,
        data=demos,
    )
    rm = run_stage(
        "rm",
        tmp_path / "rm",
        ["epochs=1", "batch_size=8", "lr=1e-3", "mixed_precision=no"],
        model_dir=tmp_path / "sft" / "final",
        data=comps,
    )
    ppo = run_stage(
        "ppo",
        tmp_path / "ppo",
        [
            "iterations=2",
            "rollout_batch_size=8",
            "batch_size=4",
            "max_new_tokens=8",
            "mixed_precision=no",
            "eval_prompts=8",
        ],
        policy_dir=tmp_path / "sft" / "final",
        reward_dir=tmp_path / "rm" / "final",
        prompts=prompts,
    )
    assert sft["val_loss"] > 0 and 0 <= rm["val_accuracy"] <= 1 and ppo["iterations"] == 2

    meta = json.loads((tmp_path / "rm" / "final" / "instructrl.json").read_text())
    assert meta["reward_bias_stored_in"] == "config.reward_bias"
    model = load_reward_model(tmp_path / "rm" / "final")
    assert model.config.reward_bias == rm["bias"]
    assert json.loads((tmp_path / "ppo" / "final" / "config.json").read_text())["model_type"] == "llama"
    # the bias is applied by score(): the reference (best-ranked training) responses average ~0
    from instructrl.datasets.io import read_comparisons
    from instructrl.datasets.tokenize import prompt_ids, response_ids

    best = [
        prompt_ids(tok, c.prompt, "{prompt}\n") + response_ids(tok, c.responses[c.ranking[0]], c.prompt)
        for c in read_comparisons(comps)
    ]
    with torch.no_grad():
        r = score(model.eval(), *pad_right(best, tok.pad_token_id))
    assert abs(r.mean().item()) < 0.5  # train split only was centred; the whole file is close to 0


@pytest.mark.parametrize(
    "model_type, window",
    [*((t, None) for t in ARCHITECTURES), ("mistral", 3)],
    ids=[*ARCHITECTURES, "mistral-window-3"],
)
def test_a_prefix_every_prompt_shares_runs_once_and_samples_the_same_tokens(model_type, window, bpe):
    """generate() runs a shared prefix (a few-shot or system prompt) once and repeats its KV cache for the
    rows: every architecture samples the tokens of the plain batch. Mistral with a window shorter than the
    prefix too."""
    torch.manual_seed(0)
    config = tiny_config(model_type, bpe)
    if window:
        config.sliding_window = window
    lm = AutoModelForCausalLM.from_config(config).eval()
    prefix = bpe("questions and answers . the cat sat on the mat .", add_special_tokens=False).input_ids
    rows = [prefix + r for r in ROWS]
    passes = []
    lm.get_input_embeddings().register_forward_pre_hook(lambda m, args: passes.append(tuple(args[0].shape)))
    kw = dict(
        seeds=torch.arange(len(rows)) + 11, max_new_tokens=6, eos_token_id=-1, pad_token_id=bpe.pad_token_id
    )
    shared = generate(lm, *left_pad(rows, bpe.pad_token_id), **kw)
    assert passes[0] == (1, len(prefix)) and passes[1] == (len(rows), max(map(len, ROWS)))
    plain = generate(lm, *left_pad(rows, bpe.pad_token_id), share_prefix=False, **kw)
    assert torch.equal(shared, plain) and shared.shape == (len(rows), 6)
