"""`instructrl eval toxicity` and `eval bias` end to end on a tiny model and the fixture samples, and their
errors for malformed files (in-process: the same `main` as the command line, without a second start-up)."""

import json
from pathlib import Path

import pytest

from instructrl.cli import main

FIXTURES = Path(__file__).parent.parent / "fixtures"
RTP = [str(FIXTURES / "rtp-nontoxic-sample.jsonl"), str(FIXTURES / "rtp-toxic_challenging-sample.jsonl")]
CROWS, WINO = str(FIXTURES / "crows-pairs-sample.csv"), str(FIXTURES / "winogender-sample.tsv")


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_eval_toxicity_writes_results_and_samples(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "tox"
    code = run("eval", "toxicity", "--model", f"a={tiny_model_dir}", "--model", f"b={tiny_model_dir}",
               "--data", *RTP, "--samples", "2", "--max-new-tokens", "4", "--out", str(out))  # fmt: skip
    assert code == 0
    assert "expected_max_toxicity/respectful/toxic" in capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    assert doc["benchmark"] == "toxicity" and set(doc["models"]) == {"a", "b"}
    assert doc["settings"]["samples"] == 2 and doc["settings"]["prompts"] == {"toxic": 3, "nontoxic": 3}
    assert doc["settings"]["scorer"].startswith("alt-profanity-check")
    a = doc["models"]["a"]
    assert len(a) == 2 * 3 * 2 and all(m["n"] == 3 and len(m["ci95"]) == 2 for m in a.values())
    assert doc["models"]["a"] == doc["models"]["b"]  # same weights, same seeds
    # the metrics are those of the scored samples written next to them
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 6 and all(len(r["toxicity"]) == 2 for r in rows)
    maxima = [
        max(r["toxicity"])
        for r in rows
        if r["model"] == "a" and r["setting"] == "biased" and r["toxic_prompt"]
    ]
    assert a["expected_max_toxicity/biased/toxic"]["value"] == pytest.approx(sum(maxima) / 3)


def test_eval_bias_writes_harness_and_paper_metrics(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bias"
    code = run("eval", "bias", "--model", f"tiny={tiny_model_dir}", "--data", CROWS, WINO,
               "--occupation-stats", str(FIXTURES / "winogender-occupations-stats.tsv"), "--out", str(out))  # fmt: skip
    assert code == 0
    assert "crows_pairs/pct_stereotype" in capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    m = doc["models"]["tiny"]
    assert m["crows_pairs/pct_stereotype"]["n"] == 6 and m["winogender/acc"]["n"] == 12
    assert m["winogender/acc/gotcha"]["n"] == 4 and m["winogender/entropy_bits/respectful"]["n"] == 4
    assert 0 <= m["crows_pairs/entropy_bits/none"]["value"] <= 1
    assert doc["settings"]["rows"] == {"crows_pairs": 6, "winogender": 12}


@pytest.mark.parametrize(
    ("command", "content", "expected"),
    [
        ("toxicity", '{"prompt": {"text": "ok", "toxicity": 0.1}}\n{"prompt": {"toxicity": 0.2}}\n',
         ":2: field 'prompt.text': missing or empty"),
        ("toxicity", '{"prompt": {"text": "ok", "toxicity": 1.5}}\n', ":1: field 'prompt.toxicity': 1.5"),
        ("bias", "sent_more,sent_less,bias_type\nA,B,age\nC,,age\n", ":3: field 'sent_less': empty"),
        ("bias", "sentid\tsentence\nnurse.patient.1.male\tHe was ill.\n", ":2: field 'sentid'"),
    ],
)  # fmt: skip
def test_malformed_files_exit_2_naming_file_and_line(
    tiny_model_dir, tmp_path, capsys, command, content, expected
):
    data = tmp_path / ("data.jsonl" if command == "toxicity" else "data.csv")
    data.write_text(content)
    code = run(
        "eval", command, "--model", f"m={tiny_model_dir}", "--data", str(data), "--out", str(tmp_path / "o")
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{data}{expected}" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
