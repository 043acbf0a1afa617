"""The same global batch gives the same run, however it is split: gradient accumulation 1x8 = 8x1,
2 processes (`accelerate launch`) = 1 process; and a stopped-and-resumed run = a run never stopped."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PRECISIONS, RM_SET, SFT_SET, run_stage

PPO_SET = [
    "iterations=4",
    "rollout_batch_size=16",
    "batch_size=8",
    "max_new_tokens=8",
    "lr=3e-4",
    "mixed_precision=no",
    "eval_prompts=16",
    "val_fraction=0.15",
    "ptx_coef=0.5",
]


def metrics(run: Path) -> list[dict]:
    """metrics.jsonl without wall-clock timings."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def assert_same_curves(a: list[dict], b: list[dict], rel: float = 1e-4, abs_: float = 1e-6):
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert y[k] == pytest.approx(x[k], rel=rel, abs=abs_), (k, x, y)


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "instructrl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


# bf16 autocast: the micro-batches' matmuls have other shapes and round differently; measured at 4 steps on a
# 2-core AMX Xeon, SFT 1.4e-3, RM 2.3e-2 (an accuracy: one pair of 43), and with AVX2's emulated bf16 PPO's
# clip fraction 1.2e-2 (3 tokens of 248). fp32: the same to float summation order.
TOLERANCE = {"no": {"rel": 1e-4}, "bf16": {"rel": 3e-2, "abs_": 2e-2}}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gradient_accumulation_1x8_equals_8x1(precision, tiny_model_dir, sft_dir, data_dir, tmp_path):
    small = ["max_steps=4"] if precision == "bf16" else []  # bf16 is emulated on AVX2-only CPUs: slow
    base = [*SFT_SET, "epochs=1", "batch_size=8", f"mixed_precision={precision}", *small]
    run_stage(
        "sft",
        tmp_path / "a",
        [*base, "micro_batch_size=8"],
        model_dir=tiny_model_dir,
        data=data_dir / "demos.jsonl",
    )
    run_stage(
        "sft",
        tmp_path / "b",
        [*base, "micro_batch_size=1"],
        model_dir=tiny_model_dir,
        data=data_dir / "demos.jsonl",
    )
    assert_same_curves(metrics(tmp_path / "a"), metrics(tmp_path / "b"), **TOLERANCE[precision])

    rm = [*RM_SET, "epochs=1", "batch_size=8", f"mixed_precision={precision}", *small]
    run_stage(
        "rm",
        tmp_path / "c",
        [*rm, "micro_batch_size=8"],
        model_dir=sft_dir,
        data=data_dir / "comparisons.jsonl",
    )
    run_stage(
        "rm",
        tmp_path / "d",
        [*rm, "micro_batch_size=1"],
        model_dir=sft_dir,
        data=data_dir / "comparisons.jsonl",
    )
    assert_same_curves(metrics(tmp_path / "c"), metrics(tmp_path / "d"), **TOLERANCE[precision])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ppo_micro_batches_and_the_held_out_evaluation_do_not_change_the_run(
    precision, sft_dir, rm_dir, data_dir, tmp_path
):
    paths = dict(
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
        pretrain_data=data_dir / "pretrain.jsonl",
    )
    # bf16: one iteration. Its update rounds differently in micro-batches, so the next rollout may draw other
    # tokens, and from there the runs are different samples (fp32: the same to 1e-4 for all 4 iterations)
    ppo = [*PPO_SET, f"mixed_precision={precision}", *(["iterations=1"] if precision == "bf16" else [])]
    run_stage("ppo", tmp_path / "a", ppo, **paths)
    run_stage("ppo", tmp_path / "b", [*ppo, "micro_batch_size=1"], **paths)

    def training(rows: list[dict]) -> list[dict]:
        return [r for r in rows if "objective/kl" in r]

    # bf16: the iteration's own rollout, losses and statistics (the evaluation after it samples the updated
    # policies, which may draw other tokens)
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    if precision == "bf16":
        a, b = training(a), training(b)
    assert_same_curves(a, b, **TOLERANCE[precision])
    # the held-out evaluation samples with seeds of its own: without it, training runs exactly the same
    summary = run_stage("ppo", tmp_path / "c", [*ppo, "eval_prompts=0"], **paths)
    assert summary["eval_prompts"] == 0 and summary["final_score_mean"] is None

    assert_same_curves(training(metrics(tmp_path / "a")), training(metrics(tmp_path / "c")))


# the shipped DDP config (2 processes; on a CPU-only machine accelerate runs it with gloo)
DDP_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "ddp.yaml"
LAUNCH = ["accelerate", "launch", "--config_file", str(DDP_CONFIG), "-m", "instructrl"]


def launch_2p(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    p = subprocess.run([accelerate, *LAUNCH[1:], *args], env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]


def sft_in_one_and_two_processes(sft: list[str], model_dir: Path, data_dir: Path, tmp_path: Path) -> dict:
    """SFT with `sft` in this process (into tmp_path/sft1) and launched on 2 processes (sft2); the latter's
    summary."""
    run_stage("sft", tmp_path / "sft1", sft, model_dir=model_dir, data=data_dir / "demos.jsonl")
    data = str(data_dir / "demos.jsonl")
    launch_2p("sft", "--model", str(model_dir), "--data", data, "--out", str(tmp_path / "sft2"), *sets(sft))
    return json.loads((tmp_path / "sft2" / "summary.json").read_text())


@pytest.mark.slow
def test_two_processes_equal_one_process(tiny_model_dir, sft_dir, rm_dir, data_dir, tmp_path):
    summary = sft_in_one_and_two_processes([*SFT_SET, "epochs=1"], tiny_model_dir, data_dir, tmp_path)
    assert summary["processes"] == 2
    assert_same_curves(metrics(tmp_path / "sft1"), metrics(tmp_path / "sft2"))

    rm = [*RM_SET, "epochs=2"]
    run_stage("rm", tmp_path / "rm1", rm, model_dir=sft_dir, data=data_dir / "comparisons.jsonl")
    launch_2p(
        "rm",
        "--model",
        str(sft_dir),
        "--data",
        str(data_dir / "comparisons.jsonl"),
        "--out",
        str(tmp_path / "rm2"),
        *sets(rm),
    )
    assert_same_curves(metrics(tmp_path / "rm1"), metrics(tmp_path / "rm2"), rel=1e-3)

    paths = [
        "--policy",
        str(sft_dir),
        "--reward",
        str(rm_dir),
        "--prompts",
        str(data_dir / "prompts.jsonl"),
        "--pretrain-data",
        str(data_dir / "pretrain.jsonl"),
    ]
    # PPO-ptx with 1 pretraining sequence per minibatch: the second process has none
    ppo = [*PPO_SET, "ptx_coef=0.5", "ptx_batch_size=1"]
    run_stage(
        "ppo",
        tmp_path / "ppo1",
        ppo,
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
        pretrain_data=data_dir / "pretrain.jsonl",
    )
    launch_2p("ppo", *paths, "--out", str(tmp_path / "ppo2"), *sets(ppo))
    one, two = metrics(tmp_path / "ppo1"), metrics(tmp_path / "ppo2")
    assert all("ptx/loss" in m for m in one if "objective/kl" in m)
    assert_same_curves(one, two, rel=1e-3)


@pytest.mark.slow
def test_two_processes_equal_one_process_in_bf16(tiny_model_dir, data_dir, tmp_path):
    """SFT under bf16 autocast (a few steps: bf16 is emulated on AVX2-only CPUs): each process runs half of
    each micro-batch, other shapes, so the tolerance is bf16's (TOLERANCE)."""
    sft = [*SFT_SET, "epochs=1", "mixed_precision=bf16", "max_steps=4"]
    summary = sft_in_one_and_two_processes(sft, tiny_model_dir, data_dir, tmp_path)
    assert (summary["processes"], summary["mixed_precision"]) == (2, "bf16")
    assert_same_curves(metrics(tmp_path / "sft1"), metrics(tmp_path / "sft2"), **TOLERANCE["bf16"])


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before it could be stopped: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_sft_stopped_by_sigterm_resumes_to_the_same_result(precision, tiny_model_dir, data_dir, tmp_path):
    """Exactly the same in bf16 too: a resumed run computes the same shapes as one never stopped."""
    args = ["sft", "--model", str(tiny_model_dir), "--data", str(data_dir / "demos.jsonl")]
    config = sets(
        [*SFT_SET, "epochs=8", "batch_size=8", "residual_dropout=0.1", f"mixed_precision={precision}"]
    )  # dropout: RNG must resume too
    full = cli(*args, "--out", str(tmp_path / "full"), *config)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    stopped = cli(*args, "--out", str(tmp_path / "run"), *config)
    wait_for_lines(tmp_path / "run" / "metrics.jsonl", 30, stopped)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=60) == 130
    assert "continue with --resume" in stopped.stderr.read()
    assert (tmp_path / "run" / "checkpoint").is_dir() and not (tmp_path / "run" / "final").exists()

    resumed = cli(*args, "--out", str(tmp_path / "run"), *config, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert metrics(tmp_path / "run") == metrics(tmp_path / "full")
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("full", "run"))
    assert a["val_loss"] == b["val_loss"] and not (tmp_path / "run" / "checkpoint").exists()


@pytest.mark.slow
def test_ppo_killed_hard_resumes_from_its_last_checkpoint(sft_dir, rm_dir, data_dir, tmp_path):
    """With a value model of its own (--value-model), whose head's normalisation the checkpoint keeps."""
    from conftest import scaled_reward_model

    value_dir = scaled_reward_model(rm_dir, tmp_path / "value_rm", 2.0, -1.0)
    args = [
        "ppo",
        "--policy",
        str(sft_dir),
        "--reward",
        str(rm_dir),
        "--value-model",
        str(value_dir),
        "--prompts",
        str(data_dir / "prompts.jsonl"),
        "--pretrain-data",
        str(data_dir / "pretrain.jsonl"),
    ]
    config = sets([*PPO_SET, "iterations=12", "checkpoint_every=3"])
    full = cli(*args, "--out", str(tmp_path / "full"), *config)
    assert full.wait(timeout=300) == 0, full.stderr.read()

    killed = cli(*args, "--out", str(tmp_path / "run"), *config)
    wait_for_lines(tmp_path / "run" / "metrics.jsonl", 9, killed)  # eval line + 8 iterations
    killed.send_signal(signal.SIGKILL)  # no chance to save: resume from the iteration-6 checkpoint
    killed.wait(timeout=60)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["iteration"] in (6, 9)

    resumed = cli(*args, "--out", str(tmp_path / "run"), *config, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_curves(metrics(tmp_path / "run"), metrics(tmp_path / "full"), rel=1e-6)
    rollouts = (tmp_path / "run" / "rollouts.jsonl").read_text()
    assert rollouts == (tmp_path / "full" / "rollouts.jsonl").read_text()  # the same episodes, logged once
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["value_norm"]["raw_std"] == pytest.approx(
        2.0 * summary["reward_norm"]["raw_std"], rel=1e-4
    )
