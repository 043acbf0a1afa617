"""`instructrl eval ...`: the measurements of InstructGPT's evaluation on your own models and labels.

answers      sample each model's responses to held-out prompts (for A/B tasks in the labeling app)
winrate      win rates with 95% intervals from A/B judgements (ab.jsonl from `instructrl label export`)
lm-loss      loss on pretraining text: the alignment tax of RLHF
rm-accuracy  a reward model's agreement with held-out rankings
truthfulqa   TruthfulQA: MC1, MC2 and judged greedy answers (QA and Instruction + QA prompts)
tax          the alignment tax on your multiple-choice (HellaSwag-style) and QA (SQuAD-style) files
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluation: samples for A/B tasks, win rates, alignment tax, RM accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = p.add_subparsers(dest="eval_command", metavar="WHAT", required=True)

    a = s.add_parser("answers", help="sample responses of several models to the same prompts")
    a.add_argument(
        "--model", action="append", required=True, metavar="NAME=DIR", help="a model to sample (repeat)"
    )
    a.add_argument("--prompts", required=True, nargs="+", help="prompts JSONL")
    a.add_argument("--baseline", help="NAME of the model the others are compared with: writes A/B pairs")
    a.add_argument("--out", required=True, help="output JSONL")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--max-new-tokens", type=int, default=64)
    a.add_argument(
        "--best-of",
        type=int,
        default=1,
        metavar="N",
        help="answer with the best of N samples by the reward model (--reward); 1: one sample",
    )
    a.add_argument(
        "--reward", metavar="RM_DIR", help="reward model that picks the best of N (with --best-of)"
    )
    a.set_defaults(func=run_answers)

    w = s.add_parser("winrate", help="win rate of each model against a baseline from A/B judgements")
    w.add_argument(
        "--ab", required=True, nargs="+", help="A/B judgements JSONL (prompt, model_a, model_b, preferred)"
    )
    w.add_argument("--baseline", required=True, help="the model every other model is compared with")
    w.set_defaults(func=run_winrate)

    lm = s.add_parser("lm-loss", help="mean per-token loss on pretraining text")
    lm.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    lm.add_argument("--data", required=True, nargs="+", help="pretraining text JSONL ({'text': ...})")
    lm.set_defaults(func=run_lm_loss)

    r = s.add_parser("rm-accuracy", help="reward-model pairwise accuracy on comparisons")
    r.add_argument("--model", required=True, help="reward model directory")
    r.add_argument("--data", required=True, nargs="+", help="comparisons JSONL")
    r.set_defaults(func=run_rm_accuracy)

    t = s.add_parser("truthfulqa", help="TruthfulQA MC1 / MC2 and truthfulness of greedy answers")
    t.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a model (repeat)")
    t.add_argument(
        "--data",
        required=True,
        help="TruthfulQA.csv (2021 or 2025 version) or the Hugging Face multiple_choice layout as JSONL",
    )
    t.add_argument("--out", required=True, help="output directory: results.json, answers.jsonl")
    t.add_argument(
        "--judge",
        metavar="DIR",
        help="sequence classifier judging truthfulness (default: ROUGE-L to the references)",
    )
    t.add_argument("--info-judge", metavar="DIR", help="sequence classifier judging informativeness")
    t.add_argument("--no-generation", action="store_true", help="MC1 and MC2 only")
    t.add_argument("--max-new-tokens", type=int, default=50)
    t.add_argument("--batch-size", type=int, default=16)
    t.set_defaults(func=run_truthfulqa)

    x = s.add_parser("tax", help="the alignment tax: scores on NLP tasks against a baseline model")
    x.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a model (repeat)")
    x.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="JSONL files: {ctx, endings, label} (multiple choice) or {context, question, answers} (QA)",
    )
    x.add_argument("--baseline", required=True, help="NAME of the model the others are compared with")
    x.add_argument("--out", required=True, help="output directory: results.json, answers.jsonl")
    x.add_argument("--max-new-tokens", type=int, default=32)
    x.add_argument("--batch-size", type=int, default=16)
    x.set_defaults(func=run_tax)


def _named(pairs: list[str]) -> dict[str, str]:
    from instructrl.errors import UserError

    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--model {p!r}: expected NAME=DIR, for example --model sft=runs/sft/final")
        out[name] = path
    return out


def run_answers(args) -> int:
    from instructrl.datasets.io import read_prompts, write_jsonl
    from instructrl.errors import UserError
    from instructrl.evaluation.models import best_of_n, best_of_n_kl, generate_answers
    from instructrl.models.loading import check_model_dir

    models = _named(args.model)
    if args.baseline is not None and args.baseline not in models:
        raise UserError(f"--baseline {args.baseline!r} is not one of the --model names {sorted(models)}")
    if args.best_of < 1:
        raise UserError(f"--best-of {args.best_of}: must be 1 or more")
    if args.best_of > 1 and args.reward is None:
        raise UserError(
            f"--best-of {args.best_of} needs --reward RM_DIR, the reward model that picks the best"
        )
    if args.reward is not None:
        check_model_dir(args.reward, "reward model")
    for path in models.values():
        check_model_dir(path)
    prompts = [r.prompt for r in read_prompts(args.prompts)]
    answers, scores = {}, {}
    for name, path in models.items():
        with _progress(len(prompts) * args.best_of, f"answers: {name}") as bar:
            tick = _ticker(bar)
            if args.best_of > 1:
                answers[name], scores[name] = best_of_n(
                    path, args.reward, prompts, args.best_of, seed=args.seed,
                    max_new_tokens=args.max_new_tokens, progress=tick,
                )  # fmt: skip
            else:
                answers[name] = generate_answers(
                    path, prompts, seed=args.seed, max_new_tokens=args.max_new_tokens, progress=tick
                )
    if args.baseline is None:
        rows = [
            {"prompt": p, "model": name, "response": answers[name][i]}
            for name in models
            for i, p in enumerate(prompts)
        ]
    else:
        rows = [
            {
                "prompt": p,
                "model_a": name,
                "response_a": answers[name][i],
                "model_b": args.baseline,
                "response_b": answers[args.baseline][i],
            }
            for name in models
            if name != args.baseline
            for i, p in enumerate(prompts)
        ]
    n = write_jsonl(args.out, rows)
    report: dict = {"written": n, "out": args.out}
    if args.best_of > 1:
        report["best_of"] = args.best_of
        report["kl_to_sampling_policy_at_most"] = best_of_n_kl(args.best_of)
        report["mean_reward"] = {name: sum(sc) / len(sc) for name, sc in scores.items()}
    print(json.dumps(report))
    return 0


def _progress(total: int, desc: str):
    from instructrl.training.runtime import progress_bar

    return progress_bar(total, desc, unit="answer")


def _ticker(bar):
    def tick(done: int, total: int) -> None:
        bar.update(done - bar.n)

    return tick


def run_winrate(args) -> int:
    from instructrl.datasets.io import read_records
    from instructrl.datasets.records import ABJudgement
    from instructrl.evaluation.stats import win_rate

    outcomes: dict[str, list[float]] = {}
    judgements: list[ABJudgement] = read_records(args.ab, "ab")  # type: ignore[assignment]
    for j in judgements:
        if args.baseline not in (j.model_a, j.model_b) or j.model_a == j.model_b:
            continue
        other = j.model_b if j.model_a == args.baseline else j.model_a
        won = {"tie": 0.5, "a": float(j.model_a == other), "b": float(j.model_b == other)}[j.preferred]
        outcomes.setdefault(other, []).append(won)
    print(json.dumps({m: win_rate(o) for m, o in sorted(outcomes.items())}, indent=2))
    return 0


def run_lm_loss(args) -> int:
    from instructrl.datasets.io import read_pretrain
    from instructrl.evaluation.models import lm_loss

    texts = [d.text for d in read_pretrain(args.data)]
    print(json.dumps({name: lm_loss(path, texts) for name, path in _named(args.model).items()}, indent=2))
    return 0


def run_rm_accuracy(args) -> int:
    from instructrl.datasets.io import read_comparisons
    from instructrl.evaluation.models import rm_accuracy

    print(json.dumps({"accuracy": rm_accuracy(args.model, read_comparisons(args.data))}))
    return 0


def run_truthfulqa(args) -> int:
    from instructrl.datasets.io import write_jsonl
    from instructrl.evaluation.benchmarks.common import format_table, write_results
    from instructrl.evaluation.benchmarks.truthfulqa import (
        PROMPT_SETTINGS,
        ClassifierJudge,
        ReferenceJudge,
        evaluate_truthfulqa,
        read_truthfulqa,
    )
    from instructrl.models.loading import check_model_dir

    models = _named(args.model)
    for path in models.values():
        check_model_dir(path)
    questions = read_truthfulqa(args.data)
    judge = ClassifierJudge(args.judge) if args.judge else ReferenceJudge()
    info_judge = ClassifierJudge(args.info_judge) if args.info_judge else None
    results: dict = {"benchmark": "truthfulqa", "models": {}, "settings": {}}
    rows = []
    for name, path in models.items():
        results["models"][name], answers = evaluate_truthfulqa(
            path, questions, judge=judge, info_judge=info_judge, generation=not args.no_generation,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        )  # fmt: skip
        rows += [
            {"model": name, "setting": setting, "question": q.question, "answer": a}
            for setting, ans in answers.items()
            for q, a in zip(questions, ans, strict=True)
        ]
    results["settings"] = {
        "data": str(args.data),
        "questions": len(questions),
        "mc": "lm-evaluation-harness truthfulqa_mc1 / truthfulqa_mc2: six-shot QA prompt, ' ' + choice",
        "generation": None
        if args.no_generation
        else {
            "prompts": list(PROMPT_SETTINGS),
            "decoding": "greedy, cut at the first line break",
            "max_new_tokens": args.max_new_tokens,
            "judge": args.judge or "reference ROUGE-L (closer to a correct than to an incorrect reference)",
            "info_judge": args.info_judge,
        },
        "ci95": "normal approximation, mean ± 1.96 s/sqrt(n)",
    }
    out = write_results(args.out, results)
    if rows:
        write_jsonl(Path(args.out) / "answers.jsonl", rows)
    print(format_table(results["models"], f"TruthfulQA ({len(questions)} questions) -> {out}"))
    return 0


def run_tax(args) -> int:
    from instructrl.datasets.io import write_jsonl
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks.common import format_table, write_results
    from instructrl.evaluation.benchmarks.tax import QA_TEMPLATE, read_task, task_scores, tax_table
    from instructrl.models.loading import check_model_dir

    models = _named(args.model)
    if args.baseline not in models:
        raise UserError(f"--baseline {args.baseline!r} is not one of the --model names {sorted(models)}")
    for path in models.values():
        check_model_dir(path)
    tasks = [read_task(p) for p in args.data]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise UserError(
            f"--data: two files share a name ({names}); the task name is the file name, rename one"
        )
    per_item, rows = {}, []
    for name, path in models.items():
        per_item[name], answers = task_scores(
            path, tasks, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        )
        rows += [{"model": name, **a} for a in answers]
    scores, tax = tax_table(per_item, args.baseline)
    results = {
        "benchmark": "tax",
        "models": scores,
        "tax": tax,
        "settings": {
            "baseline": args.baseline,
            "tasks": {
                t.name: {"file": str(p), "kind": t.kind, "items": len(t.items)}
                for t, p in zip(tasks, args.data, strict=True)
            },
            "multiple_choice": "acc and acc_norm (log-likelihood / characters of the ending), as lm-evaluation-harness",
            "qa": {
                "prompt": QA_TEMPLATE,
                "decoding": "greedy, cut at the first line break",
                "max_new_tokens": args.max_new_tokens,
                "metrics": "SQuAD v1.1 token F1 and exact match, best over the gold answers",
            },
            "tax": "mean per-item difference to the baseline with a paired 95% interval",
            "ci95": "normal approximation, mean ± 1.96 s/sqrt(n)",
        },
    }
    out = write_results(args.out, results)
    if rows:
        write_jsonl(Path(args.out) / "answers.jsonl", rows)
    print(format_table(scores, f"Scores -> {out}"))
    if tax:
        print()
        print(format_table(tax, f"Alignment tax: difference to {args.baseline} (negative = worse)"))
    return 0
