"""`instructrl demo --quick` end to end: the summary the issue asks for, the report, and the rule that the
held-out labelers and the gold standard never reach training or model selection."""

import dataclasses
import io
import json
import math

import pytest
from tqdm import tqdm

from instructrl.demo import pipeline
from instructrl.demo.labelers import Labeler
from instructrl.demo.labels import SimulatedLabels
from instructrl.demo.summary import DemoSummary
from instructrl.demo.world import World
from instructrl.training import runtime

# the quick demo runs once, in the first test's set-up: minutes, more on a loaded machine
pytestmark = pytest.mark.timeout(1200)

MODELS = ("base", "base_fewshot", "sft", "bon_rm", "ppo", "ppo_ptx", "bon_gold")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """Run the quick demo once, recording who judged what during which step."""
    out = tmp_path_factory.mktemp("demo") / "run"
    calls: list[tuple[str, str, str]] = []  # (step, who, what)
    state = {"step": "none", "in_labeler": 0}
    mp = pytest.MonkeyPatch()

    def log(line: str) -> None:  # the pipeline's runner says which step starts: "pipeline: start NAME (...)"
        if line.startswith("pipeline: start "):
            state["step"] = line.split()[2]

    for method in ("rank", "compare", "likert", "write_demonstration"):
        original = getattr(Labeler, method)

        def wrapped(self, *args, _original=original, _method=method, **kwargs):
            calls.append((state["step"], self.group, _method))
            state["in_labeler"] += 1
            try:
                return _original(self, *args, **kwargs)
            finally:
                state["in_labeler"] -= 1

        mp.setattr(Labeler, method, wrapped)

    original_gold = World.gold_score

    def gold(self, prompt, response):
        if not state["in_labeler"]:  # the pipeline itself reading the truth
            calls.append((state["step"], "pipeline", "gold_score"))
        return original_gold(self, prompt, response)

    mp.setattr(World, "gold_score", gold)

    bars: list[tqdm] = []  # every progress bar the demo shows (shown into a string: TQDM_DISABLE is set)

    def progress_bar(total, desc, **kwargs):
        bars.append(tqdm(total=total, desc=desc, file=io.StringIO(), disable=False))
        return bars[-1]

    mp.setattr(runtime, "progress_bar", progress_bar)
    try:
        summary = pipeline.run_demo(out, pipeline.DemoSettings.quick(seed=0), log=log).as_json()
    finally:
        mp.undo()
    return out, summary, calls, bars


def test_summary_holds_every_figure_the_issue_asks_for(quick_demo):
    out, summary, *_ = quick_demo
    assert json.loads((out / "summary.json").read_text()) == summary
    for m in MODELS:
        w = summary["win_rate_vs_sft"][m]
        assert 0 <= w["ci_low"] <= w["mean"] <= w["ci_high"] <= 1 and w["n"] == 100
    assert set(summary["pretrain_loss"]) == {"base", "sft", "ppo", "ppo_ptx"}
    assert 0 < summary["rm_val_accuracy"] <= 1
    # the quick run's candidates are mostly equally poor, so labelers agree little more than by chance there;
    # the full run measures ~0.7 (the paper: 0.73)
    assert 0.35 < summary["labeler_agreement"] < 1 and 0.35 < summary["heldout_labeler_agreement"] < 1
    steps = ("world", "pretrain", "sft", "round1", "ppo_ptx", "round2", "evaluate")
    parts = [f"round{n}: {what}" for n in (1, 2) for what in ("reward model", "PPO", "rankings and the rest")]
    timings = summary["timings_s"]
    assert set(timings) == {*steps, *parts, "total"}
    assert timings["total"] == pytest.approx(sum(timings[s] for s in steps))
    for n in (1, 2):  # a round's parts add up to the round
        assert sum(timings[f"round{n}: {w}"] for w in ("reward model", "PPO", "rankings and the rest")) == (
            pytest.approx(timings[f"round{n}"])
        )
        assert min(timings[f"round{n}: {w}"] for w in ("reward model", "PPO", "rankings and the rest")) > 0
    assert summary["settings"]["seed"] == 0
    for run in ("ppo", "ppo_ptx"):
        curve = summary["overoptimization"][run]
        assert [c["iteration"] for c in curve] == list(range(1, 7))
        assert all({"kl", "rm_score", "gold_score"} <= set(c) for c in curve)
    # best-of-N: its curve starts at N = 1, the SFT answer itself (KL 0), and its KL grows as log N - (N-1)/N
    bon = summary["overoptimization"]["bon_rm"]
    assert [c["n"] for c in bon] == [1, 2, 4, 8, 16] and bon[0]["kl"] == 0
    assert bon[0]["gold_score"] == pytest.approx(summary["gold_score"]["sft"])
    assert bon[2]["kl"] == pytest.approx(math.log(4) - 3 / 4)
    # the reward model's favourite of 16 scores above one sample
    assert bon[-1]["rm_score"] > bon[0]["rm_score"]
    assert summary["gold_score"]["bon_gold"] >= summary["gold_score"]["sft"]
    for run in ("round1/ppo", "ppo_ptx"):
        ppo = json.loads((out / run / "summary.json").read_text())
        assert ppo["reward_norm"]["gain"] > 0 and 0 <= ppo["kept_iteration"] <= ppo["iterations"]
    # 8 of round 1, 3 of the rounds, 4 of the truthfulness and toxicity probes
    assert len(summary["findings"]) == 15 and all(isinstance(f["holds"], bool) for f in summary["findings"])
    # the RM-vs-gold analysis adds up: untied pairs per family + tied pairs = all validation pairs, and the
    # gold standard's agreement = ties at one half + the untied pairs it orders as the labelers did
    a = summary["rm_analysis"]
    families = a["untied_by_family"]
    untied = sum(f["pairs"] for f in families.values())
    assert untied + round(a["gold_tied_share"] * a["pairs"]) == a["pairs"]
    labelers_right = sum(f["labelers_vs_gold"] * f["pairs"] for f in families.values())
    assert a["labelers_vs_gold_untied"] == pytest.approx(labelers_right / untied)
    assert a["gold_vs_labelers"] * a["pairs"] == pytest.approx(
        a["gold_tied_share"] * a["pairs"] / 2 + labelers_right
    )
    # each round's RM on SFT's own samples (the best-of-16 candidates): the same gold-ordered pairs for
    # every round, split by kind of error; the kinds add up to all of them
    on_sft = summary["rm_on_sft_samples"]
    assert set(on_sft) == {"round1", "round2"}
    for r in on_sft.values():
        kinds = r["by_kind"].values()
        assert sum(k["pairs"] for k in kinds) == r["all"]["pairs"] == on_sft["round1"]["all"]["pairs"] > 100
        right = sum(k["accuracy"] * k["pairs"] for k in kinds if k["pairs"])
        assert r["all"]["accuracy"] == pytest.approx(right / r["all"]["pairs"])


def test_every_model_answers_the_truthfulness_and_toxicity_probes(quick_demo):
    """The quick run's probe sizes: 12 unanswerable questions, 12 closed-domain prompts, 8 rudeness-inviting
    beginnings answered twice with and twice without the polite instruction."""
    out, summary, *_ = quick_demo
    models = {"base", "base_fewshot", "sft", "ppo", "ppo_ptx", "ppo_round2"}
    assert set(summary["truthfulness"]) == set(summary["toxicity"]) == models
    sizes = {
        "made_up_answer": 12,
        "admits_not_knowing": 12,
        "hallucination": 12,
        "plain_rude": 16,
        "polite_rude": 16,
        "plain_rude_any": 8,
        "polite_rude_any": 8,
    }
    for m in models:
        for k, v in {**summary["truthfulness"][m], **summary["toxicity"][m]}.items():
            assert v["n"] == sizes[k] and 0 <= v["ci_low"] <= v["mean"] <= v["ci_high"] <= 1, (m, k, v)
    rows = [json.loads(line) for line in (out / "evaluate" / "probes.jsonl").read_text().splitlines()]
    assert len(rows) == 12 + 12 + 2 * 8 and all(set(r) == {"prompt", *models} for r in rows)
    assert [len(r["sft"]) for r in rows] == [1] * 24 + [2] * 16
    claims = [f["claim"] for f in summary["findings"][-4:]]
    assert "closed-domain" in claims[1] and "polite" in claims[2]


def test_a_second_round_ranks_the_ppo_policys_samples_and_continues_the_rm_and_ppo(quick_demo):
    """ChatGPT's loop in the demo: round 2's rankings come from the PPO policy and SFT, the RM continues from
    round 1's on both rounds' comparisons, PPO continues from round 1's policy with the KL still to SFT."""
    out, summary, *_ = quick_demo
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    second = summary["rounds"][1]
    assert 0 < second["rm_accuracy_before"] <= 1 and 0 < second["rm_accuracy_after"] <= 1
    assert second["win"] == summary["win_rate_vs_sft"]["ppo_round2"]
    rows = [
        json.loads(line)
        for line in (out / "data" / "comparisons_round2_train.jsonl").read_text().splitlines()
    ]
    assert rows and {(r["round"], r["model"]) for r in rows} == {(2, "ppo_round1+sft")}
    rm = json.loads((out / "round2" / "rm" / "final" / "instructrl.json").read_text())
    first_round = len((out / "data" / "comparisons_train.jsonl").read_text().splitlines())
    assert rm["round"] == 2 and rm["lineage"][-1]["init"] == str(out / "round1" / "rm" / "final")
    assert rm["lineage"][-1]["comparisons"] == first_round + len(rows)
    ppo1 = json.loads((out / "round1" / "ppo" / "summary.json").read_text())
    ppo2 = json.loads((out / "round2" / "ppo" / "summary.json").read_text())
    # the same held-out prompts and seeds: round 2 starts where round 1's kept policy is, KL to SFT and all
    assert ppo2["initial_kl_mean"] == pytest.approx(ppo1["final_kl_mean"], rel=1e-4, abs=1e-6)
    meta = json.loads((out / "round2" / "ppo" / "final" / "instructrl.json").read_text())
    assert meta["sft_model"] == str(out / "sft" / "final") and meta["round"] == 2
    assert [c["iteration"] for c in summary["overoptimization"]["ppo_round2"]] == list(range(1, 7))


def test_the_quick_run_still_shows_learning(quick_demo):
    """Loose checks for a 3-minute run: the intake worked, SFT learned from demonstrations, PPO raised the
    reward-model score, and the SFT model judged against itself lands near 0.5."""
    out, summary, *_ = quick_demo
    intake = summary["intake"]
    assert intake["dropped_duplicate"] > 0 and intake["dropped_pii"] > 0 and intake["dropped_user_cap"] > 0
    assert abs(summary["win_rate_vs_sft"]["sft"]["mean"] - 0.5) < 0.15
    ppo = json.loads((out / "round1" / "ppo" / "summary.json").read_text())
    assert ppo["final_score_mean"] > ppo["initial_score_mean"]
    sft = json.loads((out / "sft" / "summary.json").read_text())
    first = json.loads((out / "sft" / "metrics.jsonl").read_text().splitlines()[0])["train/loss"]
    assert sft["val_loss"] < first


def test_report_has_the_plots_and_samples(quick_demo):
    out, *_ = quick_demo
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 7
    for heading in (
        "Win rate against the SFT model",
        "Alignment tax",
        "Reward over-optimisation",
        "Samples for the same prompts",
        "Wall time per step",
        "Rounds of the loop",
        "Truthfulness",
        "Toxicity",
        "Settings",
    ):
        assert heading in html
    assert "On the SFT model's own samples" in html  # the RM on SFT's samples, by kind of error


def test_only_training_labelers_data_reaches_sft_rm_and_ppo(quick_demo):
    out, _, calls, _ = quick_demo
    for f in [*(out / "data").glob("demonstrations_*.jsonl"), *(out / "data").glob("comparisons_*.jsonl")]:
        ids = {json.loads(line)["labeler_id"] for line in f.read_text().splitlines()}
        assert ids and all(i.startswith("train-") for i in ids), (f, ids)
    before_eval = [c for c in calls if c[0] != "evaluate"]
    assert {step for step, _, _ in before_eval} == {"sft", "round1", "round2"}  # demonstrations, rankings
    assert before_eval, "training labelers worked before the evaluation"
    assert all(who == "train" for _, who, _ in before_eval), {c for c in before_eval if c[1] != "train"}
    # held-out labelers judge the evaluation, and the gold standard is read only there (over-optimisation)
    assert any(who == "heldout" for step, who, _ in calls if step == "evaluate")
    assert all(step == "evaluate" for step, who, what in calls if what == "gold_score")


def test_resume_of_a_finished_demo_redoes_nothing(quick_demo):
    out, summary, *_ = quick_demo
    again = pipeline.run_demo(out, pipeline.DemoSettings.quick(seed=0), resume=True, log=lambda m: None)
    assert again.as_json() == summary and again == DemoSummary.read(out)
    with pytest.raises(Exception, match="other settings"):
        pipeline.run_demo(out, pipeline.DemoSettings.quick(seed=1), resume=True, log=lambda m: None)
    with pytest.raises(Exception, match="already holds a demo run"):
        pipeline.run_demo(out, pipeline.DemoSettings.quick(seed=0), log=lambda m: None)


def test_each_ranking_pass_ranks_fresh_samples_of_the_same_prompts(quick_demo, tmp_path):
    """`rankings_per_prompt=2`: the first pass is the run's own comparisons, unchanged; the second ranks the
    same prompts again, on samples of their own (more comparisons than the world has distinct prompts)."""
    import shutil

    out, *_ = quick_demo
    for step in ("world", "data", "pretrain", "sft"):
        shutil.copytree(out / step, tmp_path / step)
    (tmp_path / "data" / "rankings_round1.json").unlink()  # round 1's rankings: to be ranked again
    settings = dataclasses.replace(pipeline.DemoSettings.quick(seed=0), rankings_per_prompt=2)
    demo = pipeline.Demo(tmp_path, settings, World(0), *_labelers(settings), log=lambda m: None)
    SimulatedLabels(demo).round_labels(1, policy=tmp_path / "sft" / "final", previous_policy=None)
    once = (out / "data" / "comparisons_train.jsonl").read_text().splitlines()
    twice = (tmp_path / "data" / "comparisons_train.jsonl").read_text().splitlines()
    assert twice[: len(once)] == once
    first, second = [json.loads(x) for x in once], [json.loads(x) for x in twice[len(once) :]]
    assert abs(len(second) - len(first)) < 0.1 * len(first)
    assert {c["prompt"] for c in second} == {c["prompt"] for c in first}  # the same prompts ...
    ranked = {(c["prompt"], tuple(sorted(c["responses"]))) for c in first}
    fresh = [c for c in second if (c["prompt"], tuple(sorted(c["responses"]))) not in ranked]
    assert len(fresh) > 0.9 * len(second)  # ... on fresh samples
    # the validation comparisons are ranked once, as before
    assert (tmp_path / "data" / "comparisons_validation.jsonl").read_text() == (
        out / "data" / "comparisons_validation.jsonl"
    ).read_text()


def _labelers(settings):
    from instructrl.demo.labelers import make_labelers

    labelers = make_labelers(
        World(settings.seed), settings.n_train_labelers, settings.n_heldout_labelers, seed=0
    )
    return [x for x in labelers if x.group == "train"], [x for x in labelers if x.group == "heldout"]


def test_ranked_responses_are_distinct_as_the_world_reads_them(quick_demo):
    """SFT decodes "hi!" and the few-shot base writes "hi !": one answer, which must not be ranked against itself."""
    from instructrl.demo.knowledge import canon

    out, *_ = quick_demo
    for f in (out / "data").glob("comparisons_*.jsonl"):
        for line in f.read_text().splitlines():
            responses = json.loads(line)["responses"]
            assert len({canon(r) for r in responses}) == len(responses), responses


def test_every_long_step_shows_progress_to_the_end(quick_demo):
    """Sampling the ranked candidates and the evaluation's answers (minutes in the full run) show a progress
    bar, as training does; each bar ends at its total."""
    *_, bars = quick_demo
    shown = {b.desc for b in bars}
    for desc in (
        "candidates from SFT (train)",
        "candidates from few-shot base (validation)",
        "answers: ppo_ptx",
        "answers: base_fewshot",
        "answers and best-of-16 candidates: sft",
        "closed-QA benchmark: base",
        "round 2: current policy (train)",
        "probes: ppo_round2",
        "probes: base_fewshot",
        "ppo",
    ):
        assert desc in shown, (desc, sorted(shown))
    for bar in bars:
        assert bar.total > 0 and bar.n == bar.total, (bar.desc, bar.n, bar.total)


def test_the_papers_public_benchmarks_run_on_the_demos_checkpoints(quick_demo, tmp_path, capsys):
    """`instructrl eval suite` (TruthfulQA, RealToxicityPrompts, CrowS-Pairs and Winogender, the alignment
    tax) on the demo's SFT and PPO checkpoints, with the small real samples in tests/fixtures: the world's
    word-level vocabulary reads most of their words as unknown, but every command runs and reports."""
    from pathlib import Path

    from instructrl.cli import main

    out, *_ = quick_demo
    fixtures = Path(__file__).parent.parent / "fixtures"
    tax = tmp_path / "tax.jsonl"
    tax.write_text(json.dumps({"ctx": "the creature is", "endings": ["big", "small"], "label": 0}) + "\n")
    args = [
        "eval", "suite", "--model", f"sft={out / 'sft' / 'final'}", "--model", f"ppo={out / 'round1' / 'ppo' / 'final'}",
        "--out", str(tmp_path / "suite"), "--truthfulqa", str(fixtures / "truthfulqa-sample.csv"),
        "--toxicity", str(fixtures / "rtp-nontoxic-sample.jsonl"), str(fixtures / "rtp-toxic_challenging-sample.jsonl"),
        "--samples", "2", "--bias", str(fixtures / "crows-pairs-sample.csv"), str(fixtures / "winogender-sample.tsv"),
        "--tax", str(tax), "--limit", "3",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0, capsys.readouterr().err
    for bench, metric in (("truthfulqa", "mc2"), ("toxicity", "expected_max_toxicity/none/toxic"),
                          ("bias", "crows_pairs/pct_stereotype"), ("tax", "tax/acc")):  # fmt: skip
        doc = json.loads((tmp_path / "suite" / bench / "results.json").read_text())
        assert set(doc["models"]) == {"sft", "ppo"} and all(metric in m for m in doc["models"].values()), (
            bench
        )
    # the report: PPO against SFT item by item, with n; what each metric means; what to keep in mind
    suite = json.loads((tmp_path / "suite" / "suite.json").read_text())
    assert suite["baseline"] == "sft" and all(set(c) == {"ppo"} for c in suite["comparisons"].values())
    html = (tmp_path / "suite" / "report.html").read_text()
    assert "<b>ppo</b>: better on" in html and "What the metrics measure" in html
    assert "gotcha subset was not measured" in html  # no occupations-stats.tsv beside the sample
    assert str((out / "round1" / "ppo" / "final").resolve()) in html and "not Perspective API" in html


def test_a_failed_step_names_itself_and_the_command_that_goes_on(tmp_path, monkeypatch):
    """The world step is done; pretraining fails: the message names the step, what is kept, and the exact
    `--resume` command (with the flags the run was started with), as a clean error (exit 2) for a user's
    mistake and after the traceback for a defect."""
    from conftest import run_cli

    from instructrl.errors import UserError

    monkeypatch.setattr(pipeline, "step_world", lambda demo: {"prompts": 0})  # (looked up when run)
    out = tmp_path / "my demo"

    def user_error(demo):
        raise UserError("the disk is full")

    monkeypatch.setattr(pipeline, "step_pretrain", user_error)
    code, _, err = run_cli("demo", "--quick", "--out", str(out), "--seed", "3", "--rounds", "1")
    assert code == 2 and "the disk is full" in err, err
    assert "step 'pretrain'" in err and f"steps done (world) are kept in {out}" in err
    assert f"instructrl demo --quick --out '{out}' --seed 3 --rounds 1 --resume" in err
    assert list(json.loads((out / "steps.json").read_text())) == ["world"]

    def defect(demo):
        raise AssertionError("a bug")

    monkeypatch.setattr(pipeline, "step_pretrain", defect)
    with pytest.raises(pipeline.StepFailed, match=r"step 'pretrain'.*--resume") as e:
        settings = dataclasses.replace(pipeline.DemoSettings.quick(seed=3), rounds=1)
        pipeline.run_demo(out, settings, resume=True, log=lambda m: None)
    assert isinstance(e.value.__cause__, AssertionError)
