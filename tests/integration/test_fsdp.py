"""`sharding: fsdp`: the model's parameters, gradients and AdamW state split over processes with torch's
FSDP2 (on CPU, gloo), giving the same run as one unsharded process, and a final/ any process count loads."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RM_SET, SFT_SET, make_demos, run_stage, write_jsonl
from test_invariants import PPO_SET, TOLERANCE, assert_same_curves, metrics, sets, wait_for_lines

from instructrl.errors import UserError
from instructrl.training.runtime import eval_batches

FSDP_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "fsdp.yaml"
BIN = Path(sys.executable).parent


def launch(*command: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    p = subprocess.run([*command], env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]


def launch_two_nodes(args: list[str]) -> None:
    """`instructrl ARGS` as 2 nodes x 1 process on 127.0.0.1: two torchrun agents meeting at a c10d
    rendezvous, as on two machines."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    nodes = [
        subprocess.Popen(
            [
                str(BIN / "torchrun"),
                *("--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank)),
                *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"),
                *("-m", "instructrl", *args),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=240)
        assert node.returncode == 0, err[-3000:]


def weights(final: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(final / "model.safetensors")


def test_a_shorter_evaluation_shard_runs_stand_in_batches_when_sharded():
    # 11 examples over 2 processes in batches of 2: shards of 6 and 5, 3 batches each in lockstep
    assert eval_batches(11, 2, 0, 2, lockstep=True) == [[0, 2], [4, 6], [8, 10]]
    assert eval_batches(11, 2, 1, 2, lockstep=True) == [[1, 3], [5, 7], [9]]
    assert eval_batches(9, 2, 1, 2, lockstep=True) == [[1, 3], [5, 7], []]
    assert eval_batches(9, 2, 1, 2, lockstep=False) == [[1, 3], [5, 7]]


# fp32; 2 micro-batches per process (FSDP2's gradient sync on the last only), a sharded checkpoint every 4 of
# the 12 steps, and 33 validation demonstrations: shards of 17 and 16, 2 batches of evaluation and 1
SHARDED_SFT = [*SFT_SET, "epochs=1", "micro_batch_size=4", "checkpoint_every=4"]


@pytest.fixture(scope="module")
def sft_paths(tiny_model_dir, data_dir, tmp_path_factory) -> dict[str, Path]:
    val = write_jsonl(tmp_path_factory.mktemp("val") / "val.jsonl", make_demos(33, seed=5))
    return {"model": tiny_model_dir, "data": data_dir / "demos.jsonl", "val": val}


def sft_args(paths: dict[str, Path], out: Path) -> list[str]:
    data = ["--model", str(paths["model"]), "--data", str(paths["data"]), "--val-data", str(paths["val"])]
    return ["sft", *data, "--out", str(out), *sets([*SHARDED_SFT, "sharding=fsdp"])]


@pytest.fixture(scope="module")
def sharded_sft(sft_paths, tmp_path_factory) -> Path:
    """The sharded SFT run, 2 processes under `accelerate launch --config_file configs/accelerate/fsdp.yaml`."""
    out = tmp_path_factory.mktemp("sharded-sft") / "two"
    launch(
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(FSDP_CONFIG),
        "-m",
        "instructrl",
        *sft_args(sft_paths, out),
    )
    return out


@pytest.mark.slow
def test_sft_sharded_over_two_processes_equals_one_unsharded_process(sft_paths, sharded_sft, tmp_path):
    one = run_stage(
        "sft",
        tmp_path / "one",
        SHARDED_SFT,
        model_dir=sft_paths["model"],
        data=sft_paths["data"],
        val_data=sft_paths["val"],
    )
    two = json.loads((sharded_sft / "summary.json").read_text())

    # the parameters were DTensor shards, each process holding half of them and of their AdamW state
    assert (two["processes"], two["sharding"], one["sharding"]) == (2, "fsdp", "none")
    held, whole = two["process_state_bytes"], one["process_state_bytes"]
    assert (held["param_type"], whole["param_type"]) == ("DTensor", "Tensor")
    for key in ("params", "grads", "optimizer"):
        assert held[key] <= 0.6 * whole[key], (key, held, whole)

    # the same losses, validation and final weights, in one Hugging Face folder
    assert one["val_examples"] == 33
    assert_same_curves(metrics(tmp_path / "one"), metrics(sharded_sft), rel=1e-5)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    a, b = weights(tmp_path / "one" / "final"), weights(sharded_sft / "final")
    assert_same_weights(a, b, n_embd=64)

    from transformers import AutoModelForCausalLM

    one_model = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "final")
    two_model = AutoModelForCausalLM.from_pretrained(sharded_sft / "final")
    assert two_model.config.architectures == ["GPT2LMHeadModel"]
    ids = torch.arange(40).remainder(one_model.config.vocab_size).view(2, 20)
    with torch.no_grad():
        torch.testing.assert_close(two_model(ids).logits, one_model(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_sharded_sft_stopped_by_sigterm_resumes_to_the_same_run(sft_paths, sharded_sft, tmp_path):
    """torchrun this time. SIGTERM to the launcher reaches both processes; they stop together at a step's
    end, each writing its shards of the model and AdamW state (torch.distributed.checkpoint), and the
    resumed run loads them back: the same losses and final weights as the run never stopped, bit for bit."""
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "instructrl"]
    args = sft_args(sft_paths, tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    stopped = subprocess.Popen([*torchrun, *args], env=env, stderr=subprocess.PIPE, text=True)
    wait_for_lines(tmp_path / "run" / "metrics.jsonl", 2, stopped)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode != 0 and "continue with --resume" in err, err[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert 2 <= state["step"] < 12 and not (tmp_path / "run" / "final").exists()
    assert len(list((tmp_path / "run" / "checkpoint" / "sharded").glob("*.distcp"))) == 2  # one per process

    # one process cannot hold the shards as they were written: a clear error, nothing changed
    with pytest.raises(UserError, match="resume it on 2 or more processes"):
        run_stage(
            "sft",
            tmp_path / "run",
            [*SHARDED_SFT, "sharding=fsdp"],
            model_dir=sft_paths["model"],
            data=sft_paths["data"],
            val_data=sft_paths["val"],
            resume=True,
        )

    launch(*torchrun, *args, "--resume")
    assert metrics(tmp_path / "run") == metrics(sharded_sft)
    a, b = weights(sharded_sft / "final"), weights(tmp_path / "run" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (sharded_sft, tmp_path / "run")]
    assert summaries[0]["val_loss"] == summaries[1]["val_loss"]
    assert not (tmp_path / "run" / "checkpoint").exists()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], n_embd: int) -> None:
    """Each tensor within 1e-5 of its norm, but for the attention's key bias: softmax ignores it (it adds
    the same q.b_k to a query's every logit), so its gradient is 0 but for rounding, which AdamW's
    normalisation amplifies to steps of lr's size. Splitting the batch over processes sums in another
    order: 3e-4 of its norm here, as much under DDP (2 processes, the same run: 3.4e-4)."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.c_attn.bias"):  # GPT-2's [query | key | value] biases
            x, y = torch.cat([x[:n_embd], x[2 * n_embd :]]), torch.cat([y[:n_embd], y[2 * n_embd :]])
        assert (y - x).norm() <= 1e-5 * x.norm(), (k, ((y - x).norm() / x.norm()).item())


def test_ppo_with_sharding_refuses_lora_and_fp16_with_a_clear_message():
    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig

    assert load_config(PPOConfig, None, ["sharding=fsdp"]).sharding == "fsdp"
    with pytest.raises(UserError, match="sharding=fsdp with LoRA"):
        load_config(PPOConfig, None, ["sharding=fsdp", "lora_r=8"])
    with pytest.raises(UserError, match="sharding=fsdp runs bf16 or fp32"):
        load_config(PPOConfig, None, ["sharding=fsdp", "mixed_precision=fp16"])


@pytest.mark.slow
def test_reward_model_sharded_over_two_processes_equals_one_unsharded_process(
    tiny_model_dir, data_dir, tmp_path
):
    """fp32, launched as 2 nodes of 1 process on this machine (torchrun, c10d rendezvous); the RM's best
    epoch is gathered from the shards of its ScalarHead into best/, and final/ (normalised from it) loads as
    a sequence classifier."""
    rm = [*RM_SET, "epochs=1", "max_steps=6", "micro_batch_size=4", "share_prompt=false"]
    comparisons = data_dir / "comparisons.jsonl"
    one = run_stage("rm", tmp_path / "one", rm, model_dir=tiny_model_dir, data=comparisons)
    rm_args = [
        "rm",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(comparisons),
        "--out",
        str(tmp_path / "two"),
    ]
    launch_two_nodes([*rm_args, *sets([*rm, "sharding=fsdp"])])
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (two["sharding"], two["process_state_bytes"]["param_type"]) == ("fsdp", "DTensor")
    assert two["process_state_bytes"]["optimizer"] <= 0.6 * one["process_state_bytes"]["optimizer"]
    assert_same_curves(metrics(tmp_path / "one"), metrics(tmp_path / "two"), rel=1e-5)
    for key in ("val_loss", "val_accuracy", "bias"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    assert_same_weights(weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final"), n_embd=64)

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "two" / "final")
    assert model.config.architectures == ["GPT2ForSequenceClassification"]


# fp32 PPO-ptx, 3 iterations: 2 passes of policy and value model per process and minibatch (gradient sync on
# the last only); 1 pretraining sequence per minibatch, so the second process runs a stand-in pass; 15
# held-out prompts in passes of 7 (shards of 8 and 7: 2 passes and 1); a sharded checkpoint every iteration
SHARDED_PPO = [
    *PPO_SET,
    "iterations=3",
    "micro_batch_size=2",
    "ptx_batch_size=1",
    "eval_prompts=15",
    "forward_batch_size=7",
    "checkpoint_every=1",
]


def ppo_args(sft_dir: Path, rm_dir: Path, data_dir: Path, out: Path) -> list[str]:
    inputs = ["--policy", str(sft_dir), "--reward", str(rm_dir), "--prompts", str(data_dir / "prompts.jsonl")]
    inputs += ["--pretrain-data", str(data_dir / "pretrain.jsonl"), "--out", str(out)]
    return ["ppo", *inputs, *sets([*SHARDED_PPO, "sharding=fsdp"])]


TORCHRUN_2 = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "instructrl"]


@pytest.fixture(scope="module")
def sharded_ppo(sft_dir, rm_dir, data_dir, tmp_path_factory) -> Path:
    """The sharded PPO-ptx run, 2 processes under torchrun."""
    out = tmp_path_factory.mktemp("sharded-ppo") / "two"
    launch(*TORCHRUN_2, *ppo_args(sft_dir, rm_dir, data_dir, out))
    return out


@pytest.mark.slow
def test_ppo_sharded_over_two_processes_equals_one_unsharded_process(
    sft_dir, rm_dir, data_dir, sharded_ppo, tmp_path
):
    """The policy and value model sharded (each on its own, one AdamW over both models' shards), the SFT
    reference and the RM whole on each process; rollouts and evaluation generate from the policy gathered
    whole for them (`sharding.gathered`)."""
    one = run_stage(
        "ppo",
        tmp_path / "one",
        SHARDED_PPO,
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
        pretrain_data=data_dir / "pretrain.jsonl",
    )
    two = json.loads((sharded_ppo / "summary.json").read_text())

    # the parameters were DTensor shards, each process holding half of both models and of their AdamW state
    assert (two["processes"], two["sharding"], one["sharding"]) == (2, "fsdp", "none")
    held, whole = two["process_state_bytes"], one["process_state_bytes"]
    assert (held["param_type"], whole["param_type"]) == ("DTensor", "Tensor")
    for key in ("params", "grads", "optimizer"):
        assert held[key] <= 0.6 * whole[key], (key, held, whole)

    # the same episodes, losses, statistics and evaluations (measured: 2e-6 at most, β's KL penalty)
    rows = metrics(tmp_path / "one")
    assert all("ptx/loss" in m for m in rows if "objective/kl" in m)
    assert_same_curves(rows, metrics(sharded_ppo), rel=1e-5)
    for name in ("rollouts.jsonl", "eval_samples.jsonl"):  # the latter in the order the processes gathered
        a, b = (sorted(line_texts(d / name)) for d in (tmp_path / "one", sharded_ppo))
        assert a == b, name
    assert two["final_score_mean"] == pytest.approx(one["final_score_mean"], rel=1e-5)

    # the same policy and value model, each gathered into one Hugging Face folder
    for folder in ("final", "value"):
        assert_same_weights(weights(tmp_path / "one" / folder), weights(sharded_ppo / folder), n_embd=64)
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    policy = AutoModelForCausalLM.from_pretrained(sharded_ppo / "final")
    value = AutoModelForSequenceClassification.from_pretrained(sharded_ppo / "value")
    assert policy.config.architectures == ["GPT2LMHeadModel"]
    assert value.config.architectures == ["GPT2ForSequenceClassification"]


def line_texts(path: Path) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(str(r.get("eval", r.get("iteration"))), r["prompt"], r["response"]) for r in rows]


@pytest.mark.slow
def test_sharded_ppo_stopped_by_sigterm_resumes_to_the_same_run(
    sft_dir, rm_dir, data_dir, sharded_ppo, tmp_path
):
    """Both models' shards and their one AdamW's go to one torch.distributed.checkpoint (the two models as one
    ModuleDict); the resumed run gives the unbroken one's episodes, metrics and weights bit for bit."""
    args = ppo_args(sft_dir, rm_dir, data_dir, tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    stopped = subprocess.Popen([*TORCHRUN_2, *args], env=env, stderr=subprocess.PIPE, text=True)
    wait_for_lines(tmp_path / "run" / "metrics.jsonl", 1, stopped)  # iteration 1 of 3
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode != 0 and "continue with --resume" in err, err[-3000:]
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["iteration"] < 3

    launch(*TORCHRUN_2, *args, "--resume")
    assert metrics(tmp_path / "run") == metrics(sharded_ppo)
    for name in ("rollouts.jsonl", "eval_samples.jsonl"):
        assert (tmp_path / "run" / name).read_text() == (sharded_ppo / name).read_text(), name
    for folder in ("final", "value"):
        a, b = weights(sharded_ppo / folder), weights(tmp_path / "run" / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder


@pytest.mark.slow
def test_ppo_sharded_in_bf16_equals_one_unsharded_process_within_bf16s_tolerance(
    sft_dir, rm_dir, data_dir, tmp_path
):
    """bf16, what `auto` runs on CPUs with bf16 units: the sharded models gathered in fp32 and computed under
    autocast as unsharded ones are, so one iteration's rollout, losses and statistics agree within bf16's
    tolerance (the next rollout samples the updated policies, which may draw other tokens: test_invariants)."""
    bf16 = [*SHARDED_PPO, "iterations=1", "mixed_precision=bf16"]
    one = tmp_path / "one"
    run_stage(
        "ppo",
        one,
        bf16,
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
        pretrain_data=data_dir / "pretrain.jsonl",
    )
    inputs = ["--policy", str(sft_dir), "--reward", str(rm_dir), "--prompts", str(data_dir / "prompts.jsonl")]
    inputs += ["--pretrain-data", str(data_dir / "pretrain.jsonl"), "--out", str(tmp_path / "two")]
    launch(*TORCHRUN_2, "ppo", *inputs, *sets([*bf16, "sharding=fsdp"]))
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (summary["mixed_precision"], summary["sharding"]) == ("bf16", "fsdp")
    assert summary["process_state_bytes"]["param_type"] == "DTensor"

    def training(rows: list[dict]) -> list[dict]:
        return [r for r in rows if "objective/kl" in r]

    assert_same_curves(training(metrics(one)), training(metrics(tmp_path / "two")), **TOLERANCE["bf16"])
