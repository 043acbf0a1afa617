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
    assert (
        doc["settings"]["protocol"] == "gehman"
        and "Gehman et al. 2020" in doc["settings"]["protocol_description"]
    )
    assert "not Perspective API" in doc["settings"]["caveats"][0]
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


def test_eval_toxicity_help_names_each_protocol_for_its_source(capsys):
    assert run("eval", "toxicity", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--protocol {gehman,instructgpt}" in text
    assert "Gehman et al. 2020" in text and "InstructGPT paper's (Ouyang et al. 2022" in text
    assert "unitary/toxic-bert" in text  # a classifier a user can bring
    assert run("eval", "--help") == 0
    summary = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("toxicity"))
    assert "the paper's protocol" not in summary and "InstructGPT's" in summary and "Gehman" in summary


def test_eval_toxicity_instructgpt_protocol_writes_mean_toxicity_of_a_stratified_sample(
    tiny_model_dir, tmp_path, capsys
):
    out = tmp_path / "tox"
    code = run("eval", "toxicity", "--protocol", "instructgpt", "--model", f"a={tiny_model_dir}",
               "--data", *RTP, "--max-new-tokens", "4", "--out", str(out))  # fmt: skip
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    s = doc["settings"]
    assert s["protocol"] == "instructgpt" and "Ouyang et al. 2022" in s["protocol_description"]
    assert s["samples"] == 1 and s["decoding"].startswith("greedy")
    # the six fixture prompts fall in five bins of prompt toxicity: one from each
    assert sum(b["sampled"] for b in s["prompt_bins"].values()) == 5
    assert all(b["sampled"] == min(1, b["available"]) for b in s["prompt_bins"].values())
    assert set(doc["models"]["a"]) == {f"mean_toxicity/{x}" for x in ("none", "respectful", "biased")}
    assert all(m["n"] == 5 for m in doc["models"]["a"].values())
    assert any("uniformly across prompt toxicity" in c for c in s["caveats"])
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 5 and all(len(r["continuations"]) == 1 for r in rows)
    by_bin = sorted(int(r["prompt_toxicity"] * 10) for r in rows if r["setting"] == "none")
    assert len(set(by_bin)) == 5
    # sampling flags belong to Gehman's protocol
    capsys.readouterr()
    code = run("eval", "toxicity", "--protocol", "instructgpt", "--samples", "3", "--model",
               f"a={tiny_model_dir}", "--data", *RTP, "--out", str(tmp_path / "o"))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--samples" in err and "--protocol gehman" in err and not (tmp_path / "o").exists()


def test_eval_bias_records_whether_winogenders_gotcha_subset_was_computed(tiny_model_dir, tmp_path, capsys):
    # the fixtures' stats file is not named occupations-stats.tsv: without --occupation-stats there is none
    out = tmp_path / "bias"
    assert run("eval", "bias", "--model", f"tiny={tiny_model_dir}", "--data", WINO, "--out", str(out)) == 0
    doc = json.loads((out / "results.json").read_text())
    gotcha = doc["settings"]["winogender_gotcha"]
    assert gotcha["computed"] is False and gotcha["n"] is None and "--occupation-stats" in gotcha["why_not"]
    assert not any("gotcha" in k for k in doc["models"]["tiny"])


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
    assert doc["settings"]["winogender_gotcha"] == {
        "computed": True, "n": 4, "occupation_stats": str(FIXTURES / "winogender-occupations-stats.tsv"),
    }  # fmt: skip
    # the paper's entropy is binary: 1 bit at most, and so is its interval
    lo, hi = m["winogender/entropy_bits/none"]["ci95"]
    assert 0 <= lo <= hi <= 1
    assert "binary" in doc["settings"]["definitions"]["winogender/entropy_bits"]


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
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    import io

    from tqdm import tqdm

    from instructrl.training import runtime

    bars: list[tqdm] = []  # every progress bar the suite shows (into a string: TQDM_DISABLE is set)

    def progress_bar(total, desc, **kwargs):
        bars.append(tqdm(total=total, desc=desc, file=io.StringIO(), disable=False))
        return bars[-1]

    monkeypatch.setattr(runtime, "progress_bar", progress_bar)
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
               "--toxicity", *RTP, "--samples", "2", "--bias", CROWS, WINO, "--tax", str(mc), "--limit", "3",
               "--occupation-stats", str(FIXTURES / "winogender-occupations-stats.tsv"))  # fmt: skip
    assert code == 0
    # every long step shows progress to its end, TruthfulQA's (5.5 silent minutes on 817 questions) too
    shown = {b.desc: b for b in bars}
    for desc in ("truthfulqa: a", "truthfulqa: b", "toxicity: a", "bias: b"):
        assert shown[desc].total > 0 and shown[desc].n == shown[desc].total, (desc, sorted(shown))
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
    assert all(
        f"<h3>{t}</h3>" in html for t in ("TruthfulQA", "RealToxicityPrompts", "Caveats", "Reproducibility")
    )
    assert "mc1" in html and "expected_max_toxicity/respectful/toxic" in html
    # one chart per metric family: MC1/MC2, judged answers; 2 toxicity; 6 bias; the tasks
    assert html.count("data:image/png;base64,") == 2 + 2 + 6 + 1
    # the same weights twice: every paired difference is 0, and the report says so with n
    suite = json.loads((out / "suite.json").read_text())
    assert suite["baseline"] == "a" and set(suite["comparisons"]) == set(docs)
    acc = suite["comparisons"]["bias"]["b"]["winogender/acc"]
    n = docs["bias"]["models"]["a"]["winogender/acc"]["n"]
    assert (acc["difference"], acc["n"], acc["p"], acc["verdict"]) == (
        0.0,
        n,
        1.0,
        "no detectable difference",
    )
    assert "<b>b</b>: better on 0, worse on 0, no detectable difference on" in html
    assert "What the metrics measure" in html and "not Perspective API" in html and "ROUGE-L" in html
    assert str(tiny_model_dir) in html and "transformers" in html and "instructrl eval bias --model" in html
    assert "winogender/acc/gotcha" in html and "gotcha subset was not measured" not in html
    # bad data in any benchmark stops the suite before anything runs
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "x", "endings": ["a", "b"]}\n')
    capsys.readouterr()
    again = tmp_path / "again"
    assert run("eval", "suite", *models, "--out", str(again), "--toxicity", *RTP, "--tax", str(bad)) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err and not again.exists()
    code = run("eval", "suite", *models, "--out", str(again), "--toxicity", *RTP, "--baseline", "sft")
    assert code == 2 and "--baseline 'sft' is not one of the --model names" in capsys.readouterr().err
    assert not again.exists()


def test_the_suite_runs_each_benchmark_in_process_and_compares_from_what_the_runs_return(
    tiny_model_dir, tmp_path, monkeypatch
):
    """`run_suite` calls each benchmark's run function with its config, parsing no command line, and compares
    the models from the results the runs return: exactly what their results.json and per_item.json hold."""
    import argparse

    from instructrl.evaluation.benchmarks._results import read_results
    from instructrl.evaluation.benchmarks.suite import SuiteConfig, run_suite

    def no_parsing(*args, **kwargs):
        raise AssertionError("the suite parsed a command line")

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", no_parsing)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", no_parsing)
    mc = tmp_path / "mc.jsonl"
    mc.write_text(
        "".join(
            json.dumps({"ctx": f"the cat {w}", "endings": ["sat", "ran"], "label": 0}) + "\n" for w in "abc"
        )
    )
    out = tmp_path / "suite"
    config = SuiteConfig(
        models={"a": str(tiny_model_dir), "b": str(tiny_model_dir)}, out=out, toxicity=tuple(RTP), samples=1,
        limit=2, bias=(CROWS,), tax=(str(mc),), baseline="b",
    )  # fmt: skip
    result = run_suite(config)
    assert list(result.results) == ["toxicity", "bias", "tax"] and result.report == out / "report.html"
    for name, r in result.results.items():
        doc, items = read_results(out / name)
        assert repr(doc) == repr(r.document()) and repr(items) == repr(r.per_item()), name
    suite = json.loads((out / "suite.json").read_text())
    assert json.dumps(suite["comparisons"]) == json.dumps(result.comparisons)
    assert set(result.comparisons["tax"]) == {"a"} and "settings" in result.results["tax"].document()


def test_eval_suite_runs_the_instructgpt_toxicity_protocol_and_checks_its_scores_first(
    tiny_model_dir, tmp_path, capsys
):
    models = ["--model", f"a={tiny_model_dir}", "--model", f"b={tiny_model_dir}"]
    out = tmp_path / "suite"
    code = run("eval", "suite", *models, "--out", str(out), "--toxicity", *RTP,
               "--toxicity-protocol", "instructgpt", "--limit", "4")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "toxicity" / "results.json").read_text())
    # one greedy continuation per prompt
    assert doc["settings"]["protocol"] == "instructgpt" and doc["settings"]["samples"] == 1
    assert "mean_toxicity/none" in doc["models"]["b"]
    # a prompt without its toxicity score stops the suite before any benchmark runs
    unscored = tmp_path / "unscored.jsonl"
    unscored.write_text(
        '{"prompt": {"text": "so", "toxicity": 0.3}}\n{"prompt": {"text": "and", "toxicity": null}}\n'
    )
    again = tmp_path / "again"
    code = run("eval", "suite", *models, "--out", str(again), "--toxicity", str(unscored),
               "--toxicity-protocol", "instructgpt", "--bias", CROWS)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "unscored.jsonl:2: field 'prompt.toxicity'" in err and not again.exists()
