"""`instructrl eval`: answers for A/B tasks, win rates from judgements, alignment tax, RM accuracy."""

import json
import os
import subprocess
import sys

import pytest
from conftest import write_jsonl


def instructrl(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "instructrl", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_answers_make_ab_pairs_and_winrate_counts_them(sft_dir, tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "ab_tasks.jsonl"
    instructrl(
        "eval",
        "answers",
        "--model",
        f"sft={sft_dir}",
        "--model",
        f"base={tiny_model_dir}",
        "--prompts",
        str(data_dir / "prompts.jsonl"),
        "--baseline",
        "sft",
        "--out",
        str(out),
        "--max-new-tokens",
        "6",
    )
    tasks = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(tasks) == 200 and {t["model_a"] for t in tasks} == {"base"}
    # judgements: base wins 30, loses 60, ties 10 (either side of the pair)
    judged = [
        {
            "prompt": "p",
            "response_a": "x",
            "response_b": "y",
            "model_a": "base",
            "model_b": "sft",
            "preferred": pref,
        }
        for pref in ["a"] * 20 + ["b"] * 50 + ["tie"] * 10
    ]
    judged += [
        {
            "prompt": "p",
            "response_a": "y",
            "response_b": "x",
            "model_a": "sft",
            "model_b": "base",
            "preferred": pref,
        }
        for pref in ["b"] * 10 + ["a"] * 10
    ]
    write_jsonl(tmp_path / "ab.jsonl", judged)
    r = instructrl("eval", "winrate", "--ab", str(tmp_path / "ab.jsonl"), "--baseline", "sft")
    assert r["base"]["n"] == 100 and r["base"]["mean"] == pytest.approx((30 + 5) / 100)


def test_lm_loss_and_rm_accuracy(sft_dir, tiny_model_dir, rm_dir, data_dir):
    r = instructrl(
        "eval",
        "lm-loss",
        "--model",
        f"sft={sft_dir}",
        "--model",
        f"base={tiny_model_dir}",
        "--data",
        str(data_dir / "pretrain.jsonl"),
    )
    assert r["base"] > 0 and r["sft"] > 0 and r["base"] != r["sft"]
    acc = instructrl(
        "eval", "rm-accuracy", "--model", str(rm_dir), "--data", str(data_dir / "comparisons.jsonl")
    )
    assert acc["accuracy"] > 0.95


def test_rm_scores_agree_with_rm_accuracy(rm_dir, data_dir):
    """Per-response scores, batched several prompts at a time, order the pairs exactly as the batched
    accuracy pass does, and a prompt's scores do not depend on which prompts share its batch."""
    from instructrl.datasets.io import read_comparisons
    from instructrl.evaluation.models import rm_accuracy, rm_scores

    comparisons = read_comparisons(data_dir / "comparisons.jsonl")[:12]
    scores = rm_scores(rm_dir, comparisons, batch_size=5)
    assert [len(s) for s in scores] == [c.k for c in comparisons]
    right = [s[w] > s[lo] for c, s in zip(comparisons, scores, strict=True) for w, lo in c.pairs()]
    assert sum(right) / len(right) == pytest.approx(rm_accuracy(rm_dir, comparisons))
    alone = rm_scores(rm_dir, comparisons[3:4], batch_size=1)[0]
    assert alone == pytest.approx(scores[3], abs=1e-5)
