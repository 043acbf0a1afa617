"""Evaluation passes over trained models: responses for held-out prompts, language-model loss on
pretraining text (the alignment tax), reward-model accuracy on rankings. One process, batched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from instructrl.datasets.records import Comparison
from instructrl.datasets.tokenize import pack_texts, tokenize_comparisons
from instructrl.models.generation import sample_responses
from instructrl.models.loading import (
    context_window,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    read_meta,
)
from instructrl.training.losses import batch_nll


def autocast(mixed_precision: str):
    if mixed_precision == "bf16":
        return torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def generate_answers(
    model_dir: str | Path,
    prompts: Sequence[str],
    *,
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    prefix: str = "",
    batch_size: int = 64,
    mixed_precision: str = "no",
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """One sampled response per prompt, with the model's own prompt template (`prefix` goes before the
    template, e.g. a few-shot prompt). Sample i uses seed (seed, i) whatever the batching."""
    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir, dropout=False).eval()
    template = prefix + read_meta(model_dir).get("prompt_template", "{prompt}\n")
    with autocast(mixed_precision):
        out = sample_responses(
            model,
            tok,
            [p for p in prompts],
            k=1,
            max_new_tokens=max_new_tokens,
            seed=seed,
            temperature=temperature,
            batch_size=batch_size,
            prompt_template=template,
            progress=progress,
        )
    return [o[0] for o in out]


@torch.no_grad()
def lm_loss(
    model_dir: str | Path,
    texts: Sequence[str],
    block_size: int | None = None,
    batch_size: int = 16,
    mixed_precision: str = "no",
) -> float:
    """Mean per-token negative log-likelihood (nats) of `texts`, packed into blocks."""
    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir, dropout=False).eval()
    block = block_size or min(512, context_window(model_dir) or 512)
    blocks = pack_texts(texts, tok, block)
    total, count = 0.0, 0
    for s in range(0, len(blocks), batch_size):
        with autocast(mixed_precision):
            nll, n = batch_nll(model, blocks[s : s + batch_size], tok.pad_token_id, torch.device("cpu"))
        total, count = total + nll.item(), count + n
    return total / max(count, 1)


@torch.no_grad()
def rm_scores(
    model_dir: str | Path, comparisons: Sequence[Comparison], batch_size: int = 16
) -> list[list[float]]:
    """The reward model's score of every response of every comparison (all K of a prompt in one batch)."""
    from instructrl.datasets.tokenize import pad_right
    from instructrl.models.scoring import score

    tok, model = load_tokenizer(model_dir), load_reward_model(model_dir).eval()
    template = read_meta(model_dir).get("prompt_template", "{prompt}\n")
    examples, _ = tokenize_comparisons(comparisons, tok, template, context_window(model_dir) or 512, "error")
    out: list[list[float]] = []
    for s in range(0, len(examples), batch_size):
        batch = examples[s : s + batch_size]
        ids, mask = pad_right([seq for e in batch for seq in e.sequences], tok.pad_token_id)
        flat = score(model, ids, mask).float().tolist()
        for e in batch:
            out.append(flat[: len(e.sequences)])
            flat = flat[len(e.sequences) :]
    return out


@torch.no_grad()
def rm_accuracy(model_dir: str | Path, comparisons: Sequence[Comparison], batch_size: int = 16) -> float:
    """Share of ranked pairs the reward model orders like the labelers."""
    from instructrl.training.losses import rank_forward

    tok, model = load_tokenizer(model_dir), load_reward_model(model_dir).eval()
    template = read_meta(model_dir).get("prompt_template", "{prompt}\n")
    examples, _ = tokenize_comparisons(comparisons, tok, template, context_window(model_dir) or 512, "skip")
    correct = pairs = 0
    for s in range(0, len(examples), batch_size):
        _, c, p = rank_forward(model, examples[s : s + batch_size], tok.pad_token_id, torch.device("cpu"))
        correct, pairs = correct + c, pairs + p
    return correct / max(pairs, 1)
