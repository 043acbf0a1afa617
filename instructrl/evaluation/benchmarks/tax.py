"""The alignment tax on public NLP tasks (Ouyang et al. 2022, sec. 4.2 and fig. 29): each model's score on
files the user supplies, and its difference to a baseline model on the same items.

- Multiple choice, HellaSwag-style JSONL `{ctx, endings, label}` (or the raw HellaSwag fields `ctx_a`,
  `ctx_b`, `activity_label`): the ending with the highest log-likelihood after the context; `acc` and
  `acc_norm` (log-likelihood divided by the ending's length in characters) as lm-evaluation-harness
  computes them, with its HellaSwag preprocessing.
- Extractive QA, SQuAD-style JSONL `{context, question, answers}` (`answers` a list of strings or
  SQuAD's `{"text": [...], "answer_start": [...]}`): a greedy answer after
  "{context}\\n\\nQuestion: {question}\\nAnswer:", scored by SQuAD's token F1 and exact match (after
  SQuAD's normalisation: lower case, no punctuation, no articles a/an/the, single spaces), the best over
  the gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from instructrl.errors import UserError, where
from instructrl.evaluation.benchmarks._results import Metric, mean, paired_difference, proportion
from instructrl.evaluation.benchmarks.common import choice_loglikelihoods, greedy_answers

QA_TEMPLATE = "{context}\n\nQuestion: {question}\nAnswer:"


@dataclass
class ChoiceItem:
    context: str
    endings: list[str]
    label: int


@dataclass
class QAItem:
    context: str
    question: str
    answers: list[str]


@dataclass
class Task:
    name: str  # the file's name without its extension
    kind: str  # "choice" or "qa"
    items: list[ChoiceItem] | list[QAItem]


# ---- reading -----------------------------------------------------------------------------------------------
def hellaswag_preprocess(text: str) -> str:
    """lm-evaluation-harness's HellaSwag clean-up: WikiHow's bracketed markers out, double spaces single."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _choice_item(path: Path, line: int, obj: dict[str, Any]) -> ChoiceItem:
    if "ctx" in obj:
        ctx = obj["ctx"]
    elif "ctx_a" in obj and "ctx_b" in obj:
        ctx = f"{obj['ctx_a']} {str(obj['ctx_b']).capitalize()}"
    else:
        raise UserError(f"{where(path, line, 'ctx')}: missing (the context the endings continue)")
    if not isinstance(ctx, str) or not ctx.strip():
        raise UserError(f"{where(path, line, 'ctx')}: expected a non-empty string")
    if obj.get("activity_label"):
        ctx = f"{obj['activity_label']}: {ctx}"
    endings = obj.get("endings")
    if not (isinstance(endings, list) and len(endings) >= 2 and all(isinstance(e, str) for e in endings)):
        raise UserError(f"{where(path, line, 'endings')}: expected a list of 2 or more strings")
    label = obj.get("label")
    try:
        gold = int(label)  # type: ignore[arg-type]  # HellaSwag stores it as a string
    except (TypeError, ValueError):
        gold = -1
    if not 0 <= gold < len(endings) or isinstance(label, bool | float):
        raise UserError(
            f"{where(path, line, 'label')}: {label!r} is not the index of one of the {len(endings)} endings "
            f"(0..{len(endings) - 1})"
        )
    return ChoiceItem(hellaswag_preprocess(ctx), [hellaswag_preprocess(e) for e in endings], gold)


def _qa_item(path: Path, line: int, obj: dict[str, Any]) -> QAItem:
    for key in ("context", "question"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise UserError(f"{where(path, line, key)}: missing or not a non-empty string")
    answers = obj.get("answers")
    if isinstance(answers, dict):
        answers = answers.get("text")
    if not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
        raise UserError(
            f"{where(path, line, 'answers')}: expected a non-empty list of strings or "
            '{"text": [...], "answer_start": [...]} (unanswerable SQuAD 2.0 questions are not supported)'
        )
    return QAItem(obj["context"].strip(), obj["question"].strip(), answers)


def read_task(path: str | Path) -> Task:
    """A multiple-choice or extractive-QA file, told apart by its first record's fields."""
    from instructrl.datasets.io import iter_json_lines

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    items: list[Any] = []
    kind = ""
    for line, obj in iter_json_lines(path):
        if not kind:
            if "endings" in obj:
                kind = "choice"
            elif "answers" in obj:
                kind = "qa"
            else:
                raise UserError(
                    f"{where(path, line)}: neither a multiple-choice record ({{ctx, endings, label}}) nor a "
                    f"QA record ({{context, question, answers}}); it has fields {sorted(obj)}"
                )
        items.append(_choice_item(path, line, obj) if kind == "choice" else _qa_item(path, line, obj))
    if not items:
        raise UserError(f"{path}: no records found (the file is empty)")
    return Task(path.name.split(".")[0], kind, items)


# ---- SQuAD's metrics ---------------------------------------------------------------------------------------
def squad_normalize(text: str) -> str:
    """SQuAD v1.1's `normalize_answer`: lower case, punctuation and articles removed, spaces collapsed."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, gold: str) -> float:
    pred, ref = squad_normalize(prediction).split(), squad_normalize(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_exact(prediction: str, gold: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(gold))


# ---- scoring -----------------------------------------------------------------------------------------------
def choice_scores(
    model: torch.nn.Module, tokenizer, items: Sequence[ChoiceItem], batch_size: int = 16
) -> dict[str, list[float]]:
    """Per-item acc and acc_norm (0/1); ties go to the first ending, as numpy's argmax."""
    contexts = [it.context for it in items for _ in it.endings]
    continuations = [" " + e for it in items for e in it.endings]
    lls = choice_loglikelihoods(model, tokenizer, contexts, continuations, batch_size=batch_size)
    acc, acc_norm, i = [], [], 0
    for it in items:
        ll = lls[i : i + len(it.endings)]
        i += len(it.endings)
        norm = [x / max(len(e), 1) for x, e in zip(ll, it.endings, strict=True)]
        acc.append(float(_argmax(ll) == it.label))
        acc_norm.append(float(_argmax(norm) == it.label))
    return {"acc": acc, "acc_norm": acc_norm}


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def qa_scores(
    model: torch.nn.Module,
    tokenizer,
    items: Sequence[QAItem],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
) -> tuple[dict[str, list[float]], list[str]]:
    """Per-item SQuAD F1 and exact match of the greedy answers, and the answers."""
    prompts = [QA_TEMPLATE.format(context=it.context, question=it.question) for it in items]
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    f1 = [max(squad_f1(a, g) for g in it.answers) for a, it in zip(answers, items, strict=True)]
    em = [max(squad_exact(a, g) for g in it.answers) for a, it in zip(answers, items, strict=True)]
    return {"f1": f1, "em": em}, answers


def task_scores(
    model_dir: str | Path, tasks: Sequence[Task], *, max_new_tokens: int = 32, batch_size: int = 16
) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Per-item scores of one model on every task, keyed "{task}/{metric}", and its QA answers (one
    {task, question, answer, gold} per item)."""
    from instructrl.models.loading import load_causal_lm, load_tokenizer

    tokenizer, model = load_tokenizer(model_dir), load_causal_lm(model_dir, dropout=False).eval()
    scores: dict[str, list[float]] = {}
    answers: list[dict[str, Any]] = []
    for task in tasks:
        if task.kind == "choice":
            per = choice_scores(model, tokenizer, cast(list[ChoiceItem], task.items), batch_size)
        else:
            items = cast(list[QAItem], task.items)
            per, texts = qa_scores(
                model, tokenizer, items, max_new_tokens=max_new_tokens, batch_size=batch_size
            )
            answers += [
                {"task": task.name, "question": it.question, "answer": a, "gold": it.answers}
                for it, a in zip(items, texts, strict=True)
            ]
        scores.update({f"{task.name}/{k}": v for k, v in per.items()})
    return scores, answers


def tax_table(
    per_item: dict[str, dict[str, list[float]]], baseline: str
) -> tuple[dict[str, dict[str, Metric]], dict[str, dict[str, Metric]]]:
    """(each model's metrics, each other model's difference to the baseline), from per-item scores.

    F1 is a mean (normal interval), acc / acc_norm / em shares of 0/1 outcomes (Wilson interval). The
    difference is the mean of per-item differences with a paired normal interval: the models answered the
    same items, so item difficulty cancels and the interval is narrower than from two separate means.
    """

    def summarise(key: str, values: list[float]) -> Metric:
        return mean(values, bounds=(0.0, 1.0)) if key.endswith("/f1") else proportion(values)

    models = {name: {k: summarise(k, v) for k, v in scores.items()} for name, scores in per_item.items()}
    tax = {
        name: {k: paired_difference(v, per_item[baseline][k]) for k, v in scores.items()}
        for name, scores in per_item.items()
        if name != baseline
    }
    return models, tax
