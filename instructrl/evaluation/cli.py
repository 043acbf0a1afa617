"""`instructrl eval ...`: the measurements of InstructGPT's evaluation on your own models and labels.

answers      sample each model's responses to held-out prompts (for A/B tasks in the labeling app)
winrate      win rates with 95% intervals from A/B judgements (ab.jsonl from `instructrl label export`)
lm-loss      loss on pretraining text: the alignment tax of RLHF
rm-accuracy  a reward model's agreement with held-out rankings
toxicity     RealToxicityPrompts: expected maximum toxicity and toxicity probability (the paper's protocol)
bias         CrowS-Pairs and Winogender: lm-evaluation-harness's metrics and the paper's entropy
truthfulqa   TruthfulQA: MC1, MC2 and judged greedy answers (QA and Instruction + QA prompts)
tax          the alignment tax on your multiple-choice (HellaSwag-style) and QA (SQuAD-style) files
suite        the four benchmarks above on the same models, into one report.html with plots
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
        "--model",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a model to sample (repeat); DIR may be a Hub id ORG/NAME[@REVISION]",
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
    r.add_argument("--model", required=True, help="reward model directory or Hub id ORG/NAME[@REVISION]")
    r.add_argument("--data", required=True, nargs="+", help="comparisons JSONL")
    r.set_defaults(func=run_rm_accuracy)

    settings = ["none", "respectful", "biased"]
    t = s.add_parser("toxicity", help="RealToxicityPrompts: N samples per prompt, scored offline")
    t.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="(repeat)")
    t.add_argument("--data", required=True, nargs="+", help="RealToxicityPrompts JSONL file(s)")
    t.add_argument("--out", required=True, help="output directory: results.json, samples.jsonl")
    t.add_argument("--samples", type=int, default=25, metavar="N", help="continuations per prompt")
    t.add_argument("--max-new-tokens", type=int, default=20)
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--top-p", type=float, default=0.9)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--limit", type=int, metavar="N", help="only the first N prompts of each file")
    t.add_argument("--settings", nargs="+", choices=settings, default=settings, help="instructions")
    t.add_argument(
        "--prompt-format",
        choices=["model", "raw"],
        default="model",
        help="model: the checkpoint's saved prompt template (raw text if it has none); raw: the text alone",
    )
    t.add_argument(
        "--classifier",
        metavar="DIR",
        help="a Hugging Face sequence classifier to score toxicity (default: alt-profanity-check, offline)",
    )
    t.add_argument("--toxic-label", metavar="LABEL", help="the classifier's toxic label, if not 'toxic'")
    t.set_defaults(func=run_toxicity)

    b = s.add_parser("bias", help="CrowS-Pairs and Winogender: harness metrics and the paper's entropy")
    b.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="(repeat)")
    b.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="crows_pairs_anonymized.csv and/or Winogender all_sentences.tsv (told apart by their header)",
    )
    b.add_argument("--out", required=True, help="output directory: results.json")
    b.add_argument(
        "--occupation-stats",
        metavar="TSV",
        help="Winogender occupations-stats.tsv for the gotcha subset (default: next to all_sentences.tsv)",
    )
    b.add_argument("--limit", type=int, metavar="N", help="only the first N rows of each file")
    b.add_argument("--settings", nargs="+", choices=settings, default=["none", "respectful"])
    b.add_argument("--prompt-format", choices=["model", "raw"], default="model")
    b.add_argument("--batch-size", type=int, default=32)
    b.set_defaults(func=run_bias)

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

    u = s.add_parser("suite", help="truthfulqa, toxicity, bias and tax on the same models, one report.html")
    u.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a model (repeat)")
    u.add_argument("--out", required=True, help="output directory: one folder per benchmark, report.html")
    u.add_argument("--truthfulqa", metavar="FILE", help="TruthfulQA data (as eval truthfulqa --data)")
    u.add_argument("--toxicity", nargs="+", metavar="FILE", help="RealToxicityPrompts JSONL (eval toxicity)")
    u.add_argument("--bias", nargs="+", metavar="FILE", help="CrowS-Pairs / Winogender files (eval bias)")
    u.add_argument("--tax", nargs="+", metavar="FILE", help="multiple-choice / QA JSONL files (eval tax)")
    u.add_argument("--baseline", help="NAME the alignment tax is measured against (default: the first model)")
    u.add_argument("--samples", type=int, default=25, help="toxicity: continuations per prompt")
    u.add_argument(
        "--limit", type=int, metavar="N", help="toxicity and bias: only the first N rows of each file"
    )
    u.set_defaults(func=run_suite)


def _named(pairs: list[str]) -> dict[str, str]:
    """--model NAME=DIR values as {NAME: DIR}, each model resolved (a directory or a cached Hub id)."""
    from instructrl.errors import UserError
    from instructrl.models.loading import resolve_model

    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--model {p!r}: expected NAME=DIR, for example --model sft=runs/sft/final")
        resolve_model(path)  # a missing directory or uncached Hub id fails here, before any work
        out[name] = path
    return out


def run_answers(args) -> int:
    from instructrl.datasets.io import read_records, write_jsonl
    from instructrl.datasets.records import EvalPrompt
    from instructrl.errors import UserError
    from instructrl.evaluation.models import best_of_n, best_of_n_kl, generate_answers
    from instructrl.models.loading import resolve_model

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
        resolve_model(args.reward, "reward model")
    records: list[EvalPrompt] = read_records(args.prompts, "eval_prompts")  # type: ignore[assignment]
    prompts = [r.conversation for r in records]  # what the models read: a conversation or a plain prompt
    texts = [r.prompt for r in records]
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
            for i, p in enumerate(texts)
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
            for i, p in enumerate(texts)
        ]
    n = write_jsonl(args.out, rows)
    report: dict = {"written": n, "out": args.out}
    if args.best_of > 1:
        report["best_of"] = args.best_of
        report["kl_to_sampling_policy_at_most"] = best_of_n_kl(args.best_of)
        report["mean_reward"] = {name: sum(sc) / len(sc) for name, sc in scores.items()}
    print(json.dumps(report))
    return 0


def _progress(total: int, desc: str, unit: str = "answer"):
    from instructrl.training.runtime import progress_bar

    return progress_bar(total, desc, unit=unit)


def _ticker(bar, set_total: bool = False):
    def tick(done: int, total: int) -> None:
        if set_total:
            bar.total = total  # the number of log-likelihood requests is known only inside the evaluation
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


def _check_positive(**values: int | None) -> None:
    from instructrl.errors import UserError

    for flag, v in values.items():
        if v is not None and v < 1:
            raise UserError(f"--{flag.replace('_', '-')} {v}: must be 1 or more")


def run_toxicity(args) -> int:
    from instructrl import __version__
    from instructrl.datasets.io import write_jsonl
    from instructrl.evaluation.benchmarks import toxicity as tx
    from instructrl.evaluation.benchmarks._results import INSTRUCTIONS, format_table, write_results

    _check_positive(samples=args.samples, max_new_tokens=args.max_new_tokens, limit=args.limit,
                    batch_size=args.batch_size)  # fmt: skip
    models = _named(args.model)
    prompts = tx.read_rtp(args.data, args.limit)
    scorer = (
        tx.ClassifierScorer(args.classifier, args.toxic_label)
        if args.classifier
        else tx.ProfanityCheckScorer()
    )
    config = tx.ToxicityConfig(
        samples=args.samples, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, seed=args.seed, batch_size=args.batch_size, settings=tuple(args.settings),
        prompt_format=args.prompt_format,
    )  # fmt: skip
    results, samples = {}, []
    for name, path in models.items():
        with _progress(
            len(prompts) * args.samples * len(args.settings), f"toxicity: {name}", "sample"
        ) as bar:
            results[name], rows = tx.evaluate_model(path, prompts, scorer, config, progress=_ticker(bar))
        samples += [{"model": name, **r} for r in rows]
    settings = {
        **{k: getattr(config, k) for k in config.__dataclass_fields__},
        "settings": list(config.settings),
        "instructions": {k: INSTRUCTIONS[k] for k in config.settings},
        "scorer": scorer.name,
        "threshold": tx.TOXIC,
        "data": [str(p) for p in args.data],
        "prompts": {"toxic": sum(p.toxic for p in prompts), "nontoxic": sum(not p.toxic for p in prompts)},
        "models": models,
        "instructrl": __version__,
    }
    out = write_results(args.out, "toxicity", results, settings)
    write_jsonl(f"{args.out}/samples.jsonl", samples)
    print(format_table(results))
    print(f"wrote {out}")
    return 0


def run_bias(args) -> int:
    from pathlib import Path

    from instructrl import __version__
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks import bias as bs
    from instructrl.evaluation.benchmarks._results import INSTRUCTIONS, format_table, write_results

    _check_positive(limit=args.limit, batch_size=args.batch_size)
    models = _named(args.model)
    crows, wino, stats_path = [], [], None
    for f in args.data:
        if bs.detect(f) == "crows":
            crows += bs.read_crows(f, args.limit)
        else:
            wino += bs.read_winogender(f, args.limit)
            stats_path = args.occupation_stats or str(Path(f).parent / "occupations-stats.tsv")
    gotcha = None
    if wino and stats_path is not None and (args.occupation_stats or Path(stats_path).is_file()):
        stats = bs.read_occupation_stats(stats_path)
        unknown = sorted({w.occupation for w in wino} - set(stats))
        if unknown:
            raise UserError(f"{stats_path}: no bls_pct_female for occupation(s) {unknown}")
        gotcha = [bs.is_gotcha(w, stats[w.occupation]) for w in wino]
    elif wino:
        print(f"no {stats_path}: Winogender's gotcha subset is left out (give --occupation-stats)")
    results = {}
    for name, path in models.items():
        with _progress(0, f"bias: {name}", unit="request") as bar:
            results[name] = bs.evaluate_model(
                path, crows, wino, gotcha, settings=args.settings, prompt_format=args.prompt_format,
                batch_size=args.batch_size, progress=_ticker(bar, set_total=True),
            )  # fmt: skip
    settings = {
        "settings": list(args.settings),
        "instructions": {k: INSTRUCTIONS[k] for k in args.settings},
        "prompt_format": args.prompt_format,
        "data": [str(p) for p in args.data],
        "occupation_stats": stats_path if gotcha is not None else None,
        "rows": {"crows_pairs": len(crows), "winogender": len(wino)},
        "definitions": {
            "crows_pairs/pct_stereotype": "share of pairs with log P(sent_more) > log P(sent_less) (harness)",
            "crows_pairs/likelihood_diff": "mean |log P(sent_more) - log P(sent_less)|, nats (harness)",
            "winogender/acc": "argmax over ' occupation' / ' participant' after "
            '"{sentence} ‘{Pronoun}’ refers to the" is the referent (harness)',
            "winogender/acc/gotcha": "male/female sentences whose pronoun contradicts the occupation's BLS "
            "majority gender when the occupation is the referent, or agrees with it when the participant is",
            "entropy_bits": "entropy (bits) of the normalised probabilities of the 2 CrowS-Pairs sentences "
            "(max 1) or the 3 Winogender he/she/they sentences (max log2 3), after each instruction (paper)",
        },
        "models": models,
        "instructrl": __version__,
    }
    out = write_results(args.out, "bias", results, settings)
    print(format_table(results))
    print(f"wrote {out}")
    return 0


def run_truthfulqa(args) -> int:
    from instructrl.datasets.io import write_jsonl
    from instructrl.evaluation.benchmarks._results import format_table, write_results
    from instructrl.evaluation.benchmarks.truthfulqa import (
        PROMPT_SETTINGS,
        ClassifierJudge,
        ReferenceJudge,
        evaluate_truthfulqa,
        read_truthfulqa,
    )

    models = _named(args.model)
    questions = read_truthfulqa(args.data)
    judge = ClassifierJudge(args.judge) if args.judge else ReferenceJudge()
    info_judge = ClassifierJudge(args.info_judge) if args.info_judge else None
    results, rows = {}, []
    for name, path in models.items():
        results[name], answers = evaluate_truthfulqa(
            path, questions, judge=judge, info_judge=info_judge, generation=not args.no_generation,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        )  # fmt: skip
        rows += [
            {"model": name, "setting": setting, "question": q.question, "answer": a}
            for setting, ans in answers.items()
            for q, a in zip(questions, ans, strict=True)
        ]
    settings = {
        "data": str(args.data),
        "questions": len(questions),
        "mc": "lm-evaluation-harness truthfulqa_mc1 / truthfulqa_mc2: six-shot QA prompt, ' ' + choice",
        "generation": None
        if args.no_generation
        else {
            "prompts": {k: v + "{QA prompt}" for k, v in PROMPT_SETTINGS.items()},
            "decoding": "greedy, cut at the first line break",
            "max_new_tokens": args.max_new_tokens,
            "judge": args.judge
            or "ROUGE-L on content words (closer to a correct than an incorrect reference)",
            "info_judge": args.info_judge,
        },
        "ci95": "MC2: normal approximation; shares (MC1, truthful, no_comment, ...): Wilson",
        "models": models,
    }
    out = write_results(args.out, "truthfulqa", results, settings)
    if rows:
        write_jsonl(Path(args.out) / "answers.jsonl", rows)
    print(format_table(results))
    print(f"wrote {out}")
    return 0


def run_tax(args) -> int:
    from instructrl.datasets.io import write_jsonl
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks._results import format_table, write_results
    from instructrl.evaluation.benchmarks.tax import QA_TEMPLATE, read_task, task_scores, tax_table

    models = _named(args.model)
    if args.baseline not in models:
        raise UserError(f"--baseline {args.baseline!r} is not one of the --model names {sorted(models)}")
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
    settings = {
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
        "tax": "mean per-item difference to the baseline with a paired normal 95% interval",
        "ci95": "F1: normal approximation; acc, acc_norm, em: Wilson",
        "models": models,
    }
    out = write_results(args.out, "tax", scores, settings, extra={"tax": tax})
    if rows:
        write_jsonl(Path(args.out) / "answers.jsonl", rows)
    print(format_table(scores))
    if tax:
        print(f"\nalignment tax: difference to {args.baseline} (negative = worse)")
        print(format_table(tax))
    print(f"wrote {out}")
    return 0


def run_suite(args) -> int:
    """Each benchmark whose data is given, as its own command would run it, into OUT/<benchmark>/; then
    OUT/report.html with every benchmark's plot and table."""
    from instructrl.cli import build_parser
    from instructrl.errors import UserError
    from instructrl.report.html import render

    names = list(_named(args.model))
    runs: dict[str, list[str]] = {}
    if args.truthfulqa:
        runs["truthfulqa"] = ["--data", args.truthfulqa]
    if args.toxicity:
        runs["toxicity"] = ["--data", *args.toxicity, "--samples", str(args.samples)]
    if args.bias:
        runs["bias"] = ["--data", *args.bias]
    if args.tax:
        runs["tax"] = ["--data", *args.tax, "--baseline", args.baseline or names[0]]
    if not runs:
        raise UserError(
            "eval suite: give the data of at least one benchmark (--truthfulqa, --toxicity, --bias, --tax)"
        )
    if args.limit is not None:
        for bench in ("toxicity", "bias"):
            runs.get(bench, []).extend(["--limit", str(args.limit)])
    # every data file is read before anything runs: bad input stops the suite with nothing written
    from instructrl.evaluation.benchmarks import bias, tax, toxicity, truthfulqa

    if args.truthfulqa:
        truthfulqa.read_truthfulqa(args.truthfulqa)
    if args.toxicity:
        toxicity.read_rtp(args.toxicity, args.limit)
    for f in args.bias or []:
        bias.read_crows(f, args.limit) if bias.detect(f) == "crows" else bias.read_winogender(f, args.limit)
    for f in args.tax or []:
        tax.read_task(f)
    models = [a for m in args.model for a in ("--model", m)]
    parser = build_parser()
    docs = []
    for bench, extra in runs.items():
        out = Path(args.out) / bench
        sub_args = parser.parse_args(["eval", bench, *models, "--out", str(out), *extra])
        sub_args.func(sub_args)
        docs.append(json.loads((out / "results.json").read_text(encoding="utf-8")))
    html = render({"benchmarks": docs}, title="instructrl: public benchmarks")
    report = Path(args.out) / "report.html"
    report.write_text(html, encoding="utf-8")
    print(f"wrote {report}")
    return 0
