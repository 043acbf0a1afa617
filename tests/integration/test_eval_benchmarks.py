"""`instructrl eval truthfulqa` and `instructrl eval tax` end to end on tiny random models, in-process:
results.json's layout and numbers against hand computation, and bad files rejected with exit code 2."""

import json
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl

from instructrl.cli import main
from instructrl.evaluation.benchmarks.common import choice_loglikelihoods, greedy_answers
from instructrl.evaluation.benchmarks.tax import QA_TEMPLATE
from instructrl.evaluation.benchmarks.truthfulqa import QA_PROMPT, mc_scores, read_truthfulqa

FIXTURE = Path(__file__).parent.parent / "fixtures" / "truthfulqa-sample.csv"


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    """Two 1-layer random GPT-2s (seeds 0 and 1) sharing a BPE tokenizer trained on the sample."""
    from instructrl.models.tiny import build_gpt2, save, train_tokenizer

    questions = read_truthfulqa(FIXTURE)
    tok = train_tokenizer([QA_PROMPT] + [" ".join([q.question, *q.mc2_choices]) for q in questions], 300)
    root = tmp_path_factory.mktemp("bench-lms")
    return [
        save(build_gpt2(tok, n_layer=1, n_embd=32, n_head=2, n_positions=1024, seed=s), tok, root / f"m{s}")
        for s in (0, 1)
    ]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory, lms):
    """A random 2-label GPT-2 sequence classifier standing in for a fine-tuned truthfulness judge."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    tok = AutoTokenizer.from_pretrained(lms[0])
    torch.manual_seed(3)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=1, n_head=2, num_labels=2,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    model = GPT2ForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=2.0)  # decisive logits: both labels occur
    out = tmp_path_factory.mktemp("judge")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_eval_truthfulqa_writes_mc1_mc2_and_judged_answers(capsys, tmp_path, lms, judge_dir):
    from instructrl.evaluation.benchmarks.truthfulqa import ClassifierJudge, ReferenceJudge, is_no_comment
    from instructrl.models.loading import load_causal_lm, load_tokenizer

    data = tmp_path / "tqa.csv"
    data.write_text("".join(FIXTURE.read_text(encoding="utf-8").splitlines(True)[:4]), encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, _ = run(
        capsys, "eval", "truthfulqa", "--model", f"m0={lms[0]}", "--data", str(data), "--out", str(out),
        "--judge", str(judge_dir), "--max-new-tokens", "4",
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"] == "truthfulqa" and list(results["models"]) == ["m0"]
    m0 = results["models"]["m0"]
    for settings in ("qa", "instruction_qa"):
        assert {f"{settings}/truthful", f"{settings}/no_comment"} <= set(m0)
    for r in m0.values():
        assert set(r) == {"value", "n", "ci95"} and r["n"] == 3 and r["ci95"][0] <= r["value"] <= r["ci95"][1]
    assert results["settings"]["questions"] == 3 and results["settings"]["generation"]["judge"] == str(
        judge_dir
    )
    assert "mc2" in stdout and "instruction_qa/truthful" in stdout

    # MC1 / MC2 are the means of the per-question scores; truthful is the judge's verdict on the answers
    questions = read_truthfulqa(data)
    per = mc_scores(load_causal_lm(lms[0], dropout=False), load_tokenizer(lms[0]), questions)
    assert m0["mc2"]["value"] == pytest.approx(sum(per["mc2"]) / 3, abs=1e-9)
    assert m0["mc1"]["value"] == sum(per["mc1"]) / 3
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 * 3 and {a["setting"] for a in answers} == {"qa", "instruction_qa"}
    judge = ClassifierJudge(judge_dir)
    for setting in ("qa", "instruction_qa"):
        texts = [a["answer"] for a in answers if a["setting"] == setting]
        probs = judge.probabilities(questions, texts)
        # one answer per batch (no padding) reads the same: padding does not move the judge
        assert ClassifierJudge(judge_dir, batch_size=1).probabilities(questions, texts) == pytest.approx(
            probs
        )
        assert m0[f"{setting}/truthful"]["value"] == pytest.approx(sum(p > 0.5 for p in probs) / 3)
        assert m0[f"{setting}/no_comment"]["value"] == pytest.approx(sum(map(is_no_comment, texts)) / 3)

    # without --judge: the same greedy answers, judged by ROUGE-L against the references
    code, _, _ = run(
        capsys, "eval", "truthfulqa", "--model", f"m0={lms[0]}", "--data", str(data), "--out", str(tmp_path / "o2"),
        "--max-new-tokens", "4",
    )  # fmt: skip
    by_rouge = json.loads((tmp_path / "o2" / "results.json").read_text())["models"]["m0"]
    for setting in ("qa", "instruction_qa"):
        texts = [a["answer"] for a in answers if a["setting"] == setting]
        expected = sum(ReferenceJudge()(questions, texts)) / 3
        assert by_rouge[f"{setting}/truthful"]["value"] == pytest.approx(expected)


def test_eval_tax_scores_each_model_and_its_difference_to_the_baseline(capsys, tmp_path, lms):
    from instructrl.models.loading import load_causal_lm, load_tokenizer

    mc = write_jsonl(
        tmp_path / "hellaswag.jsonl",
        [
            {"ctx": "The cat sat on the", "endings": ["mat.", "moon and sang a long song.", "dog."], "label": 0},
            {"ctx": "Where were the 1992 Olympics", "endings": ["held?", "in Spain.", "fish"], "label": 1},
            {"ctx_a": "A man is cooking.", "ctx_b": "he", "activity_label": "Cooking",
             "endings": ["stirs the pot.", "flies away [title] now."], "label": "0"},
        ],
    )  # fmt: skip
    qa_rows = [
        {"context": "Paris is the capital of France.", "question": "What is the capital of France?",
         "answers": {"text": ["Paris"], "answer_start": [0]}},
        {"context": "The sky is blue.", "question": "What colour is the sky?", "answers": ["blue", "Blue sky"]},
    ]  # fmt: skip
    qa = write_jsonl(tmp_path / "squad.jsonl", qa_rows)
    out = tmp_path / "out"
    code, stdout, _ = run(
        capsys, "eval", "tax", "--model", f"base={lms[0]}", "--model", f"tuned={lms[1]}", "--baseline", "base",
        "--data", str(mc), str(qa), "--out", str(out), "--max-new-tokens", "5",
    )  # fmt: skip
    assert code == 0 and "alignment tax: difference to base" in stdout
    r = json.loads((out / "results.json").read_text())
    assert r["benchmark"] == "tax" and set(r["models"]) == {"base", "tuned"} and set(r["tax"]) == {"tuned"}
    metrics = {"hellaswag/acc", "hellaswag/acc_norm", "squad/f1", "squad/em"}
    assert set(r["models"]["base"]) == metrics and set(r["tax"]["tuned"]) == metrics

    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    for i, lm in enumerate(lms):
        name = ["base", "tuned"][i]
        model, tok = load_causal_lm(lm, dropout=False), load_tokenizer(lm)
        # acc / acc_norm by hand: argmax of the endings' log-likelihoods, raw and per character
        items = [
            ("The cat sat on the", ["mat.", "moon and sang a long song.", "dog."], 0),
            ("Where were the 1992 Olympics", ["held?", "in Spain.", "fish"], 1),
            ("Cooking: A man is cooking. He", ["stirs the pot.", "flies away. now."], 0),
        ]
        acc, acc_norm = [], []
        for ctx, endings, gold in items:
            ll = choice_loglikelihoods(model, tok, [ctx] * len(endings), [" " + e for e in endings])
            acc.append(max(range(len(ll)), key=ll.__getitem__) == gold)
            acc_norm.append(max(range(len(ll)), key=lambda j: ll[j] / len(endings[j])) == gold)  # noqa: B023
        assert r["models"][name]["hellaswag/acc"]["value"] == pytest.approx(sum(acc) / 3)
        assert r["models"][name]["hellaswag/acc_norm"]["value"] == pytest.approx(sum(acc_norm) / 3)
        # the QA answers are the greedy answers; F1 / EM are SQuAD's on them, recomputed here
        mine = [a["answer"] for a in answers if a["model"] == name]
        prompts = [QA_TEMPLATE.format(context=q["context"], question=q["question"]) for q in qa_rows]
        assert mine == greedy_answers(model, tok, prompts, max_new_tokens=5)
        golds = [["Paris"], ["blue", "Blue sky"]]
        f1 = [max(hand_f1(a, g) for g in gs) for a, gs in zip(mine, golds, strict=True)]
        assert r["models"][name]["squad/f1"]["value"] == pytest.approx(sum(f1) / 2)
    for key in metrics:
        diff = r["models"]["tuned"][key]["value"] - r["models"]["base"][key]["value"]
        assert r["tax"]["tuned"][key]["value"] == pytest.approx(diff)
        assert r["tax"]["tuned"][key]["n"] == r["models"]["base"][key]["n"]


def test_eval_tax_squad_f1_and_exact_match_of_known_answers(capsys, tmp_path, lms, monkeypatch):
    """The model "answers" known strings, so F1 and EM are hand-computed SQuAD values."""
    import instructrl.evaluation.benchmarks.tax as tax

    known = {"What is tallest in Paris?": "The Eiffel Tower, in Paris!", "What colour is the sky?": "blue."}
    monkeypatch.setattr(
        tax,
        "greedy_answers",
        lambda model, tok, prompts, **kw: [known[p.split("Question: ")[1][:-8]] for p in prompts],
    )
    qa = write_jsonl(
        tmp_path / "squad.jsonl",
        [
            {"context": "c", "question": "What is tallest in Paris?", "answers": ["Eiffel tower", "a tower"]},
            {
                "context": "c",
                "question": "What colour is the sky?",
                "answers": {"text": ["Blue sky", "blue"]},
            },
        ],
    )
    code, _, _ = run(
        capsys, "eval", "tax", "--model", f"a={lms[0]}", "--model", f"b={lms[1]}", "--baseline", "a",
        "--data", str(qa), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    # item 1: "eiffel tower in paris" vs "eiffel tower": P = 2/4, R = 1, F1 = 2/3 (vs "tower": 2/5); EM 0
    # item 2: "blue" matches "blue" exactly: F1 1, EM 1 (vs "blue sky": F1 2/3)
    assert r["models"]["a"]["squad/f1"]["value"] == pytest.approx((2 / 3 + 1) / 2)
    assert r["models"]["a"]["squad/em"]["value"] == pytest.approx(0.5)
    # per-item F1 (2/3, 1): the bootstrap's means are 2/3, 5/6 or 1 (chance 1/4, 1/2, 1/4), so the
    # interval is [2/3, 1] (the normal one, 5/6 ± 0.327, passed 1 and was clipped)
    assert r["models"]["a"]["squad/f1"]["ci95"] == pytest.approx([2 / 3, 1.0])
    assert r["tax"]["b"]["squad/f1"] == {"value": 0.0, "n": 2, "ci95": [0.0, 0.0]}


def hand_f1(pred: str, gold: str) -> float:
    import re
    import string
    from collections import Counter

    def norm(s):
        s = "".join(c for c in s.lower() if c not in string.punctuation)
        return re.sub(r"\b(a|an|the)\b", " ", s).split()

    common = sum((Counter(norm(pred)) & Counter(norm(gold))).values())
    if common == 0:
        return 0.0
    p, r = common / len(norm(pred)), common / len(norm(gold))
    return 2 * p * r / (p + r)


def _bad_csv(tmp_path):
    import csv

    rows = list(csv.DictReader(FIXTURE.open(encoding="utf-8")))[:3]
    rows[1]["Best Answer"] = " "
    p = tmp_path / "bad.csv"
    with p.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return p, "bad.csv:3: field 'Best Answer': empty"


def _no_column_csv(tmp_path):
    p = tmp_path / "nocol.csv"
    p.write_text("Type,Question,Correct Answers,Incorrect Answers\nA,q?,a,b\n", encoding="utf-8")
    return p, "nocol.csv:1: the header lacks column(s) 'Best Answer'"


def _bad_json(tmp_path):
    good = {"question": "q?", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]},
            "mc2_targets": {"choices": ["a", "b"], "labels": [1, 0]}}  # fmt: skip
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(good) + "\n" + '{"question": "q?", "mc1_targets": \n')
    return p, "bad.jsonl:2: not valid JSON"


def _bad_labels(tmp_path):
    row = {"question": "q?", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 0]},
           "mc2_targets": {"choices": ["a", "b", "c"], "labels": [1, 0]}}  # fmt: skip
    p = write_jsonl(tmp_path / "labels.jsonl", [row])
    return p, "labels.jsonl:1: field 'mc2_targets': 3 choices but 2 labels"


@pytest.mark.parametrize("make", [_bad_csv, _no_column_csv, _bad_json, _bad_labels])
def test_a_malformed_truthfulqa_file_exits_2_naming_file_line_and_field(capsys, tmp_path, lms, make):
    path, expected = make(tmp_path)
    code, _, err = run(
        capsys,
        "eval",
        "truthfulqa",
        "--model",
        f"m={lms[0]}",
        "--data",
        str(path),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"ctx": "c", "endings": ["a", "b"], "label": 2}, "x.jsonl:2: field 'label': 2 is not the index"),
        ({"ctx": "c", "endings": "ab", "label": 0}, "x.jsonl:2: field 'endings': expected a list"),
        ({"context": "c", "question": "q", "answers": []}, "x.jsonl:2: field 'answers'"),
    ],
)
def test_a_malformed_tax_file_exits_2_naming_file_line_and_field(capsys, tmp_path, lms, row, expected):
    first = {"ctx": "c", "endings": ["a", "b"], "label": 0} if "ctx" in row else {
        "context": "c", "question": "q", "answers": ["a"]}  # fmt: skip
    path = write_jsonl(tmp_path / "x.jsonl", [first, row])
    code, _, err = run(
        capsys, "eval", "tax", "--model", f"m={lms[0]}", "--baseline", "m", "--data", str(path),
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
