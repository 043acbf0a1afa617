"""What the public benchmarks share below their metrics: per-choice log-likelihoods in batched forward
passes, tokenized and truncated as lm-evaluation-harness does, and greedy answers. The results layout and
its intervals are `_results.py`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from instructrl.datasets.tokenize import pad_right
from instructrl.models.generation import generate, left_pad, response_mask
from instructrl.models.scoring import position_ids_from_mask, token_logprobs

# lm-evaluation-harness's fallback when neither the config nor the tokenizer gives a context length
DEFAULT_MAX_LENGTH = 2048


# ---- log-likelihoods of choices ----------------------------------------------------------------------------
def encode(tokenizer, text: str) -> list[int]:
    """Token ids with the tokenizer's own special tokens, as lm-evaluation-harness's `tok_encode` (a BOS
    for tokenizers that add one), unless the text already starts with the BOS string."""
    bos = tokenizer.bos_token
    add = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add).input_ids


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) the way lm-evaluation-harness splits them: trailing spaces of the
    context move to the continuation, and the continuation is what encoding the whole adds to the
    context's encoding, so BPE merges across the boundary are those of the whole text."""
    if not context:
        cont = tokenizer(continuation, add_special_tokens=False).input_ids
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return ([prefix], cont) if not cont or cont[0] != prefix else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context)
    return ctx, whole[len(ctx) :]


def max_length(model: torch.nn.Module, tokenizer=None) -> int:
    """The longest input the model takes, looked up as lm-evaluation-harness does."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < 1e29:  # transformers' "no limit" is int(1e30)
        return int(limit)
    return DEFAULT_MAX_LENGTH


@torch.no_grad()
def choice_loglikelihoods(
    model: torch.nn.Module,
    tokenizer,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int = 16,
    padding_side: str = "right",
    window: int | None = None,
) -> list[float]:
    """log p(continuation | context) summed over the continuation's tokens, for each pair, in batched
    forward passes.

    Tokenization and truncation follow lm-evaluation-harness: a pair longer than the window loses tokens
    from the left of the context. Pairs are sorted by length so a batch pads little; positions come from
    the attention mask, so left or right padding and the batch size do not change the numbers.
    """
    assert len(contexts) == len(continuations)
    assert padding_side in ("left", "right")
    window = window or max_length(model, tokenizer)
    seqs, n_conts = [], []
    for ctx, cont in zip(contexts, continuations, strict=True):
        ctx_ids, cont_ids = encode_pair(tokenizer, ctx, cont)
        if not cont_ids:
            raise ValueError(f"continuation {cont!r} has no tokens")
        seqs.append((ctx_ids + cont_ids)[-(window + 1) :])  # the last token is only ever a target
        n_conts.append(min(len(cont_ids), window))
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = [0.0] * len(seqs)
    was_training = model.training
    model.eval()
    for s in range(0, len(order), batch_size):
        batch = order[s : s + batch_size]
        rows = [seqs[i][:-1] for i in batch]
        targets = [[pad] * (len(seqs[i]) - 1 - n_conts[i]) + seqs[i][-n_conts[i] :] for i in batch]
        is_cont = [[0] * (len(seqs[i]) - 1 - n_conts[i]) + [1] * n_conts[i] for i in batch]
        padder = pad_right if padding_side == "right" else left_pad
        ids, mask = padder(rows, pad)  # (B, T)
        target_ids, _ = padder(targets, pad)  # (B, T): token t+1 under input position t
        cont_mask, _ = padder(is_cont, 0)  # (B, T): 1 where the target is a continuation token
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        keep = cont_mask.bool()  # (B, T)
        # log-softmax over the continuation positions only: a (B, T, V) copy of the logits is GBs
        logp = token_logprobs(logits[keep], target_ids[keep]).double()  # (N,) the batch's continuation tokens
        row = torch.arange(len(batch)).unsqueeze(1).expand_as(keep)[keep]  # (N,) each token's row
        sums = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, row, logp)  # (B,)
        for i, v in zip(batch, sums.tolist(), strict=True):
            out[i] = v
    model.train(was_training)
    return out


# ---- greedy answers ----------------------------------------------------------------------------------------
def greedy_answers(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 50,
    batch_size: int = 16,
) -> list[str]:
    """The greedy continuation of each prompt up to its first line break (the answer line of a
    "Q: ... A:" or "Answer:" prompt), without leading and trailing spaces."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for s in range(0, len(prompts), batch_size):
        ids, mask = left_pad([encode(tokenizer, p) for p in prompts[s : s + batch_size]], pad)  # (B, P)
        resp = generate(
            model,
            ids,
            mask,
            seeds=torch.zeros(len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad,
            top_k=1,  # greedy: the seeded sampler keeps only the most likely token
        )  # (B, R)
        keep = response_mask(resp, tokenizer.eos_token_id)  # (B, R)
        for row, m in zip(resp.tolist(), keep.tolist(), strict=True):
            kept = [t for t, k in zip(row, m, strict=True) if k and t != tokenizer.eos_token_id]
            text = tokenizer.decode(kept, skip_special_tokens=True)
            out.append(text.lstrip(" ").split("\n", 1)[0].strip())
    return out
