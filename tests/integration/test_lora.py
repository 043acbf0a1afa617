"""LoRA (`--set lora_r=N`): PPO learns through adapters, its reference is the SFT model itself with the adapters
off, and every stage's final/ is a plain merged checkpoint plus the adapter in final/adapter/."""

import json

import pytest
import torch
from conftest import RM_SET, SFT_SET, run_stage

LORA_PPO_SET = [
    "iterations=6",
    "rollout_batch_size=32",
    "batch_size=8",
    "max_new_tokens=12",
    "lr=3e-3",  # adapters start at zero and are small: LoRA wants a larger step than full fine-tuning
    "mixed_precision=no",
    "eval_prompts=32",
    "val_fraction=0.15",
    "kl_coef=0.02",
    "keep=last",
    "lora_r=8",
]


def test_lora_and_report_to_keys_parse_from_set_and_ppo_refuses_lora_dropout():
    from instructrl.config import load_config
    from instructrl.errors import UserError
    from instructrl.ppo.config import PPOConfig
    from instructrl.sft.config import SFTConfig

    c = load_config(PPOConfig, None, ["lora_r=8", "lora_target_modules=[q_proj, v_proj]", "report_to="])
    assert (c.lora_r, c.lora_alpha, c.lora_dropout, c.report_to) == (8, 16, 0.0, "none")
    assert c.lora_target_modules == ["q_proj", "v_proj"]
    sft = load_config(SFTConfig, None, ["lora_target_modules=all-linear"])
    assert (sft.lora_r, sft.lora_target_modules) == (0, "all-linear")  # LoRA off unless lora_r > 0
    with pytest.raises(UserError, match="lora_dropout > 0 is refused for PPO"):
        load_config(PPOConfig, None, ["lora_r=8", "lora_dropout=0.1"])
    with pytest.raises(UserError, match="report_to"):
        load_config(SFTConfig, None, ["report_to=mlflow"])


def probe_ids() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.arange(3, 23).reshape(2, 10)  # (2, 10) any in-vocabulary tokens
    return ids, torch.ones_like(ids)


@torch.no_grad()
def logits(model, ids, mask) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).logits.float()


def test_lora_ppo_raises_the_reward_against_the_sft_model_held_in_the_same_weights(
    sft_dir, rm_dir, data_dir, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import train_ppo

    config = load_config(PPOConfig, None, LORA_PPO_SET)
    s = setup_ppo(
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
        out=tmp_path / "ppo",
        config=config,
        changed_keys=set(config.model_fields_set),
    )
    # no second copy of the policy; the optimizer holds adapters and the value head, not the models
    assert s.ref_policy is None
    n_all = sum(p.numel() for p in s.policy.parameters()) + sum(p.numel() for p in s.value_model.parameters())
    n_opt = sum(p.numel() for g in s.optimizer.param_groups for p in g["params"])
    assert n_opt < 0.1 * n_all, (n_opt, n_all)
    summary = train_ppo(s)

    # the reward rises; at the first evaluation the policy is its reference (KL exactly 0)
    assert summary["initial_kl_mean"] == 0.0
    assert summary["final_score_mean"] > summary["initial_score_mean"] + 0.5, summary
    assert summary["final_kl_mean"] > 0.05, summary

    # the reference is the SFT model: with the adapters off the trained policy gives the SFT logits
    ids, mask = probe_ids()
    sft = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
    policy = s.unwrapped_policy.eval()
    with s.reference() as ref:
        assert torch.equal(logits(ref, ids, mask), logits(sft, ids, mask))
    trained = logits(policy, ids, mask)
    assert (trained - logits(sft, ids, mask)).abs().max() > 1e-3  # while the adapters did learn

    # final/: plain transformers loads the merged policy; the SFT model + final/adapter is the same model
    final = tmp_path / "ppo" / "final"
    merged = AutoModelForCausalLM.from_pretrained(final).eval()
    torch.testing.assert_close(logits(merged, ids, mask), trained, atol=1e-5, rtol=0)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_dir), final / "adapter")
    torch.testing.assert_close(logits(with_adapter.eval(), ids, mask), trained, atol=1e-5, rtol=0)
    assert json.loads((final / "instructrl.json").read_text())["lora_r"] == 8
    assert (tmp_path / "ppo" / "value" / "adapter" / "adapter_config.json").is_file()

    # a later round continues from final/ with new adapters: its base is no longer SFT, so the SFT reference
    # is loaded, and the KL is still to it (the first evaluation is the previous run's last)
    again = [*LORA_PPO_SET, "iterations=1"]
    paths = dict(reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl")
    cont = run_stage("ppo", tmp_path / "r2", again, policy_dir=final, reference_dir=sft_dir, **paths)
    assert cont["initial_kl_mean"] == pytest.approx(summary["final_kl_mean"], rel=1e-4)
    assert cont["initial_raw_score_mean"] == pytest.approx(summary["final_raw_score_mean"], rel=1e-4)


def test_lora_sft_and_rm_train_only_adapters_and_save_merged_checkpoints(
    tiny_model_dir, sft_dir, data_dir, tmp_path
):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    # SFT: the loss falls through adapters on every linear layer but the unembedding; every other weight (the
    # embeddings, norms, biases) stays the base model's
    sft = run_stage(
        "sft",
        tmp_path / "sft",
        [*SFT_SET, "epochs=3", "lora_r=8", "lr=1e-2", "lora_target_modules=all-linear"],
        model_dir=tiny_model_dir,
        data=data_dir / "demos.jsonl",
    )
    metrics = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    val = [m["val/loss"] for m in metrics if "val/loss" in m]
    # (3.82 -> 3.25 here: a random base, frozen, leaves the adapters less to work with than a pretrained one)
    assert val[0] > val[1] > val[2] == sft["val_loss"] < metrics[0]["train/loss"] - 0.4, (val, metrics[0])
    final = tmp_path / "sft" / "final"
    base, merged = load_file(tiny_model_dir / "model.safetensors"), load_file(final / "model.safetensors")
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    linear = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert changed == {f"transformer.h.{i}.{m}.weight" for i in range(2) for m in linear}
    ids, mask = probe_ids()
    plain = AutoModelForCausalLM.from_pretrained(final).eval()
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), final / "adapter"
    )
    torch.testing.assert_close(logits(plain, ids, mask), logits(adapted.eval(), ids, mask), atol=1e-5, rtol=0)

    # RM: adapters plus a fully trained scalar head learn the ranking
    rm = run_stage(
        "rm",
        tmp_path / "rm",
        [*RM_SET, "epochs=3", "lora_r=8", "lr=1e-2"],
        model_dir=sft_dir,
        data=data_dir / "comparisons.jsonl",
    )
    assert rm["val_accuracy"] >= 0.9, rm
    final = tmp_path / "rm" / "final"
    assert AutoModelForSequenceClassification.from_pretrained(final).config.num_labels == 1
    adapter = json.loads((final / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and "score" in adapter["modules_to_save"]


def test_lora_ppo_stopped_and_resumed_equals_a_run_never_stopped(
    sft_dir, rm_dir, data_dir, tmp_path, monkeypatch
):
    """accelerate's checkpoint holds the peft models whole (frozen weights, adapters, the value head), so
    --resume works with LoRA as without; with report_to=tensorboard the resumed event file agrees too."""
    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import train_ppo
    from instructrl.training.runtime import StopSignal

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sets = [
        *LORA_PPO_SET,
        "iterations=3",
        "checkpoint_every=1",
        "rollout_batch_size=16",
        "eval_prompts=8",
        "reward_norm_samples=16",
        "report_to=tensorboard",
    ]

    def run(out, resume=False):
        config = load_config(PPOConfig, None, sets)
        s = setup_ppo(
            policy_dir=sft_dir,
            reward_dir=rm_dir,
            prompts=data_dir / "prompts.jsonl",
            out=out,
            config=config,
            resume=resume,
            changed_keys=set(config.model_fields_set),
        )
        return train_ppo(s)

    full = run(tmp_path / "full")
    calls = []

    def crash_in_iteration_2(self, accelerator):  # after iteration 2 was logged, before its checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return False

    with monkeypatch.context() as m:
        m.setattr(StopSignal, "should_stop", crash_in_iteration_2)
        with pytest.raises(RuntimeError, match="killed"):
            run(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 1
    resumed = run(tmp_path / "run", resume=True)

    def curve(run_dir):
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]

    assert len(curve(tmp_path / "run")) == len(curve(tmp_path / "full")) == 4
    for a, b in zip(curve(tmp_path / "run"), curve(tmp_path / "full"), strict=True):
        assert a == pytest.approx(b, rel=1e-6)
    assert resumed["final_score_mean"] == pytest.approx(full["final_score_mean"], rel=1e-6)
    # TensorBoard holds the same curve, each iteration once: the crashed run's iteration 2 was dropped
    for run_dir in (tmp_path / "run", tmp_path / "full"):
        events = EventAccumulator(str(run_dir / "tensorboard" / "instructrl"))
        events.Reload()
        logged = [r["objective/kl"] for r in curve(run_dir) if "objective/kl" in r]
        assert [e.step for e in events.Scalars("objective/kl")] == [1, 2, 3]
        assert [e.value for e in events.Scalars("objective/kl")] == pytest.approx(logged, rel=1e-6)
    assert resumed["final_score_mean"] != resumed["initial_score_mean"]  # the adapters did move
