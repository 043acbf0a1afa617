"""The pipeline is architecture-agnostic. Tiny random-weight GPT-2, GPT-NeoX, OPT, Llama, Qwen2, Mistral,
Gemma and Phi (built locally) each go through the contracts every stage relies on: the reward bias shifts
every score by exactly what was asked, scores do not depend on the padding side, rollouts and reference
passes run without dropout, and SFT, RM and PPO each take a step. A 2-layer Llama with a byte-level BPE
tokenizer also runs the three stages end to end."""

import json

import pytest
import torch
from conftest import corpus, make_comparisons, make_demos, make_prompts, run_stage, write_jsonl
from transformers import AutoModelForSequenceClassification

from instructrl.datasets.tokenize import pad_right
from instructrl.models.loading import load_reward_model
from instructrl.models.scoring import add_reward_bias, score
from instructrl.models.tiny import ARCHITECTURES, build_llama, save, tiny_config, train_tokenizer

ROWS = [[5, 9, 12, 7], [3, 4], [8, 8, 8, 8, 8, 2], [11]]


def tiny_rm(model_type: str, tokenizer) -> torch.nn.Module:
    torch.manual_seed(0)
    config = tiny_config(model_type, tokenizer)
    config.num_labels = 1
    return AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_the_reward_bias_shifts_every_score_by_exactly_what_was_asked(model_type, tiny_tokenizer, tmp_path):
    rm = tiny_rm(model_type, tiny_tokenizer)
    ids, mask = pad_right(ROWS, tiny_tokenizer.pad_token_id)
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
        prompt_ids(tok, c.prompt, "{prompt}\n") + response_ids(tok, c.responses[c.ranking[0]])
        for c in read_comparisons(comps)
    ]
    with torch.no_grad():
        r = score(model.eval(), *pad_right(best, tok.pad_token_id))
    assert abs(r.mean().item()) < 0.5  # train split only was centred; the whole file is close to 0
