"""`instructrl eval`: answers for A/B tasks, win rates from judgements, alignment tax, RM accuracy."""

import json

import pytest
from conftest import run_cli, write_jsonl


def instructrl(*args):
    code, out, err = run_cli(*args)
    assert code == 0, err
    return json.loads(out)


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


def test_best_of_n_answers_with_the_reward_models_favourite_of_n_samples(sft_dir, rm_dir, data_dir):
    from instructrl.datasets.io import read_prompts
    from instructrl.evaluation.models import best_of_n, generate_answers, generate_answers_k, score_responses

    prompts = [r.prompt for r in read_prompts(data_dir / "prompts.jsonl")][:24]
    answers, best = best_of_n(sft_dir, rm_dir, prompts, 8, seed=3, max_new_tokens=8)
    candidates = generate_answers_k(sft_dir, prompts, 8, seed=3, max_new_tokens=8)
    scores = score_responses(rm_dir, prompts, candidates)
    for a, b, cands, sc in zip(answers, best, candidates, scores, strict=True):
        assert b == max(sc) and a == cands[sc.index(max(sc))]
    # sample 0 of the N is the plain answer with the same seed, and the best of 8 scores above it
    assert [c[0] for c in candidates] == generate_answers(sft_dir, prompts, seed=3, max_new_tokens=8)
    first = [sc[0] for sc in scores]
    assert sum(best) / len(best) > sum(first) / len(first) + 0.5


def test_best_of_n_from_the_command_line(sft_dir, rm_dir, data_dir, tmp_path):
    import math

    out = tmp_path / "bon.jsonl"
    args = ["eval", "answers", "--model", f"sft={sft_dir}", "--prompts", str(data_dir / "prompts.jsonl")]
    report = instructrl(
        *args, "--out", str(out), "--best-of", "4", "--reward", str(rm_dir), "--max-new-tokens", "6"
    )
    assert report["written"] == 200 and report["best_of"] == 4
    assert report["kl_to_sampling_policy_at_most"] == pytest.approx(math.log(4) - 3 / 4)
    code, _, err = run_cli(*args, "--out", str(tmp_path / "x.jsonl"), "--best-of", "4")
    assert code == 2 and "--reward" in err and "Traceback" not in err
    assert not (tmp_path / "x.jsonl").exists()


def test_answers_take_prompts_without_a_user_id(tiny_model_dir, tmp_path):
    # user_id is what the prompt splits group by; answering a prompt does not need it
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl", [{"prompt": "the cat sat"}, {"instruction": "list two"}]
    )
    out = tmp_path / "answers.jsonl"
    r = instructrl("eval", "answers", "--model", f"m={tiny_model_dir}", "--prompts", prompts, "--out", out,
                   "--max-new-tokens", "2")  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert r["written"] == 2 and [row["prompt"] for row in rows] == ["the cat sat", "list two"]
