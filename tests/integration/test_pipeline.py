"""`instructrl pipeline`: SFT -> two rounds -> A/B answers -> report from one YAML on the labeling app's
exports, resumed after a stop without redoing a finished step, and its bad configs."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FILLER, make_comparisons, make_demos, make_prompts, run_cli, write_jsonl

# The smallest settings that still train: a whole run takes a few seconds on 2 cores.
PIPELINE_YAML = """\
out: {out}
base_model: org/tiny-gpt2
data:
  source: exported
  demonstrations: {exports}/all
  rounds:
    - {exports}/round1
    - {exports}/round2
  prompts: {exports}/prompts.jsonl
sft:
  epochs: 1
  batch_size: 16
  lr: 3.0e-3
  residual_dropout: 0
  mixed_precision: "no"
rm:
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
  eval_every: 1
  val_fraction: 0.15
evaluation:
  answers:
    prompts: {exports}/eval_prompts.jsonl
    max_new_tokens: 8
  suite:
    tax: [{exports}/tax.jsonl]
"""


@pytest.fixture()
def exports(tmp_path) -> Path:
    """What `instructrl label export` writes: a folder of every split's demonstrations, and one folder per
    round of rankings (`--round N`), an empty file where a split has no labels."""
    d = tmp_path / "exports"
    files = {
        "all/train/demonstrations.jsonl": make_demos(120),
        "all/validation/demonstrations.jsonl": make_demos(30, seed=5),
        "all/test/demonstrations.jsonl": [],
        "round1/train/comparisons.jsonl": make_comparisons(100, seed=11),
        "round1/validation/comparisons.jsonl": make_comparisons(30, seed=12),
        "round2/train/comparisons.jsonl": make_comparisons(60, seed=13),
        "round2/validation/comparisons.jsonl": make_comparisons(30, seed=14),
        "round2/test/comparisons.jsonl": [],
        "prompts.jsonl": make_prompts(120),
        "eval_prompts.jsonl": make_prompts(6, seed=9),
        "tax.jsonl": [
            {"ctx": f"the {w} sat on the", "endings": ["mat", "tree"], "label": 0} for w in FILLER[:8]
        ],
    }
    for name, rows in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(d / name, rows)
    return d


def config_file(tmp_path: Path, exports: Path, out: Path, text: str = PIPELINE_YAML) -> Path:
    file = tmp_path / f"{out.name}.yaml"
    file.write_text(text.format(out=out, exports=exports))
    return file


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def stop_round2_ppo_after_its_first_iteration(monkeypatch):
    """Ctrl-C in round 2's PPO: its stop flag reads as set, so it checkpoints after iteration 1 and exits."""
    import instructrl.ppo.train as ppo_train
    from instructrl.training.runtime import StopSignal

    real = ppo_train.run_ppo

    def run_ppo(**kwargs):
        if Path(kwargs["out"]).parent.name == "round2":
            monkeypatch.setattr(StopSignal, "should_stop", lambda self, accelerator: True)
        return real(**kwargs)

    monkeypatch.setattr(ppo_train, "run_ppo", run_ppo)


def test_the_pipeline_runs_two_rounds_and_a_rerun_after_a_stop_redoes_no_finished_step(
    hub_cache, exports, tmp_path, monkeypatch
):
    # an unbroken run, end to end
    full = tmp_path / "full"
    code, out, err = run_cli("pipeline", "--config", config_file(tmp_path, exports, full))
    assert code == 0, err
    steps = read(full / "steps.json")
    assert list(steps) == ["sft", "round1", "round2", "eval-answers", "eval-suite", "report"]
    assert (full / "sft" / "final" / "config.json").is_file() and (full / "report.md").is_file()
    r1, r2 = (read(full / f"round{n}" / "round.json") for n in (1, 2))
    sft = str(full / "sft" / "final")
    assert (
        r1["round"] == 1 and r1["sft"] == sft and r2["round"] == 2 and r2["previous"] == str(full / "round1")
    )
    # round 2 continued round 1's RM and policy, as `instructrl round --previous` does, the KL still to SFT
    rm = read(full / "round2" / "rm" / "final" / "instructrl.json")
    assert [e["init"] for e in rm["lineage"]] == [sft, r1["reward_model"]]
    ppo = read(full / "round2" / "ppo" / "final" / "instructrl.json")
    assert ppo["sft_model"] == sft and [e["policy_init"] for e in ppo["lineage"]] == [sft, r1["policy"]]
    assert r2["ppo"]["initial_kl_mean"] == pytest.approx(r1["ppo"]["final_kl_mean"], rel=1e-5)
    assert 0.5 < r2["rm_accuracy_before"] <= 1 and 0.5 < r2["rm_accuracy_after"] <= 1
    # every round's comparisons in round 2's RM data, each tagged with its round
    rounds = [json.loads(line)["round"] for line in (full / "round2" / "data" / "comparisons.jsonl").open()]
    assert rounds == [1] * 100 + [2] * 60
    pairs = [json.loads(line) for line in (full / "eval" / "answers.jsonl").open()]
    assert [(p["model_a"], p["model_b"]) for p in pairs] == [("round1", "sft")] * 6 + [("round2", "sft")] * 6
    # the public benchmarks on the base model, SFT and the last policy, against the base model
    suite = read(full / "eval" / "suite" / "suite.json")
    assert list(suite["models"]) == ["base", "sft", "policy"] and suite["baseline"] == "base"
    assert suite["models"]["policy"] == str((full / "round2" / "ppo" / "final").resolve())
    report = read(full / "report.json")
    assert report["suite_report"] == str(full / "eval" / "suite" / "report.html")
    assert [r["round"] for r in report["rounds"]] == [1, 2] and report["sft"] == sft

    # the same config stopped in round 2's PPO (round 2's RM done), then run again
    run = tmp_path / "run"
    config = config_file(tmp_path, exports, run)
    with monkeypatch.context() as m:
        stop_round2_ppo_after_its_first_iteration(m)
        code, _, err = run_cli("pipeline", "--config", config)
    assert code == 130 and "continue with --resume" in err, err
    assert list(read(run / "steps.json")) == ["sft", "round1"]
    assert (run / "round2" / "ppo" / "checkpoint").is_dir()
    finished = [
        run / "sft" / "summary.json",
        run / "round1" / "round.json",
        run / "round2" / "rm" / "summary.json",
    ]
    mtimes = [f.stat().st_mtime_ns for f in finished]

    code, _, err = run_cli("pipeline", "--config", config)
    assert code == 0, err
    log = [line.split(" ", 1)[1].split(" (")[0] for line in (run / "steps.log").read_text().splitlines()]
    assert log[-10:] == [
        "skip sft", "skip round1", "start round2", "done round2", "start eval-answers", "done eval-answers",
        "start eval-suite", "done eval-suite", "start report", "done report",
    ]  # fmt: skip
    assert [f.stat().st_mtime_ns for f in finished] == mtimes  # nothing finished was redone
    # round 2's PPO went on from its checkpoint, to the unbroken run's result (fp32, same shapes)
    metrics = [(d / "round2" / "ppo" / "metrics.jsonl").read_text().splitlines() for d in (full, run)]
    assert len(metrics[1]) == len(metrics[0])
    resumed = read(run / "round2" / "round.json")
    assert resumed["ppo"] == pytest.approx(r2["ppo"], rel=1e-5)
    assert resumed["rm_accuracy_after"] == r2["rm_accuracy_after"]
    answers = [json.loads(line)["response_a"] for line in (run / "eval" / "answers.jsonl").open()]
    assert answers == [p["response_a"] for p in pairs]

    # once done, a rerun does nothing; another config for the same directory is refused
    code, _, err = run_cli("pipeline", "--config", config)
    assert code == 0 and not (run / "round3").exists()
    assert (run / "steps.log").read_text().splitlines()[-1].split(" ", 1)[1].startswith("skip report")
    code, _, err = run_cli("pipeline", "--config", config, "--set", "ppo.iterations=3")
    assert code == 2 and "these keys differ: ppo.iterations" in err, err


SMALL = [
    "sft.epochs=1", "sft.batch_size=16", "sft.lr=3e-3", "rm.batch_size=16", "rm.lr=1e-3",
    "ppo.iterations=2", "ppo.rollout_batch_size=16", "ppo.batch_size=8", "ppo.max_new_tokens=8",
    "ppo.eval_prompts=16", "evaluation.answers.max_new_tokens=8",
]  # fmt: skip
"""The example's sizes made a test's: every other key is the example's own (its precision: auto)."""


def test_the_example_config_runs_end_to_end_on_a_tiny_model(hub_cache, exports, tmp_path, monkeypatch):
    """examples/pipeline.yaml itself, from a directory laid out as its comments say (the app's exports under
    exports/, the prompts under data/), on a tiny Hub model and with a test's sizes: two rounds, the A/B
    answers, the report; a second run of the same command skips every step."""
    example = Path(__file__).parents[2] / "examples" / "pipeline.yaml"
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "prompts_train.jsonl", make_prompts(100))
    write_jsonl(tmp_path / "data" / "prompts_validation.jsonl", make_prompts(20, seed=3))
    write_jsonl(tmp_path / "data" / "prompts_test.jsonl", make_prompts(6, seed=9))
    monkeypatch.chdir(tmp_path)
    sets = [a for kv in ["base_model=org/tiny-gpt2", *SMALL] for a in ("--set", kv)]
    code, _, err = run_cli("pipeline", "--config", str(example), *sets)
    assert code == 0, err
    out = tmp_path / "runs" / "pipeline"
    assert list(read(out / "steps.json")) == ["sft", "round1", "round2", "eval-answers", "report"]
    r2 = read(out / "round2" / "round.json")
    assert r2["previous"] == "runs/pipeline/round1" and 0 <= r2["rm_accuracy_after"] <= 1
    pairs = [json.loads(line) for line in (out / "eval" / "answers.jsonl").open()]
    assert [(p["model_a"], p["model_b"]) for p in pairs] == [("round1", "sft")] * 6 + [("round2", "sft")] * 6
    code, _, err = run_cli("pipeline", "--config", str(example), *sets)
    assert code == 0, err
    log = [line.split(" ", 2)[1:] for line in (out / "steps.log").read_text().splitlines()[-5:]]
    assert [event for event, _ in log] == ["skip"] * 5


def test_a_pipeline_killed_hard_after_a_step_goes_on_from_there(tiny_model_dir, exports, tmp_path):
    """SIGKILL (no checkpoint, no clean-up) in round 1's RM, SFT done, before the RM's first checkpoint."""
    out = tmp_path / "killed"
    config = config_file(tmp_path, exports, out, PIPELINE_YAML.replace("org/tiny-gpt2", str(tiny_model_dir)))
    command = [sys.executable, "-m", "instructrl", "pipeline", "--config", str(config)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    metrics = out / "round1" / "rm" / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "round 1's RM did not start in time"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert list(read(out / "steps.json")) == ["sft"]
    sft_done = (out / "sft" / "summary.json").stat().st_mtime_ns

    code, _, err = run_cli("pipeline", "--config", config)
    assert code == 0, err
    assert list(read(out / "steps.json")) == [
        "sft",
        "round1",
        "round2",
        "eval-answers",
        "eval-suite",
        "report",
    ]
    assert "skip sft" in (out / "steps.log").read_text()
    assert (out / "sft" / "summary.json").stat().st_mtime_ns == sft_done
    assert read(out / "round2" / "round.json")["previous"] == str(out / "round1")
    for stage in ("rm", "ppo"):  # a stage killed before its first checkpoint started over: one log, not two
        steps = [
            json.loads(line).get("step", json.loads(line).get("iteration"))
            for line in (out / "round1" / stage / "metrics.jsonl").open()
        ]
        assert steps == sorted(steps), (stage, steps)  # a second start would count from 1 again


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("sft:\n", "sfft:\n"), "pipeline.yaml:10: unknown key 'sfft' (a pipeline config has out, "),
        (("  lr: 3.0e-4\n", "  lr: fast\n"), "pipeline.yaml:25: key 'lr': Input should be a valid number"),
        (("  source: exported\n", "  source: database\n"), "pipeline.yaml:3: key 'data.database_url': Field required"),
        (("  source: exported\n", "  source: app\n"), "pipeline.yaml:3: key 'data': Input tag 'app' found using"),
        (("  batch_size: 8\n", "  batch_size: 8\n  ptx_coef: 1\n"), "pipeline.yaml:24: ppo.ptx_coef > 0 (PPO-ptx) needs pretraining text"),
        (("    max_new_tokens: 8\n", "    max_new_tokens: 0\n"), "pipeline.yaml:33: key 'evaluation.answers.max_new_tokens'"),
        (("round2\n", "round3\n"), "round3: no such export folder"),
        (("data:\n", "dataa:\n"), "pipeline.yaml:3: unknown key 'dataa' (a pipeline config has out, "),
        ((PIPELINE_YAML[PIPELINE_YAML.index("data:"):PIPELINE_YAML.index("sft:")], ""), "pipeline.yaml: no 'data' section: say where the labels come from"),
    ],
)  # fmt: skip
def test_a_bad_pipeline_config_says_where_and_trains_nothing(
    edit, message, exports, tiny_model_dir, tmp_path
):
    out = tmp_path / "out"
    text = PIPELINE_YAML.replace(*edit).replace("org/tiny-gpt2", str(tiny_model_dir))
    (tmp_path / "pipeline.yaml").write_text(text.format(out=out, exports=exports))
    code, _, err = run_cli("pipeline", "--config", tmp_path / "pipeline.yaml")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_the_example_config_is_a_valid_pipeline_config():
    from instructrl.pipeline.config import load_pipeline_config

    config = load_pipeline_config(Path(__file__).parents[2] / "examples" / "pipeline.yaml")
    assert config.data is not None and config.data.open().rounds == 2
    assert config.round_config(1).rm.latest_round_weight == 2


def test_later_rounds_can_train_the_continued_reward_model_for_fewer_epochs(tmp_path):
    from instructrl.pipeline.config import PipelineConfig
    from instructrl.reward.config import RMConfig

    config = PipelineConfig(out=tmp_path, base_model="org/tiny-gpt2", rm=RMConfig(epochs=4))
    assert [config.round_config(n).rm.epochs for n in (1, 2, 3)] == [4, 4, 4]
    later = config.model_copy(update={"later_rm_epochs": 2})
    assert [later.round_config(n).rm.epochs for n in (1, 2, 3)] == [4, 2, 2]
    assert "epochs" in later.round_config(2).changed["rm"] and "rm" not in later.round_config(1).changed


def test_a_round_asks_its_label_source_for_the_judge_of_its_ppo(tmp_path, monkeypatch):
    """A source whose labelers answer while PPO runs (the demo's) chooses PPO's kept checkpoint; the round
    passes its judge, for that round's directory, to run_round."""
    import instructrl.pipeline.run as run
    from instructrl.pipeline.config import PipelineConfig
    from instructrl.pipeline.labels import Demonstrations, Prompts, RoundLabels

    def judge(prompts, responses):
        return [1.0] * len(prompts)

    class Source:
        rounds = 1
        asked: list = []

        def demonstrations(self):
            return Demonstrations(tmp_path / "demos.jsonl", None)

        def prompts(self):
            return Prompts(tmp_path / "prompts.jsonl", None)

        def round_labels(self, round_, *, policy, previous_policy):
            assert policy == tmp_path / "sft" / "final" and previous_policy is None
            return RoundLabels(tmp_path / "comparisons.jsonl", None)

        def judge(self, round_, out):
            self.asked.append((round_, out))
            return judge

    seen = {}

    def run_round(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(run, "run_round", run_round)
    with pytest.raises(RuntimeError, match="stop here"):
        run.step_round(PipelineConfig(out=tmp_path, base_model="m"), Source(), 1)
    assert Source.asked == [(1, tmp_path / "round1")] and seen["judge_fn"] is judge
    assert seen["sft"] == tmp_path / "sft" / "final" and seen["reward_fn"] is None


def test_a_failed_step_names_itself_and_the_command_that_goes_on(hub_cache, exports, tmp_path, monkeypatch):
    """A step that fails on a user's mistake: a clean error (exit 2) naming the step, what is kept and the
    command that goes on from it; a defect: its traceback under the same words."""
    import instructrl.pipeline.run as run
    from instructrl.errors import UserError

    def disk_full(**kwargs):
        raise UserError("the disk is full")

    monkeypatch.setattr(run, "run_round", disk_full)
    out = tmp_path / "out"
    config = config_file(tmp_path, exports, out)
    code, _, err = run_cli("pipeline", "--config", config, "--set", "sft.epochs=1")
    assert code == 2 and "the disk is full" in err and "Traceback" not in err, err
    assert "stopped in step 'round1'" in err and f"the steps done (sft) are kept in {out}" in err
    assert f"instructrl pipeline --config {config} --set sft.epochs=1" in err
    assert list(read(out / "steps.json")) == ["sft"]

    def defect(**kwargs):
        raise AssertionError("a bug")

    monkeypatch.setattr(run, "run_round", defect)
    from instructrl.pipeline.config import load_pipeline_config

    with pytest.raises(run.StepFailed, match=r"step 'round1'.*Go on from this step with") as e:
        run.run_pipeline(load_pipeline_config(config, ["sft.epochs=1"]), log=lambda m: None)
    assert isinstance(e.value.__cause__, AssertionError)
