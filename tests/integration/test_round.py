"""`instructrl round`: ChatGPT's loop from the command line — round 1 from SFT, round 2 from round 1's
directory with a new export — and its bad input."""

import json

import pytest
from conftest import make_comparisons, write_jsonl

from instructrl.cli import main

ROUND_YAML = """\
rm:
  epochs: 2
  batch_size: 16
  lr: 1.0e-3
  mixed_precision: "no"
ppo:
  iterations: 2
  rollout_batch_size: 16
  batch_size: 8
  max_new_tokens: 8
  lr: 3.0e-4
  mixed_precision: "no"
  eval_prompts: 16
  val_fraction: 0.15
"""


def instructrl(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


def test_two_rounds_continue_the_rm_and_the_policy_with_the_kl_to_sft(sft_dir, data_dir, tmp_path, capsys):
    config = tmp_path / "round.yaml"
    config.write_text(ROUND_YAML)
    data = {
        name: write_jsonl(tmp_path / f"{name}.jsonl", make_comparisons(n, seed=seed))
        for name, n, seed in (("c1", 120, 11), ("v1", 30, 12), ("c2", 60, 13), ("v2", 30, 14))
    }
    prompts = data_dir / "prompts.jsonl"
    common = ["--prompts", prompts, "--config", config]
    assert instructrl("round", "--sft", sft_dir, "--data", data["c1"], "--val-data", data["v1"], "--out", tmp_path / "r1", *common) == 0  # fmt: skip
    r1 = json.loads((tmp_path / "r1" / "round.json").read_text())
    assert r1["round"] == 1 and r1["previous"] is None and r1["rm_accuracy_before"] is None
    assert r1["ppo"]["initial_kl_mean"] == pytest.approx(0.0, abs=1e-6)  # round 1 starts at SFT

    more = ["--set", "ppo.iterations=1", "--set", "rm.latest_round_weight=2"]
    assert instructrl("round", "--previous", tmp_path / "r1", "--data", data["c2"], "--val-data", data["v2"], "--out", tmp_path / "r2", *common, *more) == 0  # fmt: skip
    r2 = json.loads((tmp_path / "r2" / "round.json").read_text())
    assert r2["round"] == 2 and r2["sft"] == str(sft_dir) and r2["previous"] == str(tmp_path / "r1")
    # every round's comparisons, the new export tagged with its round
    lines = (tmp_path / "r2" / "data" / "comparisons.jsonl").read_text().splitlines()
    rounds = [json.loads(line)["round"] for line in lines]
    assert rounds == [1] * 120 + [2] * 60
    # the RM continued from round 1's: its accuracy on round 2's rankings before and after retraining
    assert 0.5 < r2["rm_accuracy_before"] <= 1 and 0.5 < r2["rm_accuracy_after"] <= 1
    rm = json.loads((tmp_path / "r2" / "rm" / "final" / "instructrl.json").read_text())
    assert rm["round"] == 2 and [e["init"] for e in rm["lineage"]] == [str(sft_dir), r1["reward_model"]]
    # PPO continued from round 1's policy: its first evaluation is round 1's kept policy, KL to SFT and all
    assert r2["ppo"]["initial_kl_mean"] == pytest.approx(r1["ppo"]["final_kl_mean"], rel=1e-5)
    assert r1["ppo"]["final_kl_mean"] > 0
    ppo = json.loads((tmp_path / "r2" / "ppo" / "final" / "instructrl.json").read_text())
    assert ppo["sft_model"] == str(sft_dir)
    assert [(e["round"], e["policy_init"]) for e in ppo["lineage"]] == [(1, str(sft_dir)), (2, r1["policy"])]
    capsys.readouterr()


@pytest.mark.parametrize(
    ("args", "yaml", "message"),
    [
        (["--set", "rm.nope=1"], None, "--set rm.nope=1: unknown config key 'nope' for `RMConfig`"),
        (["--set", "lr=1"], None, "expected rm.KEY=VALUE"),
        ([], "rm:\n  epochs: 1\nppo:\n  kl_coef: lots\n", "round.yaml:4: key 'kl_coef'"),
        (
            [],
            "rm:\n  epochs: 1\nsft: {}\n",
            "round.yaml:3: unknown key 'sft' (a round config has 'rm', 'ppo' and 'answers')",
        ),
        (["--db", "sqlite:////nonexistent/labels.db"], None, "no such labeling database"),
        (["--db", "sqlite:///:memory:", "--next-k", "12"], None, "--next-k 12: a ranking task needs 4 to 9"),
        (["--db", "sqlite:///:memory:"], None, "not a labeling database that answers"),
    ],
)
def test_a_bad_round_config_names_where_and_writes_nothing(
    args, yaml, message, sft_dir, data_dir, tmp_path, capsys
):
    comps = write_jsonl(tmp_path / "c.jsonl", make_comparisons(20))
    if yaml is not None:
        (tmp_path / "round.yaml").write_text(yaml)
        args = [*args, "--config", tmp_path / "round.yaml"]
    out = tmp_path / "r1"
    code = instructrl("round", "--sft", sft_dir, "--data", comps, "--prompts", data_dir / "prompts.jsonl", "--out", out, *args)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_round_needs_a_round_directory_to_continue(data_dir, tmp_path, capsys):
    comps = write_jsonl(tmp_path / "c.jsonl", make_comparisons(20))
    code = instructrl("round", "--previous", tmp_path, "--data", comps, "--prompts", data_dir / "prompts.jsonl", "--out", tmp_path / "r2")  # fmt: skip
    assert code == 2 and "not a round directory (no round.json)" in capsys.readouterr().err
