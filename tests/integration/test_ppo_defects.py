"""Defects found on review of the PPO step, each pinned by a test that failed before its fix."""

from __future__ import annotations

import pytest
import torch
from conftest import PRECISIONS, run_stage

from instructrl.errors import UserError

PPO_SET = [
    "iterations=2",
    "rollout_batch_size=8",
    "batch_size=4",
    "max_new_tokens=8",
    "mixed_precision=no",
    "eval_prompts=8",
    "val_fraction=0.15",
]


def fake_fp16_accelerator():
    """An Accelerator that scales losses with a GradScaler as `mixed_precision=fp16` does on a GPU.

    accelerate refuses fp16 on CPU, so the CPU GradScaler goes where accelerate keeps its own; the call order
    (scale, backward, unscale, scaler.step + update in optimizer.step) is the real one. The math stays fp32
    (autocast off), so only the loss scaling differs from a plain run.
    """
    from accelerate import Accelerator
    from accelerate.utils import AutocastKwargs

    accelerator = Accelerator(
        cpu=True, mixed_precision="fp16", kwargs_handlers=[AutocastKwargs(enabled=False)]
    )
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    accelerator.native_amp = True
    return accelerator


def value_moments_after_one_update(sft_dir, rm_dir, data_dir, out, accelerator):
    """One PPO iteration of one minibatch from the same weights; Adam's first moment of every value-model
    parameter afterwards (= (1 - β1) · its clipped gradient)."""
    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import ppo_iteration
    from instructrl.training.runtime import finish

    config = load_config(PPOConfig, None, [*PPO_SET, "rollout_batch_size=4", "epochs=1"])
    s = setup_ppo(
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
        out=out,
        config=config,
        accelerator=accelerator,
    )
    ppo_iteration(s, 0, 0)
    state = s.optimizer.optimizer.state
    moments = {
        n: state[p]["exp_avg"].clone()
        for n, p in s.accelerator.unwrap_model(s.value_model).named_parameters()
    }
    finish(accelerator)
    return moments


def test_fp16_loss_scaling_unscales_the_value_models_gradients_once(sft_dir, rm_dir, data_dir, tmp_path):
    """With a GradScaler, the value model's gradients reach its optimizer as in fp32, not divided by the scale
    a second time (accelerate's clip_grad_norm_ unscales every optimizer, and the policy's step reset the
    scaler's record of which ones it had unscaled)."""
    from accelerate import Accelerator

    plain = value_moments_after_one_update(sft_dir, rm_dir, data_dir, tmp_path / "a", Accelerator(cpu=True))
    scaled = value_moments_after_one_update(
        sft_dir, rm_dir, data_dir, tmp_path / "b", fake_fp16_accelerator()
    )
    assert any(m.abs().max() > 1e-6 for m in plain.values())
    for name, m in plain.items():
        assert torch.allclose(scaled[name], m, rtol=1e-3, atol=1e-9), name


def test_nucleus_sampling_is_refused_for_rollouts(sft_dir, rm_dir, data_dir, tmp_path):
    """top_p < 1 would sample rollouts from a truncated distribution while the log-probs, the ratio and the
    KL use the full softmax: refused with a clear error rather than run off-policy."""
    with pytest.raises(UserError, match="top_p"):
        run_stage(
            "ppo",
            tmp_path / "ppo",
            [*PPO_SET, "top_p=0.9"],
            policy_dir=sft_dir,
            reward_dir=rm_dir,
            prompts=data_dir / "prompts.jsonl",
        )
    assert not (tmp_path / "ppo" / "final").exists()


def test_rollouts_are_sampled_with_every_model_in_eval_mode(sft_dir, rm_dir, data_dir, tmp_path, monkeypatch):
    from instructrl.ppo import evaluate, rollout, train

    modes = []
    real_generate, real_sample = rollout.generate, rollout.sample_and_score

    def generate(model, *args, **kw):  # the policy while it samples
        modes.append(("policy", model.training))
        return real_generate(model, *args, **kw)

    def spy(s, **kw):  # the reference and value models, which score the samples
        out = real_sample(s, **kw)
        modes.append(("reference and value", s.ref_policy.training or s.value_model.training))
        return out

    monkeypatch.setattr(rollout, "generate", generate)
    for module in (rollout, train, evaluate):  # the reward's normalisation, the iterations, the evaluations
        monkeypatch.setattr(module, "sample_and_score", spy)
    run_stage(
        "ppo",
        tmp_path / "ppo",
        [*PPO_SET, "iterations=3"],
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
    )
    assert len(modes) >= 6 and not any(training for _, training in modes), modes


def tiny_configs(vocab: int):
    """Small configs of architectures whose dropout lives under names of their own, every rate at 0.5."""
    from transformers import GPTNeoConfig, MptConfig, OPTConfig

    return {
        "gpt_neo": GPTNeoConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            attention_types=[[["global"], 2]],
            max_position_embeddings=64,
            embed_dropout=0.5,
            resid_dropout=0.5,
            attention_dropout=0.5,
        ),
        "opt": OPTConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            word_embed_proj_dim=32,
            max_position_embeddings=64,
            dropout=0.5,
            activation_dropout=0.5,
            attention_dropout=0.5,
            layerdrop=0.5,
        ),
        "mpt": MptConfig(
            vocab_size=vocab,
            d_model=32,
            n_layers=2,
            n_heads=4,
            max_seq_len=64,
            resid_pdrop=0.5,
            emb_pdrop=0.5,
        ),
    }


@pytest.mark.parametrize("arch", ["gpt_neo", "opt", "mpt"])
def test_rl_models_run_without_dropout_in_every_architecture(arch, tiny_tokenizer, tmp_path):
    """PPO's log-probs and values must be the same function of the weights in rollout and in training: no
    dropout anywhere, whatever the architecture calls it (GPT-Neo embed_dropout, OPT activation_dropout and
    layerdrop, MPT emb_pdrop), even in train() mode."""
    from transformers import AutoModelForCausalLM

    from instructrl.models.loading import load_causal_lm, load_reward_model
    from instructrl.models.scoring import score

    config = tiny_configs(len(tiny_tokenizer))[arch]
    config.pad_token_id = tiny_tokenizer.pad_token_id
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    ids = torch.randint(3, len(tiny_tokenizer), (4, 12))
    mask = torch.ones_like(ids)

    lm = load_causal_lm(tmp_path, dropout=False).train()
    rm = load_reward_model(tmp_path).train()
    with torch.no_grad():
        a, b = lm(input_ids=ids).logits, lm(input_ids=ids).logits
        ra, rb = score(rm, ids, mask), score(rm, ids, mask)
    assert torch.equal(a, b)
    assert torch.equal(ra, rb)


def test_a_minibatch_update_skips_the_rollouts_padding_and_gives_the_same_step(
    sft_dir, rm_dir, data_dir, tmp_path, monkeypatch
):
    """The forward passes of a PPO minibatch run on the columns its own rows use (not the rollout's longest
    prompt and response), in passes of rows of similar length: the same update as on a rollout widened with
    padding on both sides, which the passes never see, and as one pass over the whole minibatch."""
    import dataclasses

    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import ppo_iteration
    from instructrl.ppo.update import ppo_update
    from instructrl.training import losses
    from instructrl.training.runtime import finish, make_accelerator

    config = load_config(PPOConfig, None, [*PPO_SET, "iterations=1"])
    acc = make_accelerator(config)
    s = setup_ppo(
        policy_dir=sft_dir, reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl", out=tmp_path, config=config,
        accelerator=acc,
    )  # fmt: skip
    _, r, _ = ppo_iteration(s, 0, 0)
    B, P, R = r.query.shape[0], r.query.shape[1], r.response.shape[1]
    advantages, returns = torch.randn(B, R, generator=torch.Generator().manual_seed(0)), torch.randn(B, R)

    def widen(t: torch.Tensor, left: int, right: int) -> torch.Tensor:
        return torch.cat([t.new_zeros(B, left), t, t.new_zeros(B, right)], dim=1)

    wide = dataclasses.replace(
        r,
        query=widen(r.query, 5, 0), query_mask=widen(r.query_mask, 5, 0),
        **{k: widen(getattr(r, k), 0, 6) for k in ("response", "mask", "logprobs", "ref_logprobs", "values")},
    )  # fmt: skip
    passes: list[tuple[int, int]] = []
    hook = s.accelerator.unwrap_model(s.policy).register_forward_pre_hook(
        lambda m, a, kw: passes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    models = [s.policy, s.value_model]
    grads: list[list[torch.Tensor]] = []
    s.optimizer.step = lambda *a, **k: (
        grads.append(  # the gradients of the step, the weights left as they are
            [p.grad.clone() for m in models for p in m.parameters() if p.grad is not None]
        )
    )
    rows = list(range(config.batch_size))
    monkeypatch.setattr(losses, "PASS_OVERHEAD_TOKENS", 0)  # short rows: split them by length anyway
    sums = [
        ppo_update(s, r, advantages, returns, rows, []),
        ppo_update(s, wide, widen(advantages, 0, 6), widen(returns, 0, 6), rows, []),
    ]
    by_length, passes[:] = list(passes), []
    monkeypatch.setattr(losses, "LENGTH_GROUPS", 1)  # the whole minibatch in one pass
    sums.append(ppo_update(s, r, advantages, returns, rows, []))
    hook.remove()
    finish(acc)
    for other in (1, 2):
        assert sums[0].keys() == sums[other].keys()
        for k in sums[0]:
            assert sums[other][k] == pytest.approx(sums[0][k], rel=1e-5, abs=1e-6), (other, k)
        assert len(grads[0]) == len(grads[other]) == sum(1 for m in models for _ in m.parameters())
        for a, b in zip(grads[0], grads[other], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    used = int(r.query_mask[rows].sum(-1).max() + r.mask[rows].sum(-1).max())
    assert (
        passes == [(len(rows), used)] and used <= P + R < P + R + 11
    )  # neither update saw the widened padding
    n = len(by_length) // 2
    assert by_length[:n] == by_length[n:] and n >= 2 and sum(b for b, _ in by_length[:n]) == len(rows)
    assert max(w for _, w in by_length) == used and sum(b * w for b, w in by_length[:n]) < len(rows) * used


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("ref_temperature", [None, 0.5])
def test_the_kl_is_measured_to_the_reference_at_its_temperature(
    sft_dir, rm_dir, data_dir, tmp_path, ref_temperature, precision
):
    """`ref_temperature` (a sharpened SFT reference): the rollout's reference log-probs are those of the SFT
    model's logits divided by it, renormalised; unset, by the rollout `temperature` (here 0.7), as before.
    In fp32 and in bf16 (what `auto` runs on CPUs with bf16 units), where the tolerance is bf16's."""
    from instructrl.config import load_config
    from instructrl.models.loading import load_causal_lm
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import ppo_iteration
    from instructrl.training.runtime import finish, make_accelerator

    sets = [*PPO_SET, "iterations=1", "temperature=0.7", f"mixed_precision={precision}"]
    sets += [f"ref_temperature={ref_temperature}"] if ref_temperature else []
    config = load_config(PPOConfig, None, sets)
    acc = make_accelerator(config)
    s = setup_ppo(
        policy_dir=sft_dir, reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl", out=tmp_path, config=config,
        accelerator=acc,
    )  # fmt: skip
    _, r, _ = ppo_iteration(s, 0, 0)
    finish(acc)
    sft = load_causal_lm(sft_dir, dropout=False).eval()
    ids, attn = torch.cat([r.query, r.response], 1), torch.cat([r.query_mask, r.mask], 1)
    R = r.response.shape[1]
    with torch.no_grad():
        logits = sft(
            input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)
        ).logits
    logits = logits[:, -R - 1 : -1].float() / (ref_temperature or 0.7)
    expected = torch.log_softmax(logits, -1).gather(-1, r.response[..., None])[..., 0]
    m = r.mask.bool()
    tol = 1e-4 if precision == "no" else 5e-2  # bf16: the rollout's reference runs under autocast
    torch.testing.assert_close(r.ref_logprobs[m], expected[m], rtol=tol, atol=tol)
    # and it is not the other temperature's (the check can fail)
    other = torch.log_softmax(logits * (ref_temperature or 0.7) / (0.7 if ref_temperature else 0.5), -1)
    assert not torch.allclose(
        r.ref_logprobs[m], other.gather(-1, r.response[..., None])[..., 0][m], atol=1e-3
    )


def test_a_judge_chooses_the_kept_policy_instead_of_the_reward_model(sft_dir, rm_dir, data_dir, tmp_path):
    """`judge_fn` (people's judgements, another RM): keep=best keeps the evaluated policy the judge scores
    highest, whatever the reward model being optimised says; its mean is in every evaluation."""
    from safetensors.torch import load_file

    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.train import run_ppo

    calls: list[int] = []

    def judge(prompts: list[str], responses: list[str]) -> list[float]:
        calls.append(len(prompts))
        return [10.0 if len(calls) == 2 else 0.0] * len(prompts)  # the evaluation after iteration 1

    config = load_config(PPOConfig, None, [*PPO_SET, "iterations=3", "eval_every=1", "lr=1e-3"])
    summary = run_ppo(
        policy_dir=sft_dir, reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl", out=tmp_path / "judged",
        config=config, judge_fn=judge,
    )  # fmt: skip
    assert calls == [8, 8, 8, 8]  # the start, iterations 1, 2, 3: the 8 held-out prompts each time
    assert summary["kept_iteration"] == 1
    assert [e["judge_mean"] for e in summary["evaluations"]] == [0.0, 10.0, 0.0, 0.0]
    # final/ holds iteration 1's weights (a run of 1 iteration from the same seed), not the last iteration's
    paths = dict(policy_dir=sft_dir, reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl")
    for name, iterations in (("one", 1), ("three", 3)):
        update = {"keep": "last", "iterations": iterations}
        assert run_ppo(**paths, out=tmp_path / name, config=config.model_copy(update=update))[
            "kept_iteration"
        ] == (iterations)
    weights = {n: load_file(tmp_path / n / "final" / "model.safetensors") for n in ("judged", "one", "three")}
    assert all(torch.equal(weights["judged"][k], weights["one"][k]) for k in weights["judged"])
    assert any(not torch.equal(weights["judged"][k], weights["three"][k]) for k in weights["judged"])
