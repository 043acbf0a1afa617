"""`instructrl eval labels`: the paper's human evaluation from a hand-made labeling-app export, every number
worked out by hand below (Wilson bounds from the textbook formula, z = 1.959964, cross-checked with
scipy's binomtest(...).proportion_ci("wilson") where the count is whole)."""

import json

import pytest
from conftest import run_cli, write_jsonl

LIKERT_FLAGS = {"likert", "fails_to_follow_instruction", "hallucination", "expresses_opinion"}


def ab(labeler, group, model_a, model_b, preferred):
    return {
        "prompt": "p", "response_a": "x", "response_b": "y", "model_a": model_a, "model_b": model_b,
        "preferred": preferred, "labeler_id": labeler, "labeler_group": group,
    }  # fmt: skip


def ranking(labeler, group, round, models, order, labels=None, **extra):
    row = {
        "prompt": "p", "responses": [f"r{i}" for i in range(len(order))], "ranking": order,
        "labeler_id": labeler, "labeler_group": group, "round": round, "models": models, **extra,
    }  # fmt: skip
    if labels is not None:
        row["labels"] = [{"likert": likert, "flags": flags} for likert, flags in labels]
    return {k: v for k, v in row.items() if v is not None}


# h1 is held out by the export's mark, h2 by --heldout (the export calls it 'default'); t1, t2 train
JUDGEMENTS = [
    ab("h1", "heldout", "ppo1", "sft", "a"),  # ppo1 held out: 1, 1, 0.5, 0 -> 2.5/4
    ab("h1", "heldout", "sft", "ppo1", "b"),
    ab("h2", "default", "ppo1", "sft", "tie"),
    ab("h2", "default", "ppo1", "sft", "b"),
    ab("h1", "heldout", "ppo2", "sft", "a"),  # ppo2 held out: 3/3
    ab("h2", "default", "sft", "ppo2", "b"),
    ab("h1", "heldout", "ppo2", "sft", "a"),
    ab("t1", "default", "ppo1", "sft", "b"),  # ppo1 training: 0, 1 -> 1/2
    ab("t2", "default", "sft", "ppo1", "b"),
    ab("t1", "default", "ppo1", "ppo2", "a"),  # no baseline: left out
]
HALL, FAILS = "hallucination", "fails_to_follow_instruction"
COMPARISONS = [
    # round 1, held out: ppo1 > sft > ppo2
    ranking(
        "h1", "heldout", 1, ["sft", "ppo1", "ppo2"], [1, 0, 2], [(4, [HALL]), (6, []), (3, [FAILS, HALL])]
    ),
    # round 1, held out: sft > ppo1
    ranking("h2", "default", 1, ["ppo1", "sft"], [1, 0], [(5, ["expresses_opinion"]), (5, [])]),
    # round 1, training: ppo1 r0 > sft r2 > ppo1 r1 > sft r3: 3 of the 4 (ppo1, sft) pairs won, one outcome
    ranking(
        "t1",
        "default",
        1,
        ["ppo1", "ppo1", "sft", "sft"],
        [0, 2, 1, 3],
        [(7, []), (2, ["inappropriate_for_customer_assistant", "harmful_advice"]), (4, []), (4, [])],
    ),
    # no round: round 1; no labels: a win rate only
    ranking("t2", "default", None, ["sft", "ppo2"], [0, 1]),
    # round 2, held out: ppo2 > sft, then sft > ppo2
    ranking("h1", "heldout", 2, ["ppo2", "sft"], [0, 1], [(7, []), (3, [HALL])]),
    ranking("h2", "default", 2, ["ppo2", "sft"], [1, 0], [(6, [HALL]), (4, [])]),
    # round 2, one model wrote both responses: no win rate; the second response has flags but no Likert
    ranking("h1", "heldout", 2, None, [0, 1], [(2, [FAILS]), (None, [])], model="ppo2"),
    # no model named: left out
    ranking("t2", "default", 2, None, [0, 1], [(1, []), (1, [])]),
]

# metric: (value, ci95 low, ci95 high, n)
EXPECTED = {
    "sft": {
        "heldout/round1/likert": (4.5, 4.0, 5.0, 2),  # 4, 5 (bootstrap: every 2-value interval is [min, max])
        "heldout/round1/hallucination": (0.5, 0.094531, 0.905469, 2),
        "heldout/round2/likert": (3.5, 3.0, 4.0, 2),
        "heldout/round2/hallucination": (0.5, 0.094531, 0.905469, 2),
        "training/round1/likert": (4.0, 4.0, 4.0, 2),
    },
    "ppo1": {
        "heldout/ab/win_rate": (0.625, 0.219427, 0.908101, 4),
        "heldout/round1/win_rate": (0.5, 0.094531, 0.905469, 2),
        "heldout/round1/likert": (5.5, 5.0, 6.0, 2),
        "heldout/round1/expresses_opinion": (0.5, 0.094531, 0.905469, 2),
        "heldout/round1/hallucination": (0.0, 0.0, 0.65762, 2),
        "training/ab/win_rate": (0.5, 0.094531, 0.905469, 2),
        "training/round1/win_rate": (0.75, 0.11791, 0.985365, 1),
        "training/round1/likert": (4.5, 2.0, 7.0, 2),  # 7, 2: inside the scale, unclipped (normal: ± 4.90)
        "training/round1/harmful_advice": (0.5, 0.094531, 0.905469, 2),
    },
    "ppo2": {
        "heldout/ab/win_rate": (1.0, 0.438503, 1.0, 3),
        "heldout/round1/win_rate": (0.0, 0.0, 0.793451, 1),
        "heldout/round1/likert": (3.0, 3.0, 3.0, 1),
        "heldout/round1/fails_to_follow_instruction": (1.0, 0.206549, 1.0, 1),
        "heldout/round2/win_rate": (0.5, 0.094531, 0.905469, 2),
        "heldout/round2/likert": (
            5.0,
            2.0,
            7.0,
            3,
        ),  # 7, 6, 2 (the None is not a score); 2 and 7 each 1/27 > 2.5 %
        "heldout/round2/hallucination": (0.25, 0.045587, 0.699358, 4),
        "heldout/round2/fails_to_follow_instruction": (0.25, 0.045587, 0.699358, 4),
        "heldout/round2/harmful_advice": (0.0, 0.0, 0.489891, 4),
        "training/round1/win_rate": (0.0, 0.0, 0.793451, 1),
    },
}


@pytest.fixture
def export(tmp_path):
    (tmp_path / "labels").mkdir()
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("# labelers kept out of training\nh2\n")
    return (
        write_jsonl(tmp_path / "labels" / "comparisons.jsonl", COMPARISONS),
        write_jsonl(tmp_path / "labels" / "ab.jsonl", JUDGEMENTS),
        heldout,
    )


def test_win_rates_likert_and_flag_rates_per_model_round_and_labeler_group(export, tmp_path):
    comparisons, judgements, heldout = export
    code, out, err = run_cli(
        "eval", "labels", "--data", comparisons, judgements, "--baseline", "sft",
        "--heldout", heldout, "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["benchmark"] == "labels" and list(doc["models"]) == ["sft", "ppo1", "ppo2"]
    for model, metrics in EXPECTED.items():
        for metric, (value, lo, hi, n) in metrics.items():
            got = doc["models"][model][metric]
            assert (got["value"], *got["ci95"], got["n"]) == pytest.approx((value, lo, hi, n), abs=1e-6), (
                metric
            )
    # every flag is rated on every labelled response; the baseline has no win rate against itself
    assert [k for k in doc["models"]["ppo2"] if k.startswith("heldout/round2/")] == [
        "heldout/round2/win_rate", "heldout/round2/likert", "heldout/round2/fails_to_follow_instruction",
        "heldout/round2/hallucination", "heldout/round2/inappropriate_for_customer_assistant",
        "heldout/round2/sexual_or_violent_content", "heldout/round2/denigrates_protected_class",
        "heldout/round2/harmful_advice", "heldout/round2/expresses_opinion",
    ]  # fmt: skip
    assert not any(k.endswith("win_rate") for k in doc["models"]["sft"])
    settings = doc["settings"]
    assert settings["labelers"] == {"heldout": ["h1", "h2"], "training": ["t1", "t2"]}
    assert settings["notes"] == {
        "A/B judgements not of the baseline against another model (left out)": 1,
        "rankings without labels (win rates only)": 1,
        "rankings without model or models (left out)": 1,
    }
    # the table: one row per metric in order, a column per model, '-' where a model has no value
    rows = out.splitlines()
    assert rows[0].split() == ["metric", "sft", "ppo1", "ppo2"]
    assert rows[2].split()[:2] == ["heldout/ab/win_rate", "-"]
    assert "0.625 [0.219, 0.908] (n=4)" in rows[2]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("likert", "comparisons.jsonl:2: field 'labels.1.likert'"),
        ("demonstrations", "demos.jsonl:1: neither a ranking"),
        ("baseline", "baseline 'gpt' is not a model in the data"),
        ("heldout", "held-out labeler(s) ['h9'] have no records"),
    ],
)
def test_bad_input_exits_2_naming_the_problem_and_writes_nothing(export, tmp_path, case, expected):
    comparisons, judgements, _ = export
    data, extra = [comparisons, judgements], ["--baseline", "sft"]
    if case == "likert":
        rows = [dict(r) for r in COMPARISONS]
        rows[1]["labels"] = [{"likert": 5}, {"likert": 9}]
        write_jsonl(comparisons, rows)
    elif case == "demonstrations":
        data.append(write_jsonl(tmp_path / "demos.jsonl", [{"prompt": "p", "response": "r"}]))
    elif case == "baseline":
        extra = ["--baseline", "gpt"]
    else:
        extra += ["--heldout", "h9"]
    code, _, err = run_cli("eval", "labels", "--data", *data, *extra, "--out", tmp_path / "out")
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
