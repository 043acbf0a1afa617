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
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

Config = TypeVar("Config", bound="BaseModel")

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

    # a benchmark's defaults are its config's (runs.py): the suite runs the same configs
    from instructrl.evaluation.benchmarks.runs import BiasEval, TaxEval, ToxicityEval, TruthfulQAEval
    from instructrl.evaluation.benchmarks.suite import SuiteConfig

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
    t.add_argument("--max-new-tokens", type=int)
    t.add_argument("--temperature", type=float, help="gehman: sampling temperature (default 1.0)")
    t.add_argument("--top-p", type=float, help="gehman: nucleus sampling (default 0.9)")
    t.add_argument(
        "--per-bin",
        type=int,
        metavar="N",
        help="instructgpt: prompts drawn from each 0.1-wide bin of prompt toxicity (default: as many as the "
        "smallest non-empty bin holds, so the sample is uniform)",
    )
    t.add_argument("--seed", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--limit", type=int, metavar="N", help="only the first N prompts of each file")
    t.add_argument("--settings", nargs="+", choices=settings, help="instructions")
    t.add_argument(
        "--prompt-format",
        choices=["model", "raw"],
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
    t.set_defaults(func=run_benchmark, **_defaults(ToxicityEval))

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
    b.add_argument("--settings", nargs="+", choices=settings)
    b.add_argument("--prompt-format", choices=["model", "raw"])
    b.add_argument("--batch-size", type=int)
    b.set_defaults(func=run_benchmark, **_defaults(BiasEval))

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
    t.add_argument("--max-new-tokens", type=int)
    t.add_argument("--batch-size", type=int)
    t.set_defaults(func=run_benchmark, **_defaults(TruthfulQAEval))

    from instructrl.evaluation.benchmarks.harness import TASKS as HARNESS_TASKS

    x = s.add_parser("tax", help="the alignment tax: scores on NLP tasks against a baseline model")
    x.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a model (repeat)")
    x.add_argument(
        "--data",
        nargs="+",
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
    x.add_argument("--max-new-tokens", type=int, help="--data QA files: answer length")
    x.add_argument("--batch-size", type=int)
    x.add_argument(
        "--device", choices=["cpu", "cuda"], help="where --task runs (default: cuda when there is one)"
    )
    x.set_defaults(func=run_benchmark, **_defaults(TaxEval))

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
        help="toxicity: as eval toxicity --protocol",
    )
    u.add_argument("--samples", type=int, help="toxicity, gehman protocol: continuations per prompt")
    u.add_argument(
        "--limit", type=int, metavar="N", help="toxicity and bias: only the first N rows of each file"
    )
    u.add_argument(
        "--occupation-stats",
        metavar="TSV",
        help="bias: Winogender occupations-stats.tsv for the gotcha subset (as eval bias)",
    )
    u.set_defaults(func=run_suite, **_defaults(SuiteConfig))


def _models(pairs: list[str]) -> dict[str, str]:
    """--model NAME=DIR values as {NAME: DIR}."""
    from instructrl.errors import UserError

    out = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--model {p!r}: expected NAME=DIR, for example --model sft=runs/sft/final")
        out[name] = path
    return out


def _named(pairs: list[str]) -> dict[str, str]:
    """--model NAME=DIR values as {NAME: DIR}, each model resolved (a directory or a cached Hub id)."""
    from instructrl.evaluation.benchmarks.runs import check_models

    models = _models(pairs)
    check_models(models)  # a missing directory or uncached Hub id fails here, before any work
    return models


def _config(cls: type[Config], args: argparse.Namespace) -> Config:
    """A command's config from its flags: each field is the flag of its name (max_new_tokens:
    --max-new-tokens), `models` the --model NAME=DIR pairs."""
    flags = {name: getattr(args, name) for name in cls.model_fields if name != "models"}
    return cls(models=_models(args.model), **flags)


def _defaults(cls: type[BaseModel]) -> dict[str, Any]:
    """A config's defaults as its command's parser takes them (a list for a tuple: argparse appends to it)."""
    out = {}
    for name, field in cls.model_fields.items():
        if not field.is_required():
            out[name] = list(field.default) if isinstance(field.default, tuple) else field.default
    return out


def run_benchmark(args: argparse.Namespace) -> int:
    """`eval truthfulqa`, `toxicity`, `bias` and `tax`: the benchmark's config from the flags, run as the
    suite runs it."""
    from instructrl.evaluation.benchmarks.registry import BENCHMARKS

    benchmark = BENCHMARKS[args.eval_command]
    benchmark(_config(benchmark.config, args))
    return 0


def run_suite(args: argparse.Namespace) -> int:
    """`eval suite`: its config from the flags; each benchmark then runs in this process (`suite.run_suite`)."""
    from instructrl.evaluation.benchmarks import suite

    suite.run_suite(_config(suite.SuiteConfig, args))
    return 0


def run_answers(args) -> int:
    from instructrl.evaluation.answers import AnswersEval, write_answers

    config = AnswersEval(
        models=_named(args.model), prompts=args.prompts, out=args.out, baseline=args.baseline, seed=args.seed,
        max_new_tokens=args.max_new_tokens, best_of=args.best_of, reward=args.reward,
    )  # fmt: skip
    print(json.dumps(write_answers(config)))
    return 0


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
