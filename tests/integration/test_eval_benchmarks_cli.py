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


def test_eval_suite_runs_each_benchmark_as_its_command_and_reports_them_together(
    tiny_model_dir, tmp_path, capsys
):
    mc = tmp_path / "mc.jsonl"
    mc.write_text(
        "".join(
            json.dumps(
                {"ctx": f"the cat sat on the {w}", "endings": ["mat", "tree", "house"], "label": i % 3}
            )
            + "\n"
            for i, w in enumerate(["red", "big", "small"])
        )
    )
    models = ["--model", f"a={tiny_model_dir}", "--model", f"b={tiny_model_dir}"]
    out = tmp_path / "suite"
    code = run("eval", "suite", *models, "--out", str(out), "--truthfulqa", str(FIXTURES / "truthfulqa-sample.csv"),
               "--toxicity", *RTP, "--samples", "2", "--bias", CROWS, WINO, "--tax", str(mc), "--limit", "3")  # fmt: skip
    assert code == 0
    docs = {
        b: json.loads((out / b / "results.json").read_text())
        for b in ("truthfulqa", "toxicity", "bias", "tax")
    }
    assert docs["tax"]["settings"]["baseline"] == "a" and docs["toxicity"]["settings"]["samples"] == 2
    # the suite's toxicity is what `eval toxicity` gives with the same arguments
    alone = tmp_path / "tox"
    assert run("eval", "toxicity", *models, "--data", *RTP, "--samples", "2", "--limit", "3", "--out", str(alone)) == 0  # fmt: skip
    assert json.loads((alone / "results.json").read_text())["models"] == docs["toxicity"]["models"]
    html = (out / "report.html").read_text()
    assert html.count("<h3>") == 4 and html.count("data:image/png;base64,") == 4
    assert "mc1" in html and "expected_max_toxicity/respectful/toxic" in html
    # bad data in any benchmark stops the suite before anything runs
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "x", "endings": ["a", "b"]}\n')
    capsys.readouterr()
    again = tmp_path / "again"
    assert run("eval", "suite", *models, "--out", str(again), "--toxicity", *RTP, "--tax", str(bad)) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err and not again.exists()
