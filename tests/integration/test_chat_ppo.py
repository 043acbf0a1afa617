"""PPO with a chat-templated tokenizer: rollouts start after the generation prompt SFT was trained on and
stop at the template's end-of-turn token, which is not EOS."""

from __future__ import annotations

import json

import torch

TEMPLATE = "{prompt}\n"


def test_one_ppo_step_with_a_chat_template_stops_at_the_end_of_turn_token(chat_tokenizer, tmp_path):
    from instructrl.config import load_config
    from instructrl.datasets.io import read_prompts
    from instructrl.datasets.records import Demonstration, Message
    from instructrl.datasets.tokenize import tokenize_demonstrations
    from instructrl.models.tiny import build_gpt2, save
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import ppo_iteration
    from instructrl.training.runtime import finish

    tok = chat_tokenizer
    end = tok.convert_tokens_to_ids("<|end|>")
    model = build_gpt2(tok, n_layer=1, n_embd=32, n_head=2, n_positions=64)
    with torch.no_grad():
        # every position's logits are 0 but <|end|>'s, 4.5: p(<|end|>) ≈ 0.31, so responses stop at varied lengths
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[end, 0] = 4.5
    model_dir = save(model, tok, tmp_path / "policy")
    rows = [
        {"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": "ok"},
                      {"role": "user", "content": f"{w} why"}], "user_id": f"u{i}"}
        for i, w in enumerate(["cat", "dog", "bird", "fish"])
    ]  # fmt: skip
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    seen: list[str] = []

    def reward_fn(prompts: list[str], responses: list[str]) -> list[float]:
        seen.extend(responses)
        return [float(len(r)) for r in responses]

    sets = ["rollout_batch_size=4", "batch_size=2", "max_new_tokens=8", "mixed_precision=no", "epochs=1"]
    config = load_config(PPOConfig, None, [*sets, "eval_prompts=1"])
    s = setup_ppo(
        policy_dir=model_dir,
        reward_dir=model_dir,
        prompts=tmp_path / "prompts.jsonl",
        val_prompts=tmp_path / "prompts.jsonl",
        out=tmp_path / "ppo",
        config=config,
        reward_fn=reward_fn,
    )
    assert s.stops == [tok.eos_token_id, end]
    # PPO's queries are SFT's prompt ids for the same conversations
    records = read_prompts(tmp_path / "prompts.jsonl")
    demos = [Demonstration(messages=[*r.messages, Message(role="assistant", content="ok")]) for r in records]
    sft, _ = tokenize_demonstrations(demos, tok, TEMPLATE, 64, "error")
    assert sorted(s.train.queries) == sorted(e.input_ids[: e.n_prompt] for e in sft)
    assert s.train.queries[0][-1] == tok.convert_tokens_to_ids("<|assistant|>")

    metrics, r, _ = ppo_iteration(s, 0, 0)
    finish(s.accelerator)
    R = r.response.shape[1]
    lengths = r.mask.sum(-1).tolist()  # tokens up to and including the first stop token
    for row, n in zip(r.response.tolist(), lengths, strict=True):
        first_stop = next((i for i, t in enumerate(row) if t in (tok.eos_token_id, end)), None)
        assert n == (R if first_stop is None else first_stop + 1)
        assert row[n:] == [tok.pad_token_id] * (R - n)
    ended_turn = [row[n - 1] == end for row, n in zip(r.response.tolist(), lengths, strict=True)]
    assert any(e and n < R for e, n in zip(ended_turn, lengths, strict=True)), "a rollout stops at <|end|>"
    assert len(seen) == 4 and not any("<|end|>" in t for t in seen)
    assert torch.isfinite(torch.tensor(list(metrics.values()))).all()
