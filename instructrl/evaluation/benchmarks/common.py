"""What the public benchmarks share below their metrics: per-choice log-likelihoods in batched forward
passes, tokenized and truncated as lm-evaluation-harness does, and greedy answers. The results layout and
its intervals are `_results.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from instructrl.datasets.tokenize import pad_right
from instructrl.errors import UserError
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


def choice_loglikelihoods(
    model: torch.nn.Module,
    tokenizer,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int = 16,
    padding_side: str = "left",
    window: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """log p(continuation | context) summed over the continuation's tokens, for each pair of strings, in
    batched forward passes; tokenized as lm-evaluation-harness does (`encode_pair`)."""
    assert len(contexts) == len(continuations)
    requests = [encode_pair(tokenizer, c, x) for c, x in zip(contexts, continuations, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return request_loglikelihoods(
        model, requests, pad, window or max_length(model, tokenizer),
        batch_size=batch_size, padding_side=padding_side, progress=progress,
    )  # fmt: skip


@torch.no_grad()
def request_loglikelihoods(
    model: torch.nn.Module,
    requests: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    window: int,
    *,
    batch_size: int = 16,
    padding_side: str = "left",
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """log P(continuation | context) for each (context ids, continuation ids).

    As in lm-evaluation-harness, a pair longer than the window loses tokens from the left of the context:
    the input is (context + continuation)[-(window + 1):][:-1]. Requests are sorted by length so a batch
    pads little, and positions come from the attention mask. Left padding puts every continuation at the
    end of its row, so the unembedding runs on the last L positions only (`logits_to_keep`); right
    padding (the harness's) computes every position's logits. The two give the same numbers.
    """
    assert padding_side in ("left", "right")
    seqs, n_conts = [], []
    for ctx, cont in requests:
        if not ctx or not cont:
            raise ValueError("every request needs a context token and a continuation token")
        if len(cont) > window:
            raise UserError(f"a continuation of {len(cont)} tokens does not fit the model's {window}")
        seqs.append((ctx + cont)[-(window + 1) :])  # the last token is only ever a target
        n_conts.append(len(cont))
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out = [0.0] * len(seqs)
    was_training = model.training
    model.eval()
    for s in range(0, len(order), batch_size):
        batch = order[s : s + batch_size]
        rows = [seqs[i][:-1] for i in batch]
        lens = torch.tensor([n_conts[i] for i in batch])  # (B,)
        if padding_side == "left":
            L = int(lens.max())
            ids, mask = left_pad(rows, pad_id)  # (B, T)
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                logits_to_keep=L, use_cache=False,
            ).logits  # (B, L, V): predictions of each row's last L tokens  # fmt: skip
            targets = torch.tensor([([pad_id] * L + seqs[i][1:])[-L:] for i in batch])  # (B, L)
            keep = torch.arange(L) >= (L - lens).unsqueeze(-1)  # (B, L) the continuation's tokens
            logp = torch.where(keep, token_logprobs(logits, targets), 0.0)  # (B, L)
        else:
            ids, mask = pad_right(rows, pad_id)  # (B, T)
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
            ).logits  # (B, T, V)
            targets, _ = pad_right([seqs[i][1:] for i in batch], pad_id)  # (B, T): token t+1 under t
            length = mask.sum(-1, keepdim=True)  # (B, 1)
            t = torch.arange(ids.shape[1])  # (T,)
            keep = (t >= length - lens.unsqueeze(-1)) & (t < length)  # (B, T) the continuation's tokens
            logp = torch.where(keep, token_logprobs(logits, targets), 0.0)  # (B, T)
        sums = logp.double().sum(-1)  # (B,)
        for i, v in zip(batch, sums.tolist(), strict=True):
            out[i] = v
        if progress is not None:
            progress(s + len(batch), len(order))
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
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """The greedy continuation of each prompt up to its first line break (the answer line of a
    "Q: ... A:" or "Answer:" prompt), without leading and trailing spaces. A prompt longer than the
    model's window less max_new_tokens loses its beginning (a few-shot prefix), as in lm-evaluation-harness.
    `progress(answered, len(prompts))` after each batch."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    window = max_length(model, tokenizer)
    keep_last = window - max_new_tokens  # the harness's context_enc[-(max_length - max_gen_toks):]
    if keep_last < 1:
        raise UserError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's {window} positions"
        )
    out = []
    for s in range(0, len(prompts), batch_size):
        rows = [encode(tokenizer, p) for p in prompts[s : s + batch_size]]
        rows = [r[-keep_last:] for r in rows]
        ids, mask = left_pad(rows, pad)  # (B, P)
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
        if progress is not None:
            progress(len(out), len(prompts))
    return out
