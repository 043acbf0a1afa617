"""A stage that fails leaves nothing process-wide behind: the next stage in the same Python process (a
notebook, a pipeline, the next test) may use other settings. accelerate keeps its state per process and
refuses a second mixed_precision while the first is still set."""

import pytest
import torch
from conftest import SFT_SET, run_stage


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("stage", ["sft", "rm", "ppo"])
def test_a_stage_that_raises_lets_the_next_stage_choose_another_precision(
    stage, tiny_model_dir, sft_dir, rm_dir, data_dir, tmp_path, monkeypatch
):
    from instructrl.ppo import setup as ppo_setup
    from instructrl.reward import train as rm_train
    from instructrl.sft import train as sft_train

    def boom(*args, **kwargs):
        raise Boom("raised inside the stage, after its accelerator was made")

    module, name = {
        "sft": (sft_train, "train_lm"),
        "rm": (rm_train, "load_reward_model"),
        "ppo": (ppo_setup, "load_causal_lm"),
    }[stage]
    with monkeypatch.context() as m:
        m.setattr(module, name, boom)
        paths = {
            "sft": {"model_dir": tiny_model_dir, "data": data_dir / "demos.jsonl"},
            "rm": {"model_dir": sft_dir, "data": data_dir / "comparisons.jsonl"},
            "ppo": {"policy_dir": sft_dir, "reward_dir": rm_dir, "prompts": data_dir / "prompts.jsonl"},
        }[stage]
        with pytest.raises(Boom):
            run_stage(stage, tmp_path / "failed", ["mixed_precision=bf16"], **paths)
    summary = run_stage(
        "sft",
        tmp_path / "next",
        [*SFT_SET, "max_steps=1"],  # mixed_precision=no
        model_dir=tiny_model_dir,
        data=data_dir / "demos.jsonl",
    )
    assert (
        summary["mixed_precision"] == "no"
        and summary["steps"] == 1
        and torch.isfinite(torch.tensor(summary["val_loss"]))
    )
