"""Each public benchmark as `instructrl eval NAME` and `instructrl eval suite` run it: a typed config whose
fields are the command's flags (`max_new_tokens`: --max-new-tokens), `load_NAME` (checks the config and reads
and checks every input, so a user's mistake stops the run before any model does, with nothing written) and
`run_NAME` (every model in turn, with a progress bar; writes OUT/ and returns what it measured).
`registry.BENCHMARKS` names them; the commands build their config from their flags, the suite from its own.

Heavy imports (torch, the benchmark modules) stay inside the functions: the commands' parsers read the
configs' defaults when `instructrl` starts."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from instructrl.evaluation.benchmarks._results import BenchmarkResult

if TYPE_CHECKING:
    from instructrl.evaluation.benchmarks.bias import CrowsPair, WinogenderSentence
    from instructrl.evaluation.benchmarks.harness import HarnessTask
    from instructrl.evaluation.benchmarks.tax import Task
    from instructrl.evaluation.benchmarks.toxicity import RTPPrompt, ToxicityConfig
    from instructrl.evaluation.benchmarks.truthfulqa import Question

Setting = Literal["none", "respectful", "biased"]
"""an instruction put before the text (keys of `_results.INSTRUCTIONS`)"""
PromptFormat = Literal["model", "raw"]


class BenchmarkConfig(BaseModel):
    """What every benchmark's config holds: the models and where the results go."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    models: dict[str, str]
    """NAME -> a model folder or a Hub id ORG/NAME[@REVISION], in the order they run (--model NAME=DIR)"""
    out: Path
    """the output folder: results.json, per_item.json and the benchmark's own files"""


# ---- TruthfulQA ---------------------------------------------------------------------------------------------
class TruthfulQAEval(BenchmarkConfig):
    """`instructrl eval truthfulqa`: MC1, MC2 and the truthfulness of greedy answers."""

    data: str
    """TruthfulQA.csv (2021 or 2025), the Hugging Face multiple_choice or generation layout (JSONL, Parquet), or
    a Hub dataset ORG/NAME[@REVISION][:FILE] in the local cache"""
    judge: str | None = None
    """a sequence classifier judging truthfulness (None: ROUGE-L to the references)"""
    info_judge: str | None = None
    """a sequence classifier judging informativeness (None: not judged)"""
    no_generation: bool = False
    """MC1 and MC2 only, no greedy answers"""
    max_new_tokens: int = 50
    """longest greedy answer, in tokens"""
    batch_size: int = 16


def load_truthfulqa(config: TruthfulQAEval) -> list[Question]:
    from instructrl.evaluation.benchmarks.truthfulqa import read_truthfulqa

    check_models(config.models)
    return read_truthfulqa(config.data)


def run_truthfulqa(config: TruthfulQAEval, questions: list[Question]) -> BenchmarkResult:
    from instructrl.datasets.io import write_jsonl
    from instructrl.evaluation.benchmarks._results import format_table
    from instructrl.evaluation.benchmarks.truthfulqa import (
        PROMPT_SETTINGS,
        ClassifierJudge,
        ReferenceJudge,
        evaluate_truthfulqa,
        truthfulqa_files,
    )

    judge = ClassifierJudge(config.judge) if config.judge else ReferenceJudge()
    info_judge = ClassifierJudge(config.info_judge) if config.info_judge else None
    results, rows = {}, []
    for name, path in config.models.items():
        with progress_bar(0, f"truthfulqa: {name}", unit="step") as bar:  # MC requests, then answers
            results[name], answers = evaluate_truthfulqa(
                path, questions, judge=judge, info_judge=info_judge, generation=not config.no_generation,
                max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                progress=ticker(bar, set_total=True),
            )  # fmt: skip
        rows += [
            {"model": name, "setting": setting, "question": q.question, "answer": a}
            for setting, ans in answers.items()
            for q, a in zip(questions, ans, strict=True)
        ]
    settings = {
        "data": str(config.data),
        "data_files": [str(f) for f in truthfulqa_files(config.data)],
        "questions": len(questions),
        "mc": "lm-evaluation-harness truthfulqa_mc1 / truthfulqa_mc2: six-shot QA prompt, ' ' + choice",
        "generation": None
        if config.no_generation
        else {
            "prompts": {k: v + "{QA prompt}" for k, v in PROMPT_SETTINGS.items()},
            "decoding": "greedy, cut at the first line break",
            "max_new_tokens": config.max_new_tokens,
            "judge": config.judge
            or "ROUGE-L on content words (closer to a correct than an incorrect reference)",
            "info_judge": config.info_judge,
        },
        "ci95": "MC2: percentile bootstrap; shares (MC1, truthful, no_comment, ...): Wilson",
        "models": dict(config.models),
    }
    result = BenchmarkResult("truthfulqa", results, settings)
    out = result.write(config.out)
    if rows:
        write_jsonl(config.out / "answers.jsonl", rows)
    print(format_table(results))
    print(f"wrote {out}")
    return result


# ---- RealToxicityPrompts ------------------------------------------------------------------------------------
class ToxicityEval(BenchmarkConfig):
    """`instructrl eval toxicity`: RealToxicityPrompts under InstructGPT's protocol or Gehman et al.'s."""

    data: tuple[str, ...]
    """RealToxicityPrompts JSONL or Parquet files, or a Hub dataset in the local cache"""
    protocol: Literal["gehman", "instructgpt"]
    """gehman: N sampled continuations per prompt, expected maximum toxicity and toxicity probability;
    instructgpt: the paper's, one greedy continuation per prompt of a sample uniform across prompt toxicity,
    mean toxicity (`toxicity.PROTOCOLS`). No default: the two measure different things"""
    samples: int | None = None
    """gehman: continuations per prompt (None: 25)"""
    max_new_tokens: int = 20
    temperature: float | None = None
    """gehman: sampling temperature (None: 1.0)"""
    top_p: float | None = None
    """gehman: nucleus sampling (None: 0.9)"""
    per_bin: int | None = None
    """instructgpt: prompts drawn from each 0.1-wide bin of prompt toxicity (None: as many as the smallest
    non-empty bin holds)"""
    seed: int = 0
    batch_size: int = 64
    limit: int | None = None
    """only the first N prompts of each file"""
    settings: tuple[Setting, ...] = ("none", "respectful", "biased")
    prompt_format: PromptFormat = "model"
    """model: the checkpoint's saved prompt template; raw: the text alone"""
    classifier: str | None = None
    """a Hugging Face sequence classifier scoring toxicity (None: alt-profanity-check, offline)"""
    toxic_label: str | None = None
    """the classifier's toxic label, if not 'toxic'"""

    def decoding(self) -> ToxicityConfig:
        """The decoding `toxicity.evaluate_model` runs: the protocol's, with the sampling flags given."""
        from instructrl.evaluation.benchmarks.toxicity import ToxicityConfig

        common: dict[str, Any] = dict(
            max_new_tokens=self.max_new_tokens, seed=self.seed, batch_size=self.batch_size,
            settings=tuple(self.settings), prompt_format=self.prompt_format,
        )  # fmt: skip
        if self.protocol == "instructgpt":
            return ToxicityConfig.instructgpt(per_bin=self.per_bin, **common)
        given = {f: getattr(self, f) for f in ("samples", "temperature", "top_p")}
        return ToxicityConfig(**{f: v for f, v in given.items() if v is not None}, **common)


@dataclass(frozen=True)
class RTPSample:
    """The prompts a toxicity run scores: every prompt read, or the instructgpt protocol's sample of them."""

    prompts: list[RTPPrompt]
    bins: dict[str, dict[str, int]] | None
    """instructgpt: {bin: {"available", "sampled"}} for every bin of prompt toxicity"""


def load_toxicity(config: ToxicityEval) -> RTPSample:
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks import toxicity as tx

    check_positive(samples=config.samples, max_new_tokens=config.max_new_tokens, limit=config.limit,
                   batch_size=config.batch_size, per_bin=config.per_bin)  # fmt: skip
    instructgpt = config.protocol == "instructgpt"
    wrong = ("samples", "temperature", "top_p") if instructgpt else ("per_bin",)
    given = [f"--{f.replace('_', '-')}" for f in wrong if getattr(config, f) is not None]
    if given:
        raise UserError(
            f"{' '.join(given)}: not part of --protocol {config.protocol}: "
            + (
                "the InstructGPT protocol decodes greedily, one continuation per prompt; use --protocol gehman "
                "to sample"
                if instructgpt
                else "only --protocol instructgpt samples prompts by bin of prompt toxicity"
            )
        )
    check_models(config.models)
    prompts = tx.read_rtp(config.data, config.limit)
    if not instructgpt:
        return RTPSample(prompts, None)
    return RTPSample(*tx.stratified_sample(prompts, config.per_bin, config.seed))


def run_toxicity(config: ToxicityEval, sample: RTPSample) -> BenchmarkResult:
    from instructrl import __version__
    from instructrl.datasets.io import write_jsonl
    from instructrl.evaluation.benchmarks import toxicity as tx
    from instructrl.evaluation.benchmarks._results import INSTRUCTIONS, format_table

    decoding = config.decoding()
    prompts, bins = sample.prompts, sample.bins
    scorer = (
        tx.ClassifierScorer(config.classifier, config.toxic_label)
        if config.classifier
        else tx.ProfanityCheckScorer()
    )
    results, samples = {}, []
    for name, path in config.models.items():
        total = len(prompts) * decoding.samples * len(decoding.settings)
        with progress_bar(total, f"toxicity: {name}", "sample") as bar:
            results[name], rows = tx.evaluate_model(path, prompts, scorer, decoding, progress=ticker(bar))
        samples += [{"model": name, **r} for r in rows]
    settings = {
        **{k: getattr(decoding, k) for k in decoding.__dataclass_fields__},
        "protocol_description": tx.PROTOCOLS[decoding.protocol],
        "decoding": "greedy (temperature 0), cut at the first line break"
        if decoding.protocol == "instructgpt"
        else f"sampled: temperature {decoding.temperature}, top-p {decoding.top_p}",
        "settings": list(decoding.settings),
        "instructions": {k: INSTRUCTIONS[k] for k in decoding.settings},
        "scorer": scorer.name,
        "threshold": tx.TOXIC,
        "data": [str(p) for p in config.data],
        "data_files": [str(f) for f in tx.rtp_files(config.data)],
        "prompts": {"toxic": sum(p.toxic for p in prompts), "nontoxic": sum(not p.toxic for p in prompts)},
        **({"prompt_bins": bins} if bins is not None else {}),
        "caveats": tx.caveats(
            default_scorer=not config.classifier,
            scorer_name=scorer.name,
            protocol=decoding.protocol,
            bins=bins,
        ),
        "models": dict(config.models),
        "instructrl": __version__,
    }
    result = BenchmarkResult("toxicity", results, settings)
    out = result.write(config.out)
    write_jsonl(config.out / "samples.jsonl", samples)
    print(format_table(results))
    print(f"wrote {out}")
    return result


# ---- CrowS-Pairs and Winogender -----------------------------------------------------------------------------
class BiasEval(BenchmarkConfig):
    """`instructrl eval bias`: CrowS-Pairs and Winogender, lm-evaluation-harness's metrics and the paper's
    entropy."""

    data: tuple[str, ...]
    """crows_pairs_anonymized.csv and/or Winogender all_sentences.tsv (told apart by their header), or the same
    as Parquet, or a Hub dataset in the local cache"""
    limit: int | None = None
    """only the first N rows of each file"""
    occupation_stats: str | None = None
    """Winogender's occupations-stats.tsv for the gotcha subset (None: next to all_sentences.tsv, if there)"""
    settings: tuple[Setting, ...] = ("none", "respectful")
    prompt_format: PromptFormat = "model"
    batch_size: int = 32


@dataclass(frozen=True)
class BiasData:
    """The rows a bias run scores, and what became of Winogender's gotcha subset."""

    crows: list[CrowsPair]
    winogender: list[WinogenderSentence]
    files: list[str]
    """every data file read, a Hub dataset's by their paths in the cache"""
    occupation_stats: str | None
    """the occupations-stats.tsv the gotcha subset came from, or would have"""
    gotcha: list[bool] | None
    """per Winogender sentence: in the gotcha subset (None: not computed)"""
    gotcha_note: dict[str, Any] | None
    """results.json's settings.winogender_gotcha (None: no Winogender rows)"""


def load_bias(config: BiasEval) -> BiasData:
    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks import bias as bs

    check_positive(limit=config.limit, batch_size=config.batch_size)
    check_models(config.models)
    crows: list[CrowsPair] = []
    wino: list[WinogenderSentence] = []
    stats_path, files = None, []
    for f in (f for spec in config.data for f in bs.bias_files(spec)):  # a Hub id may name several files
        files.append(str(f))
        if bs.detect(f) == "crows":
            crows += bs.read_crows(f, config.limit)
        else:
            wino += bs.read_winogender(f, config.limit)
            stats_path = config.occupation_stats or str(f.parent / "occupations-stats.tsv")
    gotcha, gotcha_note = None, None
    if wino and stats_path is not None and (config.occupation_stats or Path(stats_path).is_file()):
        stats = bs.read_occupation_stats(stats_path)
        unknown = sorted({w.occupation for w in wino} - set(stats))
        if unknown:
            raise UserError(f"{stats_path}: no bls_pct_female for occupation(s) {unknown}")
        gotcha = [bs.is_gotcha(w, stats[w.occupation]) for w in wino]
        gotcha_note = {"computed": True, "n": sum(gotcha), "occupation_stats": stats_path}
    elif wino:
        why = f"no {stats_path}: the gotcha subset needs Winogender's occupations-stats.tsv (give --occupation-stats)"
        gotcha_note = {"computed": False, "n": None, "occupation_stats": None, "why_not": why}
    return BiasData(crows, wino, files, stats_path, gotcha, gotcha_note)


def run_bias(config: BiasEval, data: BiasData) -> BenchmarkResult:
    from instructrl import __version__
    from instructrl.evaluation.benchmarks import bias as bs
    from instructrl.evaluation.benchmarks._results import INSTRUCTIONS, format_table

    if data.gotcha_note is not None and not data.gotcha_note["computed"]:
        print(f"{data.gotcha_note['why_not']}; Winogender's gotcha subset is left out")
    results = {}
    for name, path in config.models.items():
        with progress_bar(0, f"bias: {name}", unit="request") as bar:
            results[name] = bs.evaluate_model(
                path, data.crows, data.winogender, data.gotcha, settings=config.settings,
                prompt_format=config.prompt_format, batch_size=config.batch_size,
                progress=ticker(bar, set_total=True),
            )  # fmt: skip
    settings = {
        "settings": list(config.settings),
        "instructions": {k: INSTRUCTIONS[k] for k in config.settings},
        "prompt_format": config.prompt_format,
        "data": [str(p) for p in config.data],
        "data_files": data.files,
        "occupation_stats": data.occupation_stats if data.gotcha is not None else None,
        "rows": {"crows_pairs": len(data.crows), "winogender": len(data.winogender)},
        "winogender_gotcha": data.gotcha_note,
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
        "models": dict(config.models),
        "instructrl": __version__,
    }
    result = BenchmarkResult("bias", results, settings)
    out = result.write(config.out)
    print(format_table(results))
    print(f"wrote {out}")
    return result


# ---- the alignment tax --------------------------------------------------------------------------------------
class TaxEval(BenchmarkConfig):
    """`instructrl eval tax`: scores on NLP tasks, and each model's difference to a baseline model."""

    data: tuple[str, ...] = ()
    """JSONL files: {ctx, endings, label} (multiple choice) or {context, question, answers} (QA)"""
    task: tuple[str, ...] = ()
    """TASK=FILE: an lm-evaluation-harness task on local rows in its dataset's layout (--task, repeated)"""
    fewshot: tuple[str, ...] = ()
    """TASK=FILE: the rows a task's few-shot examples come from (--fewshot, repeated)"""
    num_fewshot: int | None = None
    """few-shot examples for every task (None: GPT-3's K per task)"""
    baseline: str
    """the model every other is compared with, item by item: the alignment tax"""
    max_new_tokens: int = 32
    """QA files: longest greedy answer, in tokens"""
    batch_size: int = 16
    device: Literal["cpu", "cuda"] | None = None
    """where the harness tasks run (None: cuda when there is one)"""


@dataclass(frozen=True)
class TaxTasks:
    """The tasks a tax run scores, every file read and checked."""

    own: list[Task]
    """--data files: multiple choice or QA"""
    harness: list[HarnessTask]
    """--task files: lm-evaluation-harness tasks"""
    device: str
    """where the harness tasks run"""


def load_tax(config: TaxEval) -> TaxTasks:
    import torch

    from instructrl.errors import UserError
    from instructrl.evaluation.benchmarks import harness
    from instructrl.evaluation.benchmarks.tax import read_task

    check_positive(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    check_models(config.models)
    if config.baseline not in config.models:
        raise UserError(
            f"--baseline {config.baseline!r} is not one of the --model names {sorted(config.models)}"
        )
    if not config.data and not config.task:
        raise UserError(
            "eval tax: give lm-evaluation-harness tasks (--task TASK=FILE) and/or your own multiple-choice "
            "and QA files (--data FILE)"
        )
    tasks = [read_task(p) for p in config.data]
    harness_tasks = harness.read_harness_tasks(
        harness.parse_pairs(config.task, "--task"),
        harness.parse_pairs(config.fewshot, "--fewshot"),
        config.num_fewshot,
    )
    names = [t.name for t in tasks] + [t.name for t in harness_tasks]
    if len(set(names)) != len(names):
        raise UserError(
            f"two tasks share a name ({names}); a --data task is named after its file: rename the file"
        )
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA device; use --device cpu")
    return TaxTasks(tasks, harness_tasks, device)


def run_tax(config: TaxEval, tasks: TaxTasks) -> BenchmarkResult:
    from instructrl.datasets.io import write_jsonl
    from instructrl.evaluation.benchmarks import harness
    from instructrl.evaluation.benchmarks._results import format_table
    from instructrl.evaluation.benchmarks.tax import QA_TEMPLATE, task_scores, tax_table

    models, baseline = config.models, config.baseline
    per_item: dict[str, dict[str, list[float]]] = {name: {} for name in models}
    by_model: dict[str, harness.HarnessScores] = {}
    samples, rows = [], []
    if tasks.harness:
        by_model = harness.harness_scores(
            models, tasks.harness, batch_size=config.batch_size, device=tasks.device
        )
        for name, h in by_model.items():
            per_item[name].update(h.per_item)
            samples += [{"model": name, **r} for r in h.samples]
    for name, path in models.items():
        if tasks.own:
            own, answers = task_scores(
                path, tasks.own, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size
            )
            per_item[name].update(own)
            rows += [{"model": name, **a} for a in answers]
    scores, tax = tax_table(per_item, baseline)
    for name, h in by_model.items():  # BLEU, TER, chrF: scores of the whole corpus, no per-item scores
        scores[name].update(h.corpus)
    for name, differences in (harness.corpus_tax(by_model, baseline) if by_model else {}).items():
        tax[name].update(differences)
    settings: dict[str, Any] = {
        "baseline": baseline,
        "tasks": {
            t.name: {"file": str(p), "kind": t.kind, "items": len(t.items)}
            for t, p in zip(tasks.own, config.data, strict=True)
        },
        "multiple_choice": "acc and acc_norm (log-likelihood / characters of the ending), as lm-evaluation-harness",
        "qa": {
            "prompt": QA_TEMPLATE,
            "decoding": "greedy, cut at the first line break",
            "max_new_tokens": config.max_new_tokens,
            "metrics": "SQuAD v1.1 token F1 and exact match, best over the gold answers",
        },
        "tax": "mean per-item difference to the baseline with a paired 95% interval (0/1 scores: Newcombe's; "
        "F1: a bootstrap of the differences)",
        "ci95": "F1: percentile bootstrap; acc, acc_norm, em: Wilson",
        "models": dict(models),
    }
    if tasks.harness:
        from importlib.metadata import version

        settings["harness"] = {
            "lm_eval": version("lm_eval"),
            "scoring": "lm-evaluation-harness's own task configs, prompts, few-shot sampling and metrics, "
            "run in-process (lm_eval.simple_evaluate, its default seeds) on the weights instructrl loads "
            "(float32); only the data source is replaced, by the local files",
            "device": tasks.device,
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
                for t in tasks.harness
            },
            "corpus_metrics": "bleu, ter (lower is better), chrf: the harness's corpus scores, +-1.96 of its "
            "bootstrap standard error; their tax is the difference, +-1.96 sqrt(se^2 + se_baseline^2) (unpaired: "
            "no per-item scores)",
        }
    result = BenchmarkResult("tax", scores, settings, extra={"tax": tax})
    out = result.write(config.out)
    if rows:
        write_jsonl(config.out / "answers.jsonl", rows)
    if samples:
        write_jsonl(config.out / "samples.jsonl", samples)
    print(format_table(scores))
    if tax:
        print(f"\nalignment tax: difference to {baseline} (negative = worse)")
        print(format_table(tax))
    print(f"wrote {out}")
    return result


# ---- what the benchmarks share ------------------------------------------------------------------------------
def check_models(models: dict[str, str]) -> None:
    """Every model is a folder or a cached Hub id: a missing one fails here, before any work."""
    from instructrl.models.loading import resolve_model

    for path in models.values():
        resolve_model(path)


def check_positive(**values: int | None) -> None:
    """Counts given as flags (keyword: the flag's name) are 1 or more."""
    from instructrl.errors import UserError

    for flag, v in values.items():
        if v is not None and v < 1:
            raise UserError(f"--{flag.replace('_', '-')} {v}: must be 1 or more")


REPEATED = ("task", "fewshot")
"""fields whose flag is given once per value (--task A=F --task B=G); other sequences take their values after
one flag (--data F G)"""


def flags(config: BaseModel) -> list[str]:
    """The flags of `instructrl eval NAME` that give this config: every required field, and every other that is
    not at its default, in the order of the fields."""
    out: list[str] = []
    for name, spec in type(config).model_fields.items():
        value = getattr(config, name)
        if not spec.is_required() and value == spec.default:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "models":
            out += [a for model, path in value.items() for a in ("--model", f"{model}={path}")]
        elif isinstance(value, bool):
            out.append(flag)  # a store_true flag, whose default is False
        elif name in REPEATED:
            out += [a for v in value for a in (flag, str(v))]
        elif isinstance(value, tuple):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def command_line(benchmark: str, config: BaseModel) -> str:
    """The command that runs this config: `instructrl eval NAME --model ... --out ...`."""
    return shlex.join(["instructrl", "eval", benchmark, *flags(config)])


def progress_bar(total: int, desc: str, unit: str = "answer"):
    # looked up when called: tests swap runtime.progress_bar for one they can read
    from instructrl.training.runtime import progress_bar

    return progress_bar(total, desc, unit=unit)


def ticker(bar, set_total: bool = False):
    """A `progress(done, total)` callback that moves the bar to `done`."""

    def tick(done: int, total: int) -> None:
        if set_total:
            bar.total = total  # the number of log-likelihood requests is known only inside the evaluation
        bar.update(done - bar.n)

    return tick
