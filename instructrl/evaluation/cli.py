"""`instructrl eval ...`: the measurements of InstructGPT's evaluation on your own models and labels.

answers      sample each model's responses to held-out prompts (for A/B tasks in the labeling app)
winrate      win rates with 95% intervals from A/B judgements (ab.jsonl from `instructrl label export`)
labels       the paper's human evaluation from the export: win rates, Likert and metadata, by round
lm-loss      loss on pretraining text: the alignment tax of RLHF
rm-accuracy  a reward model's agreement with held-out rankings
toxicity     RealToxicityPrompts: InstructGPT's protocol (mean toxicity of greedy continuations) or Gehman's
bias         CrowS-Pairs and Winogender: lm-evaluation-harness's metrics and the paper's entropy
truthfulqa   TruthfulQA: MC1, MC2 and judged greedy answers (QA and Instruction + QA prompts)
tax          the alignment tax: the paper's NLP tasks through lm-evaluation-harness, or your own MC / QA files
suite        the four benchmarks above on the same models, each against a baseline item by item: report.html
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HUB_DATA = (
    "or a Hugging Face Hub dataset ORG/NAME[@REVISION][:FILE] read offline from the local cache "
    "(`hf download ORG/NAME --repo-type dataset` first)"
)


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

    h = s.add_parser("labels", help="the paper's human evaluation: win rates, Likert and metadata flags")
    h.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="the labeling app export's comparisons.jsonl and/or ab.jsonl (a folder: its *.jsonl)",
    )
    h.add_argument("--baseline", help="the model win rates are against (needed with A/B judgements)")
    h.add_argument(
        "--heldout",
        nargs="+",
        default=[],
        metavar="ID_OR_FILE",
        help="labeler ids to count as held out besides those the export marks (labeler_group 'heldout'); "
        "a file: one id a line",
    )
    h.add_argument("--out", required=True, help="output directory: results.json")
    h.set_defaults(func=run_labels)

    lm = s.add_parser("lm-loss", help="mean per-token loss on pretraining text")
    lm.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    lm.add_argument("--data", required=True, nargs="+", help="pretraining text JSONL ({'text': ...})")
    lm.set_defaults(func=run_lm_loss)

    r = s.add_parser("rm-accuracy", help="reward-model pairwise accuracy on comparisons")
    r.add_argument("--model", required=True, help="reward model directory or Hub id ORG/NAME[@REVISION]")
    r.add_argument("--data", required=True, nargs="+", help="comparisons JSONL")
    r.set_defaults(func=run_rm_accuracy)

    settings = ["none", "respectful", "biased"]
    t = s.add_parser(
        "toxicity", help="RealToxicityPrompts under InstructGPT's protocol or Gehman et al.'s, scored offline"
    )
    t.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="(repeat)")
    t.add_argument(
        "--data", required=True, nargs="+", help=f"RealToxicityPrompts JSONL or Parquet file(s); {HUB_DATA}"
    )
    t.add_argument("--out", required=True, help="output directory: results.json, samples.jsonl")
    t.add_argument(
        "--protocol",
        choices=["gehman", "instructgpt"],
        default="gehman",
        help="gehman (default): Gehman et al. 2020's, the protocol of most published RealToxicityPrompts "
        "numbers: --samples continuations per prompt (temperature 1, top-p 0.9), expected maximum toxicity and "
        "toxicity probability by toxic and non-toxic prompt. instructgpt: the InstructGPT paper's (Ouyang et al. "
        "2022, §4.2 and Appendix D): prompts sampled uniformly across prompt toxicity (needs each prompt's "
        "prompt.toxicity), one greedy continuation cut at the first line break, mean toxicity",
    )
    t.add_argument("--samples", type=int, metavar="N", help="gehman: continuations per prompt (default 25)")
    t.add_argument("--max-new-tokens", type=int, default=20)
    t.add_argument("--temperature", type=float, help="gehman: sampling temperature (default 1.0)")
    t.add_argument("--top-p", type=float, help="gehman: nucleus sampling (default 0.9)")
    t.add_argument(
        "--per-bin",
        type=int,
        metavar="N",
        help="instructgpt: prompts drawn from each 0.1-wide bin of prompt toxicity (default: as many as the "
        "smallest non-empty bin holds, so the sample is uniform)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--limit", type=int, metavar="N", help="only the first N prompts of each file")
    t.add_argument("--settings", nargs="+", choices=settings, default=settings, help="instructions")
    t.add_argument(
        "--prompt-format",
        choices=["model", "raw"],
        default="model",
        help="model: the checkpoint's saved prompt template (the stages' default '{prompt}\\n' if it has "
        "none); raw: the text alone",
    )
    t.add_argument(
        "--classifier",
        metavar="DIR",
        help="a Hugging Face sequence classifier to score toxicity, a folder or a Hub id in the local cache, "
        "e.g. unitary/toxic-bert or s-nlp/roberta_toxicity_classifier (`hf download ID` first). "
        "Default: alt-profanity-check, offline, a word detector (against Perspective: recall 0.63 at 0.5)",
    )
    t.add_argument("--toxic-label", metavar="LABEL", help="the classifier's toxic label, if not 'toxic'")
    t.set_defaults(func=run_toxicity)

    b = s.add_parser("bias", help="CrowS-Pairs and Winogender: harness metrics and the paper's entropy")
    b.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="(repeat)")
    b.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="crows_pairs_anonymized.csv and/or Winogender all_sentences.tsv (told apart by their header), "
        f"or the same as Parquet; {HUB_DATA}",
    )
    b.add_argument("--out", required=True, help="output directory: results.json")
    b.add_argument(
        "--occupation-stats",
        metavar="TSV",
        help="Winogender occupations-stats.tsv for the gotcha subset (default: next to all_sentences.tsv); a "
        "file or ORG/NAME[@REVISION]:FILE",
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
        help="TruthfulQA.csv (2021 or 2025 version), or the Hugging Face multiple_choice (or generation) layout "
        f"as JSONL or Parquet; {HUB_DATA}, e.g. truthfulqa/truthful_qa (its multiple_choice validation split)",
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

    from instructrl.evaluation.benchmarks.harness import TASKS as HARNESS_TASKS

    x = s.add_parser("tax", help="the alignment tax: scores on NLP tasks against a baseline model")
    x.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a model (repeat)")
    x.add_argument(
        "--data",
        nargs="+",
        default=[],
        help="JSONL files: {ctx, endings, label} (multiple choice) or {context, question, answers} (QA)",
    )
    x.add_argument(
        "--task",
        action="append",
        metavar="TASK=FILE",
        help="an lm-evaluation-harness task on local rows in its dataset's layout, JSONL or Parquet (repeat): "
        + ", ".join(HARNESS_TASKS),
    )
    x.add_argument(
        "--fewshot",
        action="append",
        metavar="TASK=FILE",
        help="the rows of the split the task's few-shot examples come from (train; WMT: validation)",
    )
    x.add_argument(
        "--num-fewshot",
        type=int,
        metavar="K",
        help="few-shot examples for every --task (default: GPT-3's K per task, e.g. 20 for HellaSwag)",
    )
    x.add_argument("--baseline", required=True, help="NAME of the model the others are compared with")
    x.add_argument(
        "--out", required=True, help="output directory: results.json, answers.jsonl, samples.jsonl"
    )
    x.add_argument("--max-new-tokens", type=int, default=32, help="--data QA files: answer length")
    x.add_argument("--batch-size", type=int, default=16)
    x.add_argument(
        "--device", choices=["cpu", "cuda"], help="where --task runs (default: cuda when there is one)"
    )
    x.set_defaults(func=run_tax)

    u = s.add_parser("suite", help="truthfulqa, toxicity, bias and tax on the same models, one report.html")
    u.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a model (repeat)")
    u.add_argument(
        "--out", required=True, help="output directory: one folder per benchmark, suite.json, report.html"
    )
    u.add_argument("--truthfulqa", metavar="FILE", help="TruthfulQA data (as eval truthfulqa --data)")
    u.add_argument("--toxicity", nargs="+", metavar="FILE", help="RealToxicityPrompts JSONL (eval toxicity)")
    u.add_argument("--bias", nargs="+", metavar="FILE", help="CrowS-Pairs / Winogender files (eval bias)")
    u.add_argument("--tax", nargs="+", metavar="FILE", help="multiple-choice / QA JSONL files (eval tax)")
    u.add_argument(
        "--baseline",
        help="NAME every other model is compared with, item by item, and the alignment tax is measured "
        "against (default: the first model)",
    )
    u.add_argument(
        "--toxicity-protocol",
        choices=["gehman", "instructgpt"],
        default="gehman",
        help="toxicity: as eval toxicity --protocol",
    )
    u.add_argument(
        "--samples", type=int, default=25, help="toxicity, gehman protocol: continuations per prompt"
    )
    u.add_argument(
        "--limit", type=int, metavar="N", help="toxicity and bias: only the first N rows of each file"
    )
    u.add_argument(
        "--occupation-stats",
        metavar="TSV",
        help="bias: Winogender occupations-stats.tsv for the gotcha subset (as eval bias)",
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
    from instructrl.datasets.records import ABPair, EvalPrompt
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
    rows: list[ABPair] | list[dict[str, str]]
    if args.baseline is None:
        rows = [
            {"prompt": p, "model": name, "response": answers[name][i]}
            for name in models
            for i, p in enumerate(texts)
        ]
    else:
        rows = [
            ABPair(
                prompt=p,
                model_a=name,
                response_a=answers[name][i],
                model_b=args.baseline,
                response_b=answers[args.baseline][i],
            )
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
    from instructrl.evaluation.labels import ab_outcome
    from instructrl.evaluation.stats import win_rate

    outcomes: dict[str, list[float]] = {}
    judgements: list[ABJudgement] = read_records(args.ab, "ab")  # type: ignore[assignment]
    for j in judgements:
        if (outcome := ab_outcome(j, args.baseline)) is not None:
            outcomes.setdefault(outcome[0], []).append(outcome[1])
    print(json.dumps({m: win_rate(o) for m, o in sorted(outcomes.items())}, indent=2))
    return 0


def run_labels(args) -> int:
    from instructrl import __version__
    from instructrl.errors import UserError
    from instructrl.evaluation import labels
    from instructrl.evaluation.benchmarks._results import write_results

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: not a folder; give a folder for results.json")
    comparisons, judgements, files = labels.read_labels(args.data)
    result = labels.human_eval(
        comparisons, judgements, baseline=args.baseline, heldout_ids=labels.read_heldout_ids(args.heldout)
    )
    settings = {
        "baseline": args.baseline,
        "data": files,
        "heldout": args.heldout,
        "labelers": result.labelers,
        "definitions": labels.DEFINITIONS,
        "ci95": "win rates and flag rates: Wilson; likert: normal approximation, clipped to 1-7",
        "notes": result.notes,
        "instructrl": __version__,
    }
    out = write_results(args.out, "labels", result.models, settings)
    print(labels.table(result.models))
    for note, n in result.notes.items():
        print(f"{note}: {n}")
    print(f"wrote {out}")
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
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks import toxicity as tx
    from instructrl.evaluation.benchmarks._results import INSTRUCTIONS, format_table, write_results

    _check_positive(samples=args.samples, max_new_tokens=args.max_new_tokens, limit=args.limit,
                    batch_size=args.batch_size, per_bin=args.per_bin)  # fmt: skip
    instructgpt = args.protocol == "instructgpt"
    wrong = ("samples", "temperature", "top_p") if instructgpt else ("per_bin",)
    given = [f"--{f.replace('_', '-')}" for f in wrong if getattr(args, f) is not None]
    if given:
        raise UserError(
            f"{' '.join(given)}: not part of --protocol {args.protocol}: "
            + (
                "the InstructGPT protocol decodes greedily, one continuation per prompt; use --protocol gehman "
                "to sample"
                if instructgpt
                else "only --protocol instructgpt samples prompts by bin of prompt toxicity"
            )
        )
    models = _named(args.model)
    prompts = tx.read_rtp(args.data, args.limit)
    common = dict(
        max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
        settings=tuple(args.settings), prompt_format=args.prompt_format,
    )  # fmt: skip
    bins = None
    if instructgpt:
        config = tx.ToxicityConfig.instructgpt(per_bin=args.per_bin, **common)
        prompts, bins = tx.stratified_sample(prompts, args.per_bin, args.seed)
    else:
        given_sampling = {f: getattr(args, f) for f in ("samples", "temperature", "top_p")}
        config = tx.ToxicityConfig(**{f: v for f, v in given_sampling.items() if v is not None}, **common)
    scorer = (
        tx.ClassifierScorer(args.classifier, args.toxic_label)
        if args.classifier
        else tx.ProfanityCheckScorer()
    )
    results, samples = {}, []
    for name, path in models.items():
        with _progress(
            len(prompts) * config.samples * len(args.settings), f"toxicity: {name}", "sample"
        ) as bar:
            results[name], rows = tx.evaluate_model(path, prompts, scorer, config, progress=_ticker(bar))
        samples += [{"model": name, **r} for r in rows]
    settings = {
        **{k: getattr(config, k) for k in config.__dataclass_fields__},
        "protocol_description": tx.PROTOCOLS[config.protocol],
        "decoding": "greedy (temperature 0), cut at the first line break"
        if instructgpt
        else f"sampled: temperature {config.temperature}, top-p {config.top_p}",
        "settings": list(config.settings),
        "instructions": {k: INSTRUCTIONS[k] for k in config.settings},
        "scorer": scorer.name,
        "threshold": tx.TOXIC,
        "data": [str(p) for p in args.data],
        "data_files": [str(f) for f in tx.rtp_files(args.data)],
        "prompts": {"toxic": sum(p.toxic for p in prompts), "nontoxic": sum(not p.toxic for p in prompts)},
        **({"prompt_bins": bins} if bins is not None else {}),
        "caveats": tx.caveats(
            default_scorer=not args.classifier, scorer_name=scorer.name, protocol=config.protocol, bins=bins
        ),
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
    crows, wino, stats_path, files = [], [], None, []
    for f in (f for spec in args.data for f in bs.bias_files(spec)):  # a Hub id may name several files
        files.append(str(f))
        if bs.detect(f) == "crows":
            crows += bs.read_crows(f, args.limit)
        else:
            wino += bs.read_winogender(f, args.limit)
            stats_path = args.occupation_stats or str(f.parent / "occupations-stats.tsv")
    gotcha, gotcha_note = None, None
    if wino and stats_path is not None and (args.occupation_stats or Path(stats_path).is_file()):
        stats = bs.read_occupation_stats(stats_path)
        unknown = sorted({w.occupation for w in wino} - set(stats))
        if unknown:
            raise UserError(f"{stats_path}: no bls_pct_female for occupation(s) {unknown}")
        gotcha = [bs.is_gotcha(w, stats[w.occupation]) for w in wino]
        gotcha_note = {"computed": True, "n": sum(gotcha), "occupation_stats": stats_path}
    elif wino:
        why = f"no {stats_path}: the gotcha subset needs Winogender's occupations-stats.tsv (give --occupation-stats)"
        print(f"{why}; Winogender's gotcha subset is left out")
        gotcha_note = {"computed": False, "n": None, "occupation_stats": None, "why_not": why}
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
        "data_files": files,
        "occupation_stats": stats_path if gotcha is not None else None,
        "rows": {"crows_pairs": len(crows), "winogender": len(wino)},
        "winogender_gotcha": gotcha_note,
        "definitions": {
            "crows_pairs/pct_stereotype": "share of pairs with log P(sent_more) > log P(sent_less) (harness)",
            "crows_pairs/likelihood_diff": "mean |log P(sent_more) - log P(sent_less)|, nats (harness)",
            "winogender/acc": "argmax over ' occupation' / ' participant' after "
            '"{sentence} ‘{Pronoun}’ refers to the" is the referent (harness)',
            "winogender/acc/gotcha": "male/female sentences whose pronoun contradicts the occupation's BLS "
            "majority gender when the occupation is the referent, or agrees with it when the participant is",
            "crows_pairs/entropy_bits": "entropy (bits) of the normalised probabilities of sent_more and "
            "sent_less, after each instruction; in [0, 1], 1 = no preference (paper)",
            "winogender/entropy_bits": "the paper's binary entropy (Ouyang et al. 2022, §4.2 and Appendix D): "
            "bits of the normalised probabilities of the he and she variants of a sentence, after each "
            "instruction; in [0, 1], 1 = no preference",
            "winogender/entropy_bits_he_she_they": "the same over the he, she and they variants; in "
            "[0, log2 3] (not the paper's)",
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
        truthfulqa_files,
    )

    models = _named(args.model)
    questions = read_truthfulqa(args.data)
    judge = ClassifierJudge(args.judge) if args.judge else ReferenceJudge()
    info_judge = ClassifierJudge(args.info_judge) if args.info_judge else None
    results, rows = {}, []
    for name, path in models.items():
        with _progress(0, f"truthfulqa: {name}", unit="step") as bar:  # MC requests, then answers
            results[name], answers = evaluate_truthfulqa(
                path, questions, judge=judge, info_judge=info_judge, generation=not args.no_generation,
                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                progress=_ticker(bar, set_total=True),
            )  # fmt: skip
        rows += [
            {"model": name, "setting": setting, "question": q.question, "answer": a}
            for setting, ans in answers.items()
            for q, a in zip(questions, ans, strict=True)
        ]
    settings = {
        "data": str(args.data),
        "data_files": [str(f) for f in truthfulqa_files(args.data)],
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
        "ci95": "MC2: percentile bootstrap; shares (MC1, truthful, no_comment, ...): Wilson",
        "models": models,
    }
    out = write_results(args.out, "truthfulqa", results, settings)
    if rows:
        write_jsonl(Path(args.out) / "answers.jsonl", rows)
    print(format_table(results))
    print(f"wrote {out}")
    return 0


def run_tax(args) -> int:
    import torch

    from instructrl.datasets.io import write_jsonl
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks import harness
    from instructrl.evaluation.benchmarks._results import format_table, write_results
    from instructrl.evaluation.benchmarks.tax import QA_TEMPLATE, read_task, task_scores, tax_table

    _check_positive(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    models = _named(args.model)
    if args.baseline not in models:
        raise UserError(f"--baseline {args.baseline!r} is not one of the --model names {sorted(models)}")
    if not args.data and not args.task:
        raise UserError(
            "eval tax: give lm-evaluation-harness tasks (--task TASK=FILE) and/or your own multiple-choice "
            "and QA files (--data FILE)"
        )
    # every file is read and checked before any model runs: a bad row stops the command with nothing written
    tasks = [read_task(p) for p in args.data]
    harness_tasks = harness.read_harness_tasks(
        harness.parse_pairs(args.task, "--task"),
        harness.parse_pairs(args.fewshot, "--fewshot"),
        args.num_fewshot,
    )
    names = [t.name for t in tasks] + [t.name for t in harness_tasks]
    if len(set(names)) != len(names):
        raise UserError(
            f"two tasks share a name ({names}); a --data task is named after its file: rename the file"
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA device; use --device cpu")
    per_item: dict[str, dict[str, list[float]]] = {name: {} for name in models}
    by_model: dict[str, harness.HarnessScores] = {}
    samples, rows = [], []
    if harness_tasks:
        by_model = harness.harness_scores(models, harness_tasks, batch_size=args.batch_size, device=device)
        for name, h in by_model.items():
            per_item[name].update(h.per_item)
            samples += [{"model": name, **r} for r in h.samples]
    for name, path in models.items():
        if tasks:
            own, answers = task_scores(
                path, tasks, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
            )
            per_item[name].update(own)
            rows += [{"model": name, **a} for a in answers]
    scores, tax = tax_table(per_item, args.baseline)
    for name, h in by_model.items():  # BLEU, TER, chrF: scores of the whole corpus, no per-item scores
        scores[name].update(h.corpus)
    for name, differences in (harness.corpus_tax(by_model, args.baseline) if by_model else {}).items():
        tax[name].update(differences)
    settings: dict = {
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
        "tax": "mean per-item difference to the baseline with a paired 95% interval (0/1 scores: Newcombe's; "
        "F1: a bootstrap of the differences)",
        "ci95": "F1: percentile bootstrap; acc, acc_norm, em: Wilson",
        "models": models,
    }
    if harness_tasks:
        from importlib.metadata import version

        settings["harness"] = {
            "lm_eval": version("lm_eval"),
            "scoring": "lm-evaluation-harness's own task configs, prompts, few-shot sampling and metrics, "
            "run in-process (lm_eval.simple_evaluate, its default seeds) on the weights instructrl loads "
            "(float32); only the data source is replaced, by the local files",
            "device": device,
            "tasks": {
                t.name: {
                    "paper": t.spec.paper,
                    "file": str(t.file),
                    "split": t.spec.splits[0],
                    "items": len(t.lines),
                    "num_fewshot": t.num_fewshot,
                    "fewshot_file": None if t.fewshot_file is None else str(t.fewshot_file),
                    "fewshot_rows": t.fewshot_rows,
                }
                for t in harness_tasks
            },
            "corpus_metrics": "bleu, ter (lower is better), chrf: the harness's corpus scores, +-1.96 of its "
            "bootstrap standard error; their tax is the difference, +-1.96 sqrt(se^2 + se_baseline^2) (unpaired: "
            "no per-item scores)",
        }
    out = write_results(args.out, "tax", scores, settings, extra={"tax": tax})
    if rows:
        write_jsonl(Path(args.out) / "answers.jsonl", rows)
    if samples:
        write_jsonl(Path(args.out) / "samples.jsonl", samples)
    print(format_table(scores))
    if tax:
        print(f"\nalignment tax: difference to {args.baseline} (negative = worse)")
        print(format_table(tax))
    print(f"wrote {out}")
    return 0


def run_suite(args) -> int:
    """Each benchmark whose data is given, as its own command runs it, into OUT/<benchmark>/ (results.json,
    per_item.json); every other model against the baseline, item by item, into OUT/suite.json; and
    OUT/report.html: verdicts, caveats, and per benchmark charts, n, intervals, definitions and settings.

    A benchmark runs from its command's own arguments, parsed: flags it gains keep their defaults here."""
    import platform
    import shlex
    from importlib.metadata import PackageNotFoundError, version

    from instructrl.cli import build_parser
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks._results import (
        compare_with_baseline,
        read_results,
        verdict_sentence,
    )
    from instructrl.report.html import write_report

    models = _named(args.model)
    baseline = args.baseline or next(iter(models))
    if baseline not in models:
        raise UserError(f"--baseline {baseline!r} is not one of the --model names {sorted(models)}")
    limit = [] if args.limit is None else ["--limit", str(args.limit)]
    stats = [] if args.occupation_stats is None else ["--occupation-stats", args.occupation_stats]
    runs: dict[str, list[str]] = {}
    if args.truthfulqa:
        runs["truthfulqa"] = ["--data", args.truthfulqa]
    if args.toxicity:
        protocol = ["--protocol", args.toxicity_protocol]
        if args.toxicity_protocol == "gehman":
            protocol += ["--samples", str(args.samples)]
        runs["toxicity"] = ["--data", *args.toxicity, *protocol, *limit]
    if args.bias:
        runs["bias"] = ["--data", *args.bias, *limit, *stats]
    if args.tax:
        runs["tax"] = ["--data", *args.tax, "--baseline", baseline]
    if not runs:
        raise UserError(
            "eval suite: give the data of at least one benchmark (--truthfulqa, --toxicity, --bias, --tax)"
        )
    # every data file is read before anything runs: bad input stops the suite with nothing written
    from instructrl.evaluation.benchmarks import bias, tax, toxicity, truthfulqa

    if args.truthfulqa:
        truthfulqa.read_truthfulqa(args.truthfulqa)
    if args.toxicity:
        prompts = toxicity.read_rtp(args.toxicity, args.limit)
        if args.toxicity_protocol == "instructgpt":
            toxicity.stratified_sample(prompts, None, 0)  # every prompt has its score
    for f in (f for spec in args.bias or [] for f in bias.bias_files(spec)):
        bias.read_crows(f, args.limit) if bias.detect(f) == "crows" else bias.read_winogender(f, args.limit)
    for f in args.tax or []:
        tax.read_task(f)

    parser, model_args = build_parser(), [a for m in args.model for a in ("--model", m)]
    docs, commands = [], {}
    for i, (bench, extra) in enumerate(runs.items(), start=1):
        print(f"== eval suite: {bench} ({i} of {len(runs)}) ==")
        out = Path(args.out) / bench
        argv = ["eval", bench, *model_args, "--out", str(out), *extra]
        commands[bench] = shlex.join(["instructrl", *argv])
        sub_args = parser.parse_args(argv)
        sub_args.func(sub_args)
        doc, items = read_results(out)
        doc["comparisons"] = compare_with_baseline(bench, items, baseline)
        docs.append(doc)

    versions = {"python": platform.python_version()}
    for package in ("instructrl", "torch", "transformers", "lm-eval", "alt-profanity-check", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    suite = {
        "models": {
            name: str(Path(path).resolve()) if Path(path).exists() else path for name, path in models.items()
        },
        "baseline": baseline,
        "versions": versions,
        "commands": commands,
    }
    comparisons = {doc["benchmark"]: doc["comparisons"] for doc in docs}
    (Path(args.out) / "suite.json").write_text(
        json.dumps({**suite, "comparisons": comparisons}, indent=2, allow_nan=True) + "\n", encoding="utf-8"
    )
    print(f"\nagainst {baseline}, item by item (95%):")
    for bench, per_model in comparisons.items():
        for name, per_metric in per_model.items():
            found = [c for c in per_metric.values() if c["verdict"] != "no detectable difference"]
            print(f"  {bench}: {name}: a difference on {len(found)} of {len(per_metric)} metrics")
            for metric, c in per_metric.items():
                if c["verdict"] != "no detectable difference":
                    print(f"    {verdict_sentence(name, baseline, metric, c)}")
    summary = {"benchmarks": docs, "suite": suite}
    report = write_report(summary, Path(args.out) / "report.html", title="instructrl: public benchmarks")
    print(f"wrote {report}")
    return 0
