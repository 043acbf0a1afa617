"""Each stage, on a tiny GPT-2 built in the test, shows learning in its metrics."""

import json
import math

import pytest
from conftest import PRECISIONS, run_stage

PPO_SET = [
    "iterations=12",
    "rollout_batch_size=32",
    "batch_size=8",
    "max_new_tokens=12",
    "lr=3e-4",
    "mixed_precision=no",
    "eval_prompts=32",
    "val_fraction=0.15",
    "kl_coef=0.02",
]


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sft_loss_falls(sft_dir):
    run = sft_dir.parent
    metrics = read_metrics(run)
    summary = json.loads((run / "summary.json").read_text())
    vocab = len(json.loads((sft_dir / "tokenizer.json").read_text())["model"]["vocab"])
    assert metrics[0]["train/loss"] == pytest.approx(
        math.log(vocab), abs=0.4
    )  # a fresh model: uniform guesses
    assert summary["val_loss"] < metrics[0]["train/loss"] - 1.5
    val = [m["val/loss"] for m in metrics if "val/loss" in m]
    assert len(val) == 3 and val[-1] < val[0]
    assert (sft_dir / "model.safetensors").is_file() and (sft_dir / "tokenizer.json").is_file()


def test_rm_learns_the_marker_preference_and_loads_back(rm_dir):
    from transformers import AutoModelForSequenceClassification

    summary = json.loads((rm_dir.parent / "summary.json").read_text())
    assert summary["val_accuracy"] >= 0.95
    assert summary["train_pairs"] > summary["train_prompts"]  # all C(K,2) pairs were used
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1)
    assert model.config.num_labels == 1


def test_rm_bias_centres_the_reference_responses(rm_dir, data_dir, tmp_path):
    """After training, the best-ranked training responses average a reward of 0."""
    summary = json.loads((rm_dir.parent / "summary.json").read_text())
    assert summary["bias"] != 0 and summary["bias_reference"].startswith("best-ranked")


def test_rm_continued_from_an_earlier_rm_starts_where_it_left_off(rm_dir, data_dir, tmp_path):
    """ChatGPT's loop: `rm --init RM_DIR` continues the earlier reward model (here with a learning rate too
    small to move it: it keeps the first round's accuracy, where a fresh head from SFT is at chance)."""
    import shutil

    from conftest import RM_SET, make_comparisons, write_jsonl

    rows = [{**r, "round": 2} for r in make_comparisons(60, seed=7)]
    data = [data_dir / "comparisons.jsonl", write_jsonl(tmp_path / "round2.jsonl", rows)]
    still = [*RM_SET, "epochs=1", "lr=1e-9", "latest_round_weight=2"]
    cont = run_stage("rm", tmp_path / "cont", still, init_dir=rm_dir, data=data)
    sft = json.loads((rm_dir / "instructrl.json").read_text())["sft_model"]
    fresh = run_stage("rm", tmp_path / "fresh", still, model_dir=sft, data=data)
    assert cont["val_accuracy"] >= 0.95 and fresh["val_accuracy"] < 0.8, (cont, fresh)
    meta = json.loads((tmp_path / "cont" / "final" / "instructrl.json").read_text())
    assert meta["round"] == 2 and meta["sft_model"] == sft
    assert [e["init"] for e in meta["lineage"]] == [sft, str(rm_dir)]
    shutil.rmtree(tmp_path / "cont")  # --model and --init together are refused (exit 2, in the CLI)
    with pytest.raises(Exception, match="not both"):
        run_stage("rm", tmp_path / "cont", still, init_dir=rm_dir, model_dir=sft, data=data)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ppo_raises_the_reward_with_bounded_kl_and_ptx_limits_the_alignment_tax(
    precision, sft_dir, rm_dir, data_dir, tmp_path
):
    paths = dict(
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=data_dir / "prompts.jsonl",
        pretrain_data=data_dir / "pretrain.jsonl",
    )
    sets = [*PPO_SET, f"mixed_precision={precision}"]
    ppo = run_stage("ppo", tmp_path / "ppo", sets, **paths)
    ptx = run_stage("ppo", tmp_path / "ptx", [*sets, "ptx_coef=1.0"], **paths)
    assert ppo["mixed_precision"] == precision

    # PPO raises the held-out RM score while the KL to the SFT model stays bounded
    assert ppo["final_score_mean"] > ppo["initial_score_mean"] + 1.0, ppo
    assert 0 < ppo["final_kl_mean"] < 15, ppo
    scores = [m["objective/scores"] for m in read_metrics(tmp_path / "ppo") if "objective/scores" in m]
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3
    # PPO-ptx keeps the pretraining loss lower than plain PPO with the same seed
    assert ptx["pretrain_loss_final"] < ppo["pretrain_loss_final"], (ptx, ppo)
    assert ppo["pretrain_loss_initial"] == ptx["pretrain_loss_initial"]
    # and the outputs are Hugging Face checkpoints
    assert (tmp_path / "ppo" / "final" / "config.json").is_file()
    rollouts = (tmp_path / "ppo" / "rollouts.jsonl").read_text().splitlines()
    assert len(rollouts) == 12 * 32


def test_ppo_continued_from_a_ppo_policy_keeps_the_kl_to_the_sft_model(sft_dir, rm_dir, data_dir, tmp_path):
    """ChatGPT's loop: a later round starts from the last policy, and its KL is still measured to SFT."""
    paths = dict(reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl")
    first = run_stage("ppo", tmp_path / "r1", [*PPO_SET, "iterations=4"], policy_dir=sft_dir, **paths)
    assert first["final_kl_mean"] > 0.05, first
    policy = tmp_path / "r1" / "final"
    again = [*PPO_SET, "iterations=1", "keep=last"]
    continued = run_stage("ppo", tmp_path / "r2", again, policy_dir=policy, reference_dir=sft_dir, **paths)
    # the same held-out prompts and sampling seeds: the first evaluation is the previous run's kept policy
    assert continued["initial_kl_mean"] == pytest.approx(first["final_kl_mean"], rel=1e-5)
    assert continued["initial_raw_score_mean"] == pytest.approx(first["final_raw_score_mean"], rel=1e-5)
    # without --reference the continued policy would be its own reference: KL 0
    alone = run_stage("ppo", tmp_path / "alone", again, policy_dir=policy, **paths)
    assert alone["initial_kl_mean"] == pytest.approx(0.0, abs=1e-6)
    # the reward is normalised on the reference's samples, as in the first round
    assert continued["reward_norm"]["gain"] == pytest.approx(first["reward_norm"]["gain"], rel=1e-5)
    lineage = json.loads((tmp_path / "r2" / "final" / "instructrl.json").read_text())["lineage"]
    assert [(e["policy_init"], e["reference"]) for e in lineage] == [
        (str(sft_dir), str(sft_dir)),
        (str(policy), str(sft_dir)),
    ]


def test_pretraining_from_scratch_on_packed_blocks(tiny_model_dir, tmp_path):
    from conftest import make_demos

    from instructrl.config import load_config
    from instructrl.datasets.tokenize import pack_texts
    from instructrl.models.loading import load_tokenizer
    from instructrl.sft.config import SFTConfig
    from instructrl.sft.train import run_pretrain

    texts = [f"{d['prompt']} {d['response']}" for d in make_demos(600, seed=5)]  # text with structure
    blocks = pack_texts(texts[:3], load_tokenizer(tiny_model_dir), 8)
    assert all(len(b.input_ids) == 8 and b.n_prompt == 0 for b in blocks)
    config = load_config(
        SFTConfig, None, ["epochs=2", "batch_size=16", "lr=3e-3", "residual_dropout=0", "mixed_precision=no"]
    )
    s = run_pretrain(
        model_dir=tiny_model_dir,
        texts=texts[:500],
        val_texts=texts[500:],
        out=tmp_path / "pt",
        config=config,
        block_size=32,
    )
    first = json.loads((tmp_path / "pt" / "metrics.jsonl").read_text().splitlines()[0])["train/loss"]
    assert s["stage"] == "pretrain" and s["val_loss"] < first - 0.5
    assert (tmp_path / "pt" / "final" / "model.safetensors").is_file()


def test_stages_in_one_process_may_use_different_precisions(tiny_model_dir, data_dir, tmp_path):
    from conftest import SFT_SET

    a = run_stage(
        "sft",
        tmp_path / "a",
        [*SFT_SET, "epochs=1", "mixed_precision=no"],
        model_dir=tiny_model_dir,
        data=data_dir / "demos.jsonl",
    )
    b = run_stage(
        "sft",
        tmp_path / "b",
        [*SFT_SET, "epochs=1", "mixed_precision=bf16"],
        model_dir=tiny_model_dir,
        data=data_dir / "demos.jsonl",
    )
    assert (a["mixed_precision"], b["mixed_precision"]) == ("no", "bf16")
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=0.05)  # bf16 autocast learns the same


def test_ppo_with_a_reward_function_raises_it_and_sees_each_response_with_its_own_prompt(
    sft_dir, rm_dir, data_dir, tmp_path
):
    """`reward_fn` replaces the reward model: here a rule (how many marker words a response says). Prompts
    too long to fit are skipped; every prompt the function sees must be the one the response answered."""
    from conftest import MARKER, make_prompts, write_jsonl

    short = make_prompts()
    long_ = [{"prompt": "write " + " ".join(["very"] * 200), "user_id": f"u{i}"} for i in range(10)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [*long_[:5], *short, *long_[5:]])
    seen = []

    def markers(prompts: list[str], responses: list[str]) -> list[float]:
        seen.extend(prompts)
        return [float(r.split().count(MARKER)) for r in responses]

    summary = run_stage(
        "ppo",
        tmp_path / "ppo",
        [*PPO_SET, "max_length=64", "too_long=skip"],
        policy_dir=sft_dir,
        reward_dir=rm_dir,
        prompts=prompts,
        reward_fn=markers,
    )
    assert summary["skipped_too_long"] >= 5 and set(seen) <= {p["prompt"] for p in short}
    assert summary["final_score_mean"] > summary["initial_score_mean"] + 0.5, summary
    rollouts = [json.loads(line) for line in (tmp_path / "ppo" / "rollouts.jsonl").read_text().splitlines()]
    assert all(r["raw_score"] == r["response"].split().count(MARKER) for r in rollouts)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_value_model_of_its_own_is_put_on_the_reward_s_scale(
    precision, sft_dir, rm_dir, data_dir, tmp_path
):
    """`value_dir`: the value model starts from a reward model other than the one PPO optimises (e.g. a smaller
    one, cheaper to train), its head normalised by its own scores of the same SFT samples. A value model that
    scores 3x the RM plus 5 is then the RM's own scale again: the run is the run with the value model from the
    RM, number for number, and the summary records both normalisations. In bf16 the first iteration is the same
    (the same rollouts, the value head in fp32); from there a rounding apart in the weights may flip a bf16
    logit and a sampled token, so the runs are compared only up to it."""
    from conftest import scaled_reward_model

    value_dir = scaled_reward_model(rm_dir, tmp_path / "value_rm", 3.0, 5.0)

    paths = dict(policy_dir=sft_dir, reward_dir=rm_dir, prompts=data_dir / "prompts.jsonl")
    sets = [*PPO_SET, "iterations=3", "keep=last", f"mixed_precision={precision}"]
    same = run_stage("ppo", tmp_path / "same", sets, **paths)
    apart = run_stage("ppo", tmp_path / "apart", sets, value_dir=value_dir, **paths)
    rn, vn = apart["reward_norm"], apart["value_norm"]
    assert vn["raw_std"] == pytest.approx(3.0 * rn["raw_std"], rel=1e-4)
    assert vn["raw_mean"] == pytest.approx(3.0 * rn["raw_mean"] + 5.0, rel=1e-4)
    assert same["value_norm"] == same["reward_norm"]  # one model: one normalisation
    m_same, m_apart = read_metrics(tmp_path / "same"), read_metrics(tmp_path / "apart")
    if precision == "bf16":
        m_same, m_apart = m_same[:1], m_apart[:1]  # the first iteration
    else:
        for key in ("final_score_mean", "final_kl_mean"):
            assert apart[key] == pytest.approx(same[key], rel=1e-4, abs=1e-5), key
    assert "losses/value" in m_same[0]
    for a, b in zip(m_same, m_apart, strict=True):  # the value model's first predictions are the same
        if "losses/value" in a:
            assert b["losses/value"] == pytest.approx(a["losses/value"], rel=1e-3, abs=1e-5)
    lineage = json.loads((tmp_path / "apart" / "final" / "instructrl.json").read_text())["lineage"]
    assert lineage[-1]["value_model"] == str(value_dir)
