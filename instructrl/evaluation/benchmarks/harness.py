"""The alignment tax on lm-evaluation-harness's own tasks (Ouyang et al. 2022, sec. 4.2 and figs. 28-29).

The harness scores each model in-process, on the weights instructrl loads (fp32, as every evaluation here), with
the task's own prompts, few-shot sampling and metrics. Only the task's data source changes: the rows come
from local files in the layout of the task's Hugging Face dataset, so nothing is downloaded. Each item's
score comes back from the harness's log of samples, so `tax.tax_table` gives each model's metrics and its
paired difference to a baseline as it does for instructrl's own multiple-choice and QA files.

The paper's public NLP tasks that the harness has and can score offline are in TASKS. Left out: SQuADv2
(its metric is fetched from the Hub by `evaluate.load` at run time; SQuAD-style files go through
`eval tax --data`), CNN/DM (BERTScore downloads a model), QuAC and TL;DR (not in the harness).

Few-shot: the paper reports these tasks zero-shot (fig. 28) and few-shot (fig. 29). By default each task
gets the K of GPT-3's few-shot evaluation of it (Brown et al. 2020, arXiv:2005.14165, appendix H; SST-2,
which GPT-3 did not run, gets RTE's); `--num-fewshot` sets one K for every task, 0 for the zero-shot figure.
The examples come from the split the harness draws them from (a task's train split, WMT's validation split),
so that split's rows are a file of their own (`--fewshot`): examples drawn from the evaluated rows could
include the item itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructrl.errors import UserError, where
from instructrl.evaluation.benchmarks._results import METRICS, Metric, MetricSpec, metric_spec

STR, INT, TEXTS, OBJECT = "a string", "an integer", "a list of strings", "an object"

_CORPUS = (
    "of the greedy translations, cut at the first line break, against the references (sacrebleu, "
    "lm-evaluation-harness wmt14-fr-en): a score of the whole test set, not a mean over items, so its interval "
    "is +-1.96 of the harness's bootstrap standard error and a difference to the baseline is not paired."
)
METRICS["tax"].update({
    "drop/em": MetricSpec(
        "DROP (lm-evaluation-harness drop): share of greedy answers, cut at the first full stop, equal to a "
        "gold answer after DROP's normalisation (numbers, articles, punctuation).",
        (0.0, 1.0), "higher", unit="score", panel="scores on the tasks",
    ),
    "drop/f1": MetricSpec(
        "DROP (lm-evaluation-harness drop): mean bag-of-words F1 of the greedy answer, the best over the gold "
        "answers.",
        (0.0, 1.0), "higher", unit="score", panel="scores on the tasks",
    ),
    "*/bleu": MetricSpec("Corpus BLEU " + _CORPUS, (0.0, 100.0), "higher", unit="BLEU or chrF",
                         panel="translation: BLEU and chrF"),
    "*/chrf": MetricSpec("Corpus chrF " + _CORPUS, (0.0, 100.0), "higher", unit="BLEU or chrF",
                         panel="translation: BLEU and chrF"),
    "*/ter": MetricSpec("Corpus TER (edits per reference word, x100) " + _CORPUS, (0.0, math.inf), "lower",
                        unit="TER", panel="translation: TER"),
})  # fmt: skip


def _is(value: object, kind: str) -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == TEXTS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict)


def _drop_answers(row: dict[str, Any]) -> tuple[str, str] | None:
    """DROP's answer and validated answers as the harness's `drop/utils.py` reads them."""
    a, v = row["answer"], row["validated_answers"]
    date = ("day", "month", "year")
    if not (
        isinstance(a.get("number"), str)
        and _is(a.get("spans"), TEXTS)
        and isinstance(a.get("date"), dict)
        and all(isinstance(a["date"].get(k), str) for k in date)
    ):
        return "answer", '{"number": str, "date": {"day", "month", "year"}, "spans": [str]} expected'
    lists = [v.get(k) for k in ("number", "date", "spans")]
    if not (all(isinstance(x, list) for x in lists) and len({len(x) for x in lists}) == 1):
        return "validated_answers", '{"number": [], "date": [], "spans": []} of one length expected'
    return None


def _translation(row: dict[str, Any]) -> tuple[str, str] | None:
    t = row["translation"]
    if not (isinstance(t.get("fr"), str) and isinstance(t.get("en"), str)):
        return "translation", '{"fr": "...", "en": "..."} expected'
    return None


def _pronoun(row: dict[str, Any]) -> tuple[str, str] | None:
    if not 0 <= row["pronoun_loc"] < len(row["text"]) or len(row["options"]) != 2:
        return "pronoun_loc", "a character offset into 'text' with 2 'options' expected"
    return None


@dataclass(frozen=True)
class TaskSpec:
    yaml: str  # the task's config inside lm_eval/tasks/
    paper: str  # the paper's name for the task
    splits: tuple[str, str]  # (the split the harness evaluates, the split its few-shot examples come from)
    fields: dict[str, str]  # the columns of the task's Hub dataset that the harness reads: name -> JSON type
    shots: int  # few-shot examples by default: GPT-3's K for the task
    # multiple choice: how many answers `label` indexes
    choices: Callable[[dict[str, Any]], int] | None = None
    # more of a row's structure: None, or (field, problem)
    check: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None


TASKS: dict[str, TaskSpec] = {
    "hellaswag": TaskSpec(
        "hellaswag/hellaswag.yaml", "HellaSwag", ("validation", "train"),
        {"activity_label": STR, "ctx_a": STR, "ctx_b": STR, "endings": TEXTS, "label": STR},
        shots=20, choices=lambda r: len(r["endings"]),
    ),
    "rte": TaskSpec(
        "glue/rte/default.yaml", "RTE (GLUE)", ("validation", "train"),
        {"sentence1": STR, "sentence2": STR, "label": INT}, shots=32, choices=lambda r: 2,
    ),
    "sglue_rte": TaskSpec(
        "super_glue/rte/default.yaml", "RTE (SuperGLUE)", ("validation", "train"),
        {"premise": STR, "hypothesis": STR, "label": INT}, shots=32, choices=lambda r: 2,
    ),
    "sst2": TaskSpec(
        "glue/sst2/default.yaml", "SST-2 (not in GPT-3: RTE's K)", ("validation", "train"),
        {"sentence": STR, "label": INT}, shots=32, choices=lambda r: 2,
    ),
    "wsc": TaskSpec(
        "super_glue/wsc/default.yaml", "WSC (SuperGLUE)", ("validation", "train"),
        {"text": STR, "span1_text": STR, "span2_index": INT, "span2_text": STR, "label": INT},
        shots=32, choices=lambda r: 2,
    ),
    # only a test split: the harness draws the few-shot examples from the evaluated rows themselves
    "wsc273": TaskSpec(
        "wsc273/default.yaml", "Winograd (WSC273)", ("test", "test"),
        {"text": STR, "pronoun": STR, "pronoun_loc": INT, "options": TEXTS, "label": INT},
        shots=7, choices=lambda r: 2, check=_pronoun,
    ),
    "drop": TaskSpec(
        "drop/default.yaml", "DROP", ("validation", "train"),
        {"query_id": STR, "passage": STR, "question": STR, "answer": OBJECT, "validated_answers": OBJECT},
        shots=20, check=_drop_answers,
    ),
    # the harness has WMT14 Fr->En (GPT-3's), not the paper's WMT15
    "wmt14-fr-en": TaskSpec(
        "translation/wmt14_fr-en.yaml", "WMT14 Fr->En", ("test", "validation"),
        {"translation": OBJECT}, shots=64, check=_translation,
    ),
}  # fmt: skip


@dataclass
class HarnessTask:
    name: str  # the harness's task name, e.g. "hellaswag"
    file: Path  # the rows the harness evaluates
    lines: list[int]  # each row's line in `file` (its row number in a Parquet file)
    fewshot_file: Path | None  # the rows few-shot examples come from; None: none needed or the same rows
    fewshot_rows: int
    num_fewshot: int

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.name]


def parse_pairs(values: Sequence[str] | None, flag: str) -> dict[str, Path]:
    """--task / --fewshot NAME=FILE values as {NAME: FILE}; each NAME once."""
    out: dict[str, Path] = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{flag} {v!r}: expected NAME=FILE, for example {flag} hellaswag=val.jsonl")
        if name in out:
            raise UserError(f"{flag}: {name} is given twice ({out[name]} and {path})")
        out[name] = Path(path)
    return out


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) of a JSON Lines file (or a .json array, or .jsonl.gz), or (row number, row) of Parquet."""
    from instructrl.datasets.io import iter_json_lines

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix != ".parquet":
        yield from iter_json_lines(path)
        return
    import pyarrow
    import pyarrow.parquet

    try:
        rows = pyarrow.parquet.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    yield from enumerate(rows, start=1)


def check_rows(name: str, path: Path) -> list[int]:
    """The line of each row of `path`, after checking that each holds what the harness's task `name` reads."""
    spec = TASKS[name]
    lines = []
    for line, row in read_rows(path):
        for key, kind in spec.fields.items():
            if key not in row:
                raise UserError(
                    f"{where(path, line, key)}: missing; {spec.paper} rows hold {sorted(spec.fields)} "
                    f"(the layout of the harness's dataset for {name})"
                )
            if not _is(row[key], kind):
                raise UserError(f"{where(path, line, key)}: expected {kind}, got {row[key]!r}")
        if spec.choices is not None:
            n, label = spec.choices(row), row["label"]
            gold = int(label) if isinstance(label, int) or str(label).isdigit() else -1
            if not 0 <= gold < n:
                raise UserError(
                    f"{where(path, line, 'label')}: {label!r} is not the index of one of {n} choices"
                )
        problem = spec.check(row) if spec.check is not None else None
        if problem is not None:
            raise UserError(f"{where(path, line, problem[0])}: {problem[1]}")
        lines.append(line)
    if not lines:
        raise UserError(f"{path}: no rows found (the file is empty)")
    return lines


def read_harness_tasks(
    tasks: dict[str, Path], fewshot: dict[str, Path], num_fewshot: int | None
) -> list[HarnessTask]:
    """Each --task NAME=FILE checked row by row, with its few-shot file; every mistake a UserError."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise UserError(
            f"--task {unknown[0]}: not one of the harness tasks eval tax runs offline ({', '.join(TASKS)}); "
            "SQuAD-style and HellaSwag-style files of your own go through --data"
        )
    stray = sorted(set(fewshot) - set(tasks))
    if stray:
        raise UserError(f"--fewshot {stray[0]}: no --task {stray[0]}=FILE to give examples for")
    if num_fewshot is not None and num_fewshot < 0:
        raise UserError(f"--num-fewshot {num_fewshot}: must be 0 or more")
    out = []
    for name, path in tasks.items():
        spec = TASKS[name]
        k = spec.shots if num_fewshot is None else num_fewshot
        lines = check_rows(name, path)
        evaluated, shots_from = spec.splits
        fewshot_file = fewshot.get(name)
        if evaluated == shots_from:
            if fewshot_file is not None:
                raise UserError(
                    f"--fewshot {name}: the harness draws {name}'s examples from the evaluated rows (the task "
                    "has only a test split); leave --fewshot out"
                )
            pool = len(lines)
        elif fewshot_file is None:
            if k > 0:
                raise UserError(
                    f"--task {name}: {k}-shot needs the rows of {name}'s {shots_from} split, where the harness "
                    f"draws its examples: give --fewshot {name}=FILE, or --num-fewshot 0"
                )
            pool = 0
        elif fewshot_file.resolve() == path.resolve():
            raise UserError(
                f"--fewshot {name}: the file of --task {name} itself, so an item could be its own example; "
                f"give the rows of {name}'s {shots_from} split"
            )
        elif (fewshot_file.suffix == ".parquet") != (path.suffix == ".parquet"):
            raise UserError(f"--fewshot {name}: {fewshot_file} and {path} must both be Parquet or both JSON")
        else:
            pool = len(check_rows(name, fewshot_file))
        if k > pool:
            raise UserError(
                f"--task {name}: {k}-shot needs {k} example rows, {fewshot_file or path} has {pool}; "
                "give more rows or a smaller --num-fewshot"
            )
        out.append(HarnessTask(name, path, lines, fewshot_file, pool, k))
    return out


# ---- running the harness -----------------------------------------------------------------------------------
def _task_config(task: HarnessTask, cache: Path) -> dict[str, Any]:
    """The harness's config of the task with only its data source replaced: the splits it evaluates and draws
    examples from read the local files (JSON or Parquet), every other split is left out."""
    import lm_eval

    evaluated, shots_from = task.spec.splits
    files = {evaluated: str(task.file)}
    if task.fewshot_file is not None:
        files[shots_from] = str(task.fewshot_file)
    config: dict[str, Any] = {
        "include": str(Path(lm_eval.__file__).parent / "tasks" / task.spec.yaml),
        "task": task.name,
        "dataset_path": "parquet" if task.file.suffix == ".parquet" else "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files, "cache_dir": str(cache)},
        "num_fewshot": task.num_fewshot,
    }
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        split = _split_of(key, task.spec)
        config[key] = split if split in files else None
    return config


def _split_of(key: str, spec: TaskSpec) -> str | None:
    """The split the harness's config names under `key` (training_split, ...) for this task."""
    evaluated, shots_from = spec.splits
    if key == "fewshot_split":
        # the harness's configs name one only where it is not the training split (WMT: validation)
        return shots_from if shots_from not in ("train", evaluated) else None
    return {"training_split": "train", "validation_split": "validation", "test_split": "test"}[key]


@dataclass
class HarnessScores:
    """One model's scores on the harness's tasks."""

    per_item: dict[str, list[float]] = field(default_factory=dict)  # "{task}/{metric}": one score per row
    corpus: dict[str, Metric] = field(default_factory=dict)  # BLEU, TER, chrF: scores of the whole corpus
    stderr: dict[str, float] = field(default_factory=dict)  # the harness's bootstrap standard error of each
    samples: list[dict[str, Any]] = field(default_factory=list)  # per row: hashes, scores, the answer


@contextlib.contextmanager
def _quiet_harness() -> Iterator[None]:
    """The harness logs a warning per truncated request and per defaulted setting; keep its errors only."""
    log = logging.getLogger("lm_eval")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def harness_scores(
    models: dict[str, str], tasks: Sequence[HarnessTask], *, batch_size: int, device: str
) -> dict[str, HarnessScores]:
    """Each model's per-item and corpus scores on the tasks, by `lm_eval.simple_evaluate` on the model
    instructrl loads; the tasks are built (their files read by the harness) before any model runs."""
    try:
        import lm_eval
    except ImportError:
        raise UserError(
            "eval tax --task needs lm-evaluation-harness: pip install 'instructrl[harness]'"
        ) from None
    import datasets
    import yaml
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from instructrl.models.loading import load_causal_lm, load_tokenizer

    datasets.disable_progress_bars()
    out: dict[str, HarnessScores] = {}
    with tempfile.TemporaryDirectory(prefix="instructrl-harness-") as tmp, _quiet_harness():
        configs = Path(tmp) / "tasks"
        configs.mkdir()
        for t in tasks:
            (configs / f"{t.name}.yaml").write_text(yaml.safe_dump(_task_config(t, Path(tmp) / "datasets")))
        manager = TaskManager(include_path=str(configs), include_defaults=False)
        names = [t.name for t in tasks]
        built = _build_tasks(manager, tasks)
        for model_name, path in models.items():
            tokenizer, model = load_tokenizer(path), load_causal_lm(path, dropout=False).eval().to(device)
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            for t in tasks:
                gen = built[t.name].config.generation_kwargs or {}
                new_tokens = gen.get("max_gen_toks", lm.max_gen_toks)
                if built[t.name].OUTPUT_TYPE == "generate_until" and lm.max_length <= new_tokens:
                    raise UserError(
                        f"--task {t.name}: the harness generates up to {new_tokens} tokens, and {path} takes "
                        f"{lm.max_length} in all; evaluate {t.name} on a model with a longer context"
                    )
            result = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, log_samples=True)
            out[model_name] = _scores(result, tasks, built)
    return out


def _build_tasks(manager: Any, tasks: Sequence[HarnessTask]) -> dict[str, Any]:
    """The harness's Task objects: it reads the files here, so what it cannot read stops the run before any
    model does."""
    built = {}
    for t in tasks:
        # pyarrow's, datasets' or the task's own error on rows that the checks let through
        try:
            built[t.name] = manager.load([t.name])["tasks"][t.name]
        except Exception as e:
            files = ", ".join(str(f) for f in (t.file, t.fewshot_file) if f is not None)
            raise UserError(
                f"{files}: lm-evaluation-harness's {t.name} task could not read the rows: {e!r}"
            ) from None
        n = len(built[t.name].eval_docs)
        assert n == len(t.lines), (t.name, n, len(t.lines))
    return built


def _scores(result: dict[str, Any], tasks: Sequence[HarnessTask], built: dict[str, Any]) -> HarnessScores:
    """Per-item scores from the harness's log of samples (filter "none", in document order) for metrics it
    averages over items, which then agree with its reported means; the others (BLEU, TER, chrF) are scores
    of the whole corpus, kept with the harness's bootstrap standard error."""
    from lm_eval.api.metrics import mean as harness_mean

    scores = HarnessScores()
    for t in tasks:
        reported = result["results"][t.name]
        samples = sorted(
            (s for s in result["samples"][t.name] if s["filter"] == "none"), key=lambda s: s["doc_id"]
        )
        assert [s["doc_id"] for s in samples] == list(range(len(t.lines)))
        averaged = [m for m, agg in built[t.name].aggregation().items() if agg is harness_mean]
        for metric in built[t.name].aggregation():
            key, value = f"{t.name}/{metric}", reported[f"{metric},none"]
            if metric in averaged:
                per_item = [float(s[metric]) for s in samples]
                assert math.isclose(sum(per_item) / len(per_item), value, abs_tol=1e-9), (key, value)
                scores.per_item[key] = per_item
            else:
                se = reported.get(f"{metric}_stderr,none")
                se = float(se) if isinstance(se, int | float) else math.nan  # "N/A" for a single item
                low, high = metric_spec("tax", key)[1].range
                ci = (
                    [se, se]
                    if math.isnan(se)
                    else [max(low, value - 1.96 * se), min(high, value + 1.96 * se)]
                )
                scores.corpus[key] = {"value": value, "n": len(samples), "ci95": ci}
                scores.stderr[key] = se
        for s, line in zip(samples, t.lines, strict=True):
            row = {"task": t.name, "doc_id": s["doc_id"], "line": line}
            row |= {"doc_hash": s["doc_hash"], "prompt_hash": s["prompt_hash"]}
            row |= {m: float(s[m]) for m in averaged}
            if built[t.name].OUTPUT_TYPE == "generate_until":
                row["answer"] = s["filtered_resps"][0]
            scores.samples.append(row)
    return scores


def corpus_tax(scores: dict[str, HarnessScores], baseline: str) -> dict[str, dict[str, Metric]]:
    """Each other model's difference to the baseline in the corpus scores, with the interval
    +-1.96 sqrt(se^2 + se_baseline^2) from the harness's standard errors: unpaired, for lack of per-item
    scores."""
    base = scores[baseline]
    out: dict[str, dict[str, Metric]] = {}
    for name, s in scores.items():
        if name == baseline:
            continue
        out[name] = {}
        for key, m in s.corpus.items():
            difference = m["value"] - base.corpus[key]["value"]
            half = 1.96 * math.hypot(s.stderr[key], base.stderr[key])
            out[name][key] = {
                "value": difference,
                "n": m["n"],
                "ci95": [difference - half, difference + half],
            }
    return out
