"""Evaluation passes over trained models: responses for held-out prompts, language-model loss on
pretraining text (the alignment tax), reward-model accuracy on rankings. One process, batched."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from instructrl.datasets.records import Comparison
from instructrl.datasets.tokenize import Prompt, pack_texts, tokenize_comparisons
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.generation import sample_responses
from instructrl.models.loading import context_window, load_causal_lm, load_reward_model, load_tokenizer
from instructrl.training.losses import batch_nll


def autocast(mixed_precision: str):
    if mixed_precision == "bf16":
        return torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def generate_answers(
    model_dir: str | Path,
    prompts: Sequence[Prompt],
    *,
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    prefix: str = "",
    batch_size: int = 64,
    mixed_precision: str = "no",
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """One sampled response per prompt, with the model's own chat template or prompt template (`prefix` goes
    before the prompt template, e.g. a few-shot prompt; a chat template has no place for it and ignores it).
    Sample i uses seed (seed, i) whatever the batching."""
    out = generate_answers_k(
        model_dir,
        prompts,
        1,
        seed=seed,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        prefix=prefix,
        batch_size=batch_size,
        mixed_precision=mixed_precision,
        progress=progress,
    )
    return [o[0] for o in out]


def generate_answers_k(
    model_dir: str | Path,
    prompts: Sequence[Prompt],
    k: int,
    *,
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    prefix: str = "",
    batch_size: int = 64,
    mixed_precision: str = "no",
    progress: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """k sampled responses per prompt; sample j of prompt i uses seed (seed, i, j) whatever the batching."""
    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir, dropout=False).eval()
    template = prefix + CheckpointMeta.read(model_dir).prompt_template
    with autocast(mixed_precision):
        return sample_responses(
            model,
            tok,
            list(prompts),
            k=k,
            max_new_tokens=max_new_tokens,
            seed=seed,
            temperature=temperature,
            batch_size=batch_size,
            prompt_template=template,
            progress=progress,
        )


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
def score_responses(
    reward_dir: str | Path,
    prompts: Sequence[Prompt],
    responses: Sequence[Sequence[str]],
    batch_size: int = 64,
    mixed_precision: str = "no",
) -> list[list[float]]:
    """r(x, y) for every response of every prompt, as texts (any policy's answers; the reward model reads
    them with its own tokenizer and prompt template). Sequences longer than its context keep their end
    cut off, as in RM training."""
    from instructrl.datasets.tokenize import pad_right, prompt_ids, response_ids
    from instructrl.models.scoring import score

    tok, model = load_tokenizer(reward_dir), load_reward_model(reward_dir).eval()
    template = CheckpointMeta.read(reward_dir).prompt_template
    window = context_window(reward_dir) or 512
    seqs = []
    for p, rs in zip(prompts, responses, strict=True):
        q = prompt_ids(tok, p, template)
        seqs += [(q + response_ids(tok, r, p))[:window] for r in rs]
    flat: list[float] = []
    for s in range(0, len(seqs), batch_size):
        with autocast(mixed_precision):
            flat += score(model, *pad_right(seqs[s : s + batch_size], tok.pad_token_id)).float().tolist()
    out, i = [], 0
    for rs in responses:
        out.append(flat[i : i + len(rs)])
        i += len(rs)
    return out


def rm_scores(
    model_dir: str | Path, comparisons: Sequence[Comparison], batch_size: int = 64
) -> list[list[float]]:
    """The reward model's score of every response of every comparison."""
    return score_responses(
        model_dir, [c.prompt for c in comparisons], [c.responses for c in comparisons], batch_size
    )


def best_of_n(
    model_dir: str | Path,
    reward_dir: str | Path,
    prompts: Sequence[Prompt],
    n: int,
    *,
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    batch_size: int = 64,
    mixed_precision: str = "no",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[str], list[float]]:
    """Best-of-N: N samples per prompt, answered with the one the reward model scores highest (and that
    score). The cheapest use of a reward model, and PPO's yardstick: its KL to the sampling policy is at
    most log N - (N - 1)/N (Stiennon et al. 2020, Gao et al. 2022). Sample j of prompt i uses seed
    (seed, i, j), so sample 0 is what `generate_answers` gives with the same seed (in fp32; under bf16 autocast
    a batch of another shape may round a logit the other way: instructrl.models.generation)."""
    candidates = generate_answers_k(
        model_dir,
        prompts,
        n,
        seed=seed,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
        mixed_precision=mixed_precision,
        progress=progress,
    )
    scores = score_responses(reward_dir, prompts, candidates, mixed_precision=mixed_precision)
    best = [max(range(n), key=lambda j: sc[j]) for sc in scores]
    return [c[j] for c, j in zip(candidates, best, strict=True)], [
        sc[j] for sc, j in zip(scores, best, strict=True)
    ]


def best_of_n_kl(n: int) -> float:
    """The KL (nats) of best-of-n to the policy it samples from, as Gao et al. 2022 plot it: log n - (n - 1)/n."""
    return math.log(n) - (n - 1) / n


@torch.no_grad()
def rm_accuracy(model_dir: str | Path, comparisons: Sequence[Comparison], batch_size: int = 16) -> float:
    """Share of ranked pairs the reward model orders like the labelers."""
    from instructrl.training.losses import rank_forward

    tok, model = load_tokenizer(model_dir), load_reward_model(model_dir).eval()
    template = CheckpointMeta.read(model_dir).prompt_template
    examples, _ = tokenize_comparisons(comparisons, tok, template, context_window(model_dir) or 512, "skip")
    correct = pairs = 0
    for s in range(0, len(examples), batch_size):
        _, c, p = rank_forward(model, examples[s : s + batch_size], tok.pad_token_id, torch.device("cpu"))
        correct, pairs = correct + c, pairs + p
    return correct / max(pairs, 1)
