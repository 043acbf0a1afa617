"""Bad input through the command line: exit code 2, a message that names the problem, no traceback,
and nothing written. The commands run in-process through the same `main` as `instructrl` (a subprocess
spent ~7 s importing per call on 2 cores); one test runs the real console command."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import make_comparisons, run_cli, write_jsonl


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def instructrl(*args: str) -> Result:
    return Result(*run_cli(*args))


def instructrl_process(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "instructrl", *args], env=env, capture_output=True, text=True, timeout=120
    )


def assert_user_error(p: Result | subprocess.CompletedProcess, *fragments: str) -> None:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    for f in fragments:
        assert f in p.stderr, (f, p.stderr)


@pytest.fixture()
def comps(tmp_path):
    return write_jsonl(tmp_path / "c.jsonl", make_comparisons(40))


def rm(sft_dir, data, out, *more):
    return instructrl("rm", "--model", str(sft_dir), "--data", str(data), "--out", str(out), *more)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 2, 2]}', "not a permutation of 0..2"),
        ('{"prompt": "p", "responses": ["a"], "ranking": [0]}', "needs 2 to 9 responses, got 1"),
        (
            json.dumps({"prompt": "p", "responses": list("abcdefghij"), "ranking": list(range(10))}),
            "needs 2 to 9 responses, got 10",
        ),
        ('{"prompt": "p", "responses": ["a", "b"], "ranking": [0, 1]', "not valid JSON"),
        ('{"responses": ["a", "b"], "ranking": [0, 1]}', "field 'prompt': missing"),
    ],
)
def test_bad_comparison_line_names_file_line_and_field(sft_dir, comps, tmp_path, bad_line, expected):
    with comps.open("a") as f:
        f.write(bad_line + "\n")
    p = rm(sft_dir, comps, tmp_path / "out")
    assert_user_error(p, f"{comps}:41:", expected)
    assert not (tmp_path / "out").exists()


def test_empty_dataset(sft_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_user_error(rm(sft_dir, empty, tmp_path / "out"), "the dataset is empty")
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_and_bad_value(sft_dir, comps, tmp_path):
    cfg = tmp_path / "rm.yaml"
    cfg.write_text("epochs: 1\nlearning_rate: 1e-5\n")
    assert_user_error(
        rm(sft_dir, comps, tmp_path / "o1", "--config", str(cfg)),
        f"{cfg}:2: unknown config key 'learning_rate'",
    )
    assert_user_error(
        rm(sft_dir, comps, tmp_path / "o2", "--set", "lrr=1"), "unknown config key 'lrr'", "Did you mean 'lr'"
    )
    assert_user_error(rm(sft_dir, comps, tmp_path / "o3", "--set", "batch_size=big"), "key 'batch_size'")
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_model_directory_that_does_not_exist(comps, tmp_path):
    """The real console command, in a process of its own: exit 2 and the message, no traceback."""
    p = instructrl_process(
        "rm", "--model", str(tmp_path / "no-such-model"), "--data", str(comps), "--out", str(tmp_path / "out")
    )
    assert_user_error(p, "no-such-model: model directory does not exist")


def test_prompt_longer_than_the_context_is_skipped_and_counted_or_rejected(sft_dir, tmp_path):
    rows = make_comparisons(40)
    rows[5]["prompt"] = " ".join(["cat"] * 300)  # the tiny model's window is 128 tokens
    data = write_jsonl(tmp_path / "c.jsonl", rows)
    common = [
        "--set",
        "epochs=1",
        "--set",
        "batch_size=8",
        "--set",
        "mixed_precision=no",
        "--set",
        "val_fraction=0.25",
    ]
    p = rm(sft_dir, data, tmp_path / "skip", *common)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "skip" / "summary.json").read_text())["skipped_too_long"] == 1
    p = rm(sft_dir, data, tmp_path / "error", *common, "--set", "too_long=error")
    assert_user_error(p, f"{data}:6: prompt is 300 tokens, longer than max_length=128", "too_long=skip")
    assert not (tmp_path / "error").exists()


def test_existing_run_is_not_overwritten_and_resume_needs_a_run(sft_dir, comps, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_user_error(rm(sft_dir, comps, out), "already holds a run", "--resume")
    assert (out / "notes.txt").read_text() == "mine"
    assert_user_error(rm(sft_dir, comps, tmp_path / "fresh", "--resume"), "nothing to resume")


def ppo(sft_dir, rm_dir, data_dir, out, *more):
    return instructrl(
        "ppo",
        "--policy",
        str(sft_dir),
        "--reward",
        str(rm_dir),
        "--prompts",
        str(data_dir / "prompts.jsonl"),
        "--out",
        str(out),
        *more,
    )


def test_ppo_needs_pretraining_data_for_ptx(sft_dir, rm_dir, data_dir, tmp_path):
    p = ppo(sft_dir, rm_dir, data_dir, tmp_path / "o", "--set", "ptx_coef=1")
    assert_user_error(p, "needs --pretrain-data")


def test_help_config_lists_documented_keys():
    p = instructrl("ppo", "--help-config")
    assert p.returncode == 0
    for key in ("iterations", "rollout_batch_size", "max_new_tokens", "kl_coef", "kl_target", "ptx_coef"):
        assert f"\n{key} (default" in "\n" + p.stdout


# ---- eval: a data file that is not UTF-8 -------------------------------------------------------------------
FIXTURES = __import__("pathlib").Path(__file__).parent.parent / "fixtures"


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines(keepends=True)[:3]


def jsonl(*objs: dict) -> list[str]:
    return [json.dumps(o) + "\n" for o in objs]


PROMPTS = jsonl(*({"prompt": f"the cat {w}", "user_id": "u"} for w in ("sat", "ran", "is")))
MC = jsonl(*({"ctx": f"the cat sat on the {w}", "endings": ["mat", "tree"], "label": 0} for w in "abc"))
TQA_MC = jsonl(*(
    {"question": f"Why {w}?", "mc1_targets": {"choices": ["yes", "no"], "labels": [1, 0]},
     "mc2_targets": {"choices": ["yes", "no"], "labels": [1, 0]}}
    for w in "abc"
))  # fmt: skip
RTP, CROWS, WINO = "rtp-nontoxic-sample.jsonl", "crows-pairs-sample.csv", "winogender-sample.tsv"
# (every file argument of every eval command) a command line with {f}: the file, {m}: a model, {o}: the output
NOT_UTF8 = {
    "answers --prompts": ("answers --model m={m} --prompts {f} --out {o}/a.jsonl", "p.jsonl", PROMPTS),
    "answers --prompts (.json)": (
        "answers --model m={m} --prompts {f} --out {o}/a.jsonl", "p.json",
        ["[" + PROMPTS[0].strip() + ",\n", PROMPTS[1].strip() + ",\n", PROMPTS[2].strip() + "]\n"],
    ),
    "winrate --ab": ("winrate --ab {f} --baseline a", "ab.jsonl", jsonl(*(
        {"prompt": "p", "response_a": "x", "response_b": "y", "model_a": "a", "model_b": "b",
         "preferred": "a"} for _ in range(3)))),
    "lm-loss --data (.gz)": ("lm-loss --model m={m} --data {f}", "pt.jsonl.gz",
                             jsonl(*({"text": f"the cat {w}"} for w in "abc"))),
    "rm-accuracy --data": ("rm-accuracy --model {m} --data {f}", "c.jsonl",
                           jsonl(*({"prompt": "p", "chosen": "a", "rejected": f"b {w}"} for w in "abc"))),
    "toxicity --data": ("toxicity --model m={m} --data {f} --out {o}", "nontoxic.jsonl", fixture_lines(RTP)),
    "bias --data (CrowS-Pairs)": ("bias --model m={m} --data {f} --out {o}", "crows.csv", fixture_lines(CROWS)),
    "bias --data (Winogender)": ("bias --model m={m} --data {f} --out {o}", "all_sentences.tsv",
                                 fixture_lines(WINO)),
    "bias --occupation-stats": (
        f"bias --model m={{m}} --data {FIXTURES / WINO} --occupation-stats {{f}} --out {{o}}", "stats.tsv",
        fixture_lines("winogender-occupations-stats.tsv"),
    ),
    "truthfulqa --data (CSV)": ("truthfulqa --model m={m} --data {f} --out {o}", "tqa.csv",
                                fixture_lines("truthfulqa-sample.csv")),
    "truthfulqa --data (JSONL)": ("truthfulqa --model m={m} --data {f} --out {o}", "mc.jsonl", TQA_MC),
    "tax --data": ("tax --model m={m} --baseline m --data {f} --out {o}", "mc.jsonl", MC),
    "suite --truthfulqa": ("suite --model m={m} --truthfulqa {f} --out {o}", "tqa.csv",
                           fixture_lines("truthfulqa-sample.csv")),
    "suite --toxicity": ("suite --model m={m} --toxicity {f} --out {o}", "toxic.jsonl", fixture_lines(RTP)),
    "suite --bias": ("suite --model m={m} --bias {f} --out {o}", "crows.csv", fixture_lines(CROWS)),
    "suite --tax": ("suite --model m={m} --tax {f} --out {o}", "mc.jsonl", MC),
}  # fmt: skip


@pytest.mark.parametrize("case", NOT_UTF8)
def test_every_eval_file_that_is_not_utf8_exits_2_naming_file_and_line(tiny_model_dir, tmp_path, case):
    import gzip

    command, name, lines = NOT_UTF8[case]
    f, out = tmp_path / name, tmp_path / "out"
    third = lines[2].encode()
    data = "".join(lines[:2]).encode() + third[:5] + b"\xff\xfe" + third[5:]  # Latin-1 junk on line 3
    f.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    p = instructrl("eval", *command.format(f=f, m=tiny_model_dir, o=out).split())
    assert_user_error(p, f"{f}:3:", "UTF-8")
    assert not out.exists()


def test_ppo_value_model_that_does_not_exist(sft_dir, rm_dir, data_dir, tmp_path):
    p = ppo(sft_dir, rm_dir, data_dir, tmp_path / "o", "--value-model", str(tmp_path / "no-such-rm"))
    assert_user_error(p, "no-such-rm: model directory does not exist")
    assert not (tmp_path / "o").exists()
