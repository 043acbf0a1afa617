"""Memory knobs: gradient checkpointing changes no number of SFT, the RM or PPO (and rollouts keep the KV
cache); PPO's frozen models in bf16 agree with fp32 within rounding; the reward model on another device;
a sharded engine asked of `accelerate launch` is refused where instructrl cannot run it."""

import json
import math

import pytest
import torch
from conftest import RM_SET, SFT_SET, run_cli, run_stage
from test_invariants import assert_same_curves, metrics

PPO_SET = [
    "iterations=2",
    "rollout_batch_size=16",
    "batch_size=8",
    "max_new_tokens=8",
    "lr=3e-4",
    "mixed_precision=no",
    "eval_prompts=0",
    "reward_norm_samples=16",
    "val_fraction=0.15",
]


@pytest.fixture()
def checkpoint_calls(monkeypatch) -> list[int]:
    """Counts torch checkpoint calls made by transformers' layers (the function it binds when enabled)."""
    import transformers.modeling_utils as mu

    calls: list[int] = []
    real = mu.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mu, "checkpoint", counting)
    return calls


def weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)


def test_gradient_checkpointing_gives_the_same_sft_and_rm_steps(
    tiny_model_dir, sft_dir, data_dir, tmp_path, checkpoint_calls
):
    sft = [*SFT_SET, "epochs=1", "max_steps=3"]
    demos = dict(model_dir=tiny_model_dir, data=data_dir / "demos.jsonl")
    run_stage("sft", tmp_path / "sft", sft, **demos)
    assert checkpoint_calls == []
    run_stage("sft", tmp_path / "sft_gc", [*sft, "gradient_checkpointing=true"], **demos)
    assert len(checkpoint_calls) >= 3 * 2  # every step, both layers, recomputed in backward
    # loss, grad norm and validation loss of every step, and the trained weights
    assert_same_curves(metrics(tmp_path / "sft"), metrics(tmp_path / "sft_gc"), rel=1e-6)
    assert_same_weights(tmp_path / "sft" / "final", tmp_path / "sft_gc" / "final")

    # share_prompt needs the KV cache, which transformers turns off while training with checkpointing: both
    # runs score K prompt+response rows, so that the comparison is of checkpointing alone
    rm = [*RM_SET, "epochs=1", "max_steps=2", "normalize=false", "share_prompt=false"]
    comparisons = dict(model_dir=sft_dir, data=data_dir / "comparisons.jsonl")
    run_stage("rm", tmp_path / "rm", rm, **comparisons)
    n = len(checkpoint_calls)
    run_stage("rm", tmp_path / "rm_gc", [*rm, "gradient_checkpointing=true"], **comparisons)
    assert len(checkpoint_calls) > n
    assert_same_curves(metrics(tmp_path / "rm"), metrics(tmp_path / "rm_gc"), rel=1e-6)
    assert_same_weights(tmp_path / "rm" / "final", tmp_path / "rm_gc" / "final")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_ppo_run_and_rollouts_keep_the_kv_cache(
    sft_dir, rm_dir, data_dir, tmp_path, lora, checkpoint_calls
):
    from instructrl.config import load_config
    from instructrl.models.lora import hf_model
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import train_ppo

    sets = [*PPO_SET, *(["lora_r=8", "lr=3e-3"] if lora else [])]
    paths = dict(policy_dir=sft_dir, reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl")
    run_stage("ppo", tmp_path / "a", sets, **paths)

    config = load_config(PPOConfig, None, [*sets, "gradient_checkpointing=true"])
    s = setup_ppo(out=tmp_path / "b", config=config, changed_keys=set(config.model_fields_set), **paths)
    policy, value = hf_model(s.unwrapped_policy), hf_model(s.accelerator.unwrap_model(s.value_model).model)
    assert policy.is_activation_checkpointing and value.is_activation_checkpointing  # transformers 5's name
    # every forward pass of the policy: its input length. Generation with the KV cache feeds the prompt once,
    # then one token per step; without the cache every step would feed the whole sequence again.
    lengths: list[int] = []
    hook = policy.get_input_embeddings().register_forward_hook(lambda m, a, o: lengths.append(a[0].shape[1]))
    train_ppo(s)
    hook.remove()
    assert len(checkpoint_calls) > 0  # the PPO updates recompute; the rollouts (eval mode, no grad) do not
    steps = [n for n in lengths if n == 1]
    assert len(steps) >= 2 * (8 - 1) * 0.5, lengths  # most generation steps of both iterations read the cache
    assert_same_curves(metrics(tmp_path / "a"), metrics(tmp_path / "b"), rel=1e-5)


def rollout(s, n: int = 16):
    from instructrl.models.generation import mix_seed
    from instructrl.ppo.rollout import sample_and_score

    rows = list(range(n))
    return sample_and_score(
        s,
        queries=[s.train.queries[i] for i in rows],
        prompts=[s.train.texts[i] for i in rows],
        seeds=[mix_seed(7, i) for i in rows],
        episodes=rows,
    )


def ppo_setup(sft_dir, rm_dir, data_dir, out, sets):
    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo

    config = load_config(PPOConfig, None, [*PPO_SET, *sets])
    return setup_ppo(
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
        out=out,
        config=config,
        changed_keys=set(config.model_fields_set),
    )


def test_frozen_models_in_bf16_hold_bf16_weights_and_agree_with_fp32_within_rounding(
    sft_dir, rm_dir, data_dir, tmp_path
):
    from instructrl.ppo.train import train_ppo
    from instructrl.training.runtime import finish

    fp32 = ppo_setup(sft_dir, rm_dir, data_dir, tmp_path / "fp32", [])
    a = rollout(fp32)
    finish(fp32.accelerator)
    s = ppo_setup(sft_dir, rm_dir, data_dir, tmp_path / "bf16", ["frozen_dtype=bf16"])
    # the frozen models: bf16 (the RM's scalar head fp32), no gradients, never prepared for training
    assert {p.dtype for p in s.ref_policy.parameters()} == {torch.bfloat16}
    rm_dtypes = {n: p.dtype for n, p in s.reward_model.named_parameters()}
    assert {d for n, d in rm_dtypes.items() if not n.startswith("score.")} == {torch.bfloat16}
    assert s.reward_model.score.weight.dtype == torch.float32
    for frozen in (s.ref_policy, s.reward_model):
        assert not any(p.requires_grad for p in frozen.parameters())
        assert all(frozen is not m for m in s.accelerator._models)
    # the trained models stay fp32
    assert {p.dtype for p in s.policy.parameters()} == {torch.float32}
    assert {p.dtype for p in s.value_model.parameters()} == {torch.float32}

    b = rollout(s)
    assert torch.equal(a.response, b.response) and torch.equal(a.logprobs, b.logprobs)  # the policy's own
    mask = a.mask.bool()
    ref_err = (a.ref_logprobs - b.ref_logprobs)[mask].abs()
    score_err = (a.raw_scores - b.raw_scores).abs()
    # bf16 keeps 8 bits of mantissa. Measured here: log-probs off by 0.013 nats at most (0.002 on average),
    # scores of up to 7 by 0.015 at most; the bounds leave room for other seeds and machines
    assert ref_err.max() < 0.05 and ref_err.mean() < 0.01, (ref_err.max(), ref_err.mean())
    assert score_err.max() < 0.01 * max(1.0, a.raw_scores.abs().max().item()), score_err
    # the KL per episode, what β multiplies, moves little
    kl_a = ((a.logprobs - a.ref_logprobs) * a.mask).sum(-1)
    kl_b = ((b.logprobs - b.ref_logprobs) * b.mask).sum(-1)
    assert (kl_a - kl_b).abs().max() < 0.1

    summary = train_ppo(s)
    rows = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert summary["iterations"] == 2 and len(rows) >= 2
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))


def test_the_reward_model_on_its_own_device_gives_the_same_scores(sft_dir, rm_dir, data_dir, tmp_path):
    from instructrl.training.runtime import finish

    default = ppo_setup(sft_dir, rm_dir, data_dir, tmp_path / "a", [])
    a = rollout(default, 8)
    finish(default.accelerator)
    s = ppo_setup(sft_dir, rm_dir, data_dir, tmp_path / "b", ["reward_device=cpu"])
    assert next(s.reward_model.parameters()).device == torch.device("cpu")
    b = rollout(s, 8)
    assert b.raw_scores.device == s.accelerator.device
    assert torch.equal(a.raw_scores, b.raw_scores)
    finish(s.accelerator)


@pytest.mark.parametrize(
    ("value", "said"),
    [("cuda:7", "CUDA device"), ("banana", "not a device name"), ("meta", "only cpu and cuda")],
)
def test_a_reward_device_that_does_not_exist_is_a_config_error(
    sft_dir, rm_dir, data_dir, tmp_path, value, said
):
    if value == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code, _, err = run_cli(
        "ppo",
        "--policy",
        sft_dir,
        "--reward",
        rm_dir,
        "--prompts",
        data_dir / "prompts.jsonl",
        "--out",
        tmp_path / "ppo",
        "--set",
        f"reward_device={value}",
        *[a for v in PPO_SET for a in ("--set", v)],
    )
    assert code == 2, err
    assert f"reward_device={value}" in err and said in err and "Traceback" not in err
    assert not (tmp_path / "ppo").exists()


@pytest.mark.parametrize(
    "var, said",
    [
        ("ACCELERATE_USE_FSDP", "--set sharding=fsdp"),  # FSDP2 runs through instructrl's own sharding
        ("ACCELERATE_USE_DEEPSPEED", "has not run DeepSpeed ZeRO anywhere"),
    ],
)
def test_a_sharded_engine_that_accelerate_would_silently_run_as_ddp_is_refused(
    tiny_model_dir, data_dir, tmp_path, monkeypatch, var, said
):
    # what `accelerate launch --config_file configs/accelerate/fsdp.yaml` (or zero*.yaml) sets in each process
    monkeypatch.setenv(var, "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    code, _, err = run_cli(
        "sft", "--model", tiny_model_dir, "--data", data_dir / "demos.jsonl", "--out", tmp_path / "sft"
    )
    assert code == 2, err
    assert var in err and said in err and "ddp.yaml" in err and "Traceback" not in err
