"""Batched sampling with a KV cache (Hugging Face `generate`), where every sample has its own seed.

Row b's token at step t is drawn by inverse-CDF sampling with a uniform number that is a pure function of
(seeds[b], t). So a prompt's sample does not depend on which other prompts share its batch, on the batch
size, or on how many processes split the work: 1 process and 2 processes generate the same text, and the
same prompts before and after training see the same random numbers (common random numbers for evaluation).
vLLM's per-request `seed` gives the same property at scale.

That holds where the logits themselves do not depend on the batch: in fp32 on CPU (tested). Under bf16
autocast the kernels' blocking follows the batch's shape and a logit can round the other way, so a sample
drawn in a batch of another shape may differ (9 of the demo's 349 evaluation answers did, batches of 256 and
64, on a CPU with bf16 units): whatever must be the same sample comes from the same pass.

A prefix every prompt of a batch starts with (a few-shot or system prompt) runs once, and its keys and values
are repeated for the rows (SHARED_PREFIX_MIN); the samples are those of the plain batch (in fp32; see above).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StaticCache

from instructrl.datasets.tokenize import Prompt, prompt_ids, stop_ids
from instructrl.models.cache import cache_argument
from instructrl.models.lora import hf_model

SHARED_PREFIX_MIN = 8
"""generate() runs a prefix that all rows share once when it is at least this many tokens long. The demo's
few-shot prompts (a 91-token prefix of 108 tokens) then sample 2.6x faster, the same tokens (_run_prefix)."""

M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """splitmix64 over the parts -> a 63-bit seed (deterministic across runs and machines)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p & M64)) & M64
        x = (x + 0x9E3779B97F4A7C15) & M64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
        x ^= x >> 31
    return x & ((1 << 63) - 1)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (Wellons) on int64 tensors holding 32-bit values; int64 products wrap, low bits stay right."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def uniform_from_seeds(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """(B,) float64 in (0, 1), a pure function of (seed, step)."""
    lo, hi = seeds & M32, (seeds >> 32) & M32
    h = _hash32(lo ^ _hash32(hi + 0x632BE5AB))
    h = _hash32(h ^ _hash32(torch.full_like(h, step & M32) + 0x85EBCA6B))
    h2 = _hash32(h + 0x27D4EB2F)  # a second word for 53 bits of precision
    return ((h << 21 | h2 >> 11).double() + 0.5) / float(1 << 53)


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits


class SeededSampler(LogitsProcessor):
    """Turns `generate`'s greedy step into seeded sampling: the chosen token gets 0, all others -inf."""

    def __init__(self, seeds: torch.Tensor, prompt_len: int, temperature=1.0, top_k=0, top_p=1.0):
        self.seeds, self.prompt_len = seeds, prompt_len
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        probs = filter_logits(scores, self.temperature, self.top_k, self.top_p).double().softmax(-1)  # (B, V)
        cdf = probs.cumsum(-1)  # (B, V)
        u = uniform_from_seeds(self.seeds.to(scores.device), step).unsqueeze(-1) * cdf[:, -1:]  # (B, 1)
        token = torch.searchsorted(cdf, u).clamp(max=scores.shape[-1] - 1)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    seeds: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    share_prefix: bool = True,
) -> torch.Tensor:
    """Sample responses for left-padded prompts (B, P); returns (B, R) ids, R <= max_new_tokens,
    with `pad_token_id` after each row's EOS. `eos_token_id` may list several stop tokens (EOS and a chat
    template's end-of-turn: datasets.tokenize.stop_ids). With `share_prefix`, a prefix all rows start with
    runs once (shared_prefix_length)."""
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos_token_id if isinstance(eos_token_id, int) else list(eos_token_id),
        pad_token_id=pad_token_id,
        use_cache=True,
    )
    lm: Any = hf_model(model)  # a peft model's generate() would read the inner model's generation_config
    cache: dict[str, Any] = {}
    prefix = shared_prefix_length(input_ids, attention_mask) if share_prefix else 0
    if prefix >= SHARED_PREFIX_MIN and (name := cache_argument(lm)) is not None:
        input_ids, attention_mask, cache[name] = _run_prefix(
            lm, name, input_ids, attention_mask, prefix, pad_token_id, max_new_tokens
        )
    sampler = SeededSampler(seeds, input_ids.shape[1], temperature, top_k, top_p)
    # generate() fills every field left None from the checkpoint's generation_config.json (Qwen2.5-Instruct:
    # temperature, top_k, top_p, repetition_penalty), and those processors would run before the sampler,
    # while PPO's log-probs are plain softmax(logits / T). During the call the model has no defaults of its own.
    shipped, lm.generation_config = lm.generation_config, GenerationConfig()
    try:
        out = lm.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
            # each process samples its own rows and stops when they have ended: transformers would keep an
            # FSDP-sharded model's processes generating until all have (a collective per token); instructrl
            # gathers a sharded policy whole for its rollouts instead (training/sharding.py: gathered)
            synced_gpus=False,
            **cache,
        )
    finally:
        lm.generation_config = shipped
    return out[:, input_ids.shape[1] :]  # (B, R)


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many tokens every left-padded row starts with; at most the shortest row's length - 1, so that each
    row keeps a token of its own to run. 0 for one row, or for a mask that is not left padding."""
    lengths = attention_mask.sum(-1)  # (B,)
    m = int(lengths.min()) - 1
    left_padded = bool((attention_mask.diff(dim=-1) >= 0).all())
    if len(input_ids) < 2 or m < 1 or not left_padded:
        return 0
    starts = input_ids.shape[1] - lengths  # (B,) each row's first token
    aligned = input_ids.gather(1, starts[:, None] + torch.arange(m, device=input_ids.device))  # (B, m)
    same = (aligned == aligned[:1]).all(0)  # (m,)
    return int(same.long().cumprod(0).sum())


def _run_prefix(
    lm: Any,
    cache_name: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix: int,
    pad_token_id: int,
    max_new_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Runs the rows' shared prefix once. Returns the rows laid out as [prefix, left-padded rest] (the mask is
    0 between the two; positions come from the mask) and a KV cache holding the prefix's keys and values for
    every row. The cache is transformers' StaticCache, sized for the whole generation: a DynamicCache would
    copy every row's long prefix at each new token (torch.cat), half of the time on the demo's few-shot
    prompts; static, they sample 1.4x faster again. A sliding window shorter than the rows keeps the dynamic one.
    """
    B, P = input_ids.shape
    lengths = attention_mask.sum(-1)  # (B,)
    first = P - int(lengths[0])
    prefix_ids = input_ids[0, first : first + prefix]  # (prefix,)
    out = lm.base_model(input_ids=prefix_ids[None], use_cache=True)
    cache = getattr(out, cache_name)  # each layer: (1, heads, prefix, head_dim)
    width = int(lengths.max()) - prefix  # the widest row's tokens after the prefix
    total = prefix + width + max_new_tokens
    window = (
        getattr(lm.config, "sliding_window", None) if getattr(lm.config, "use_sliding_window", True) else None
    )
    if (window is None or window >= total) and hasattr(cache, "layers"):
        static = StaticCache(config=lm.config, max_cache_len=total)
        for i, layer in enumerate(cache.layers):
            static.update(layer.keys.expand(B, -1, -1, -1), layer.values.expand(B, -1, -1, -1), i)
        cache = static
    else:
        cache.batch_repeat_interleave(B)
    rest = torch.arange(width, device=input_ids.device)[None, :] >= (width - (lengths - prefix))[:, None]
    rest_ids = input_ids[:, P - width :].masked_fill(~rest, pad_token_id)  # (B, width)
    ids = torch.cat([prefix_ids.expand(B, prefix), rest_ids], dim=1)
    mask = torch.cat([attention_mask.new_ones(B, prefix), rest.long()], dim=1)
    return ids, mask, cache


def encode_prompts(
    tokenizer, prompts: Sequence[Prompt], template: str = "{prompt}\n", chat: bool = True
) -> list[list[int]]:
    return [prompt_ids(tokenizer, p, template, chat) for p in prompts]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids, mask


def response_mask(response_ids: torch.Tensor, eos_token_id: int | Sequence[int]) -> torch.Tensor:
    """1 for response tokens up to and including the first EOS (or other stop token), 0 after it. (B, R)"""
    stops = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    is_eos = torch.isin(response_ids, stops.to(response_ids.device)).long()
    after_eos = (is_eos.cumsum(-1) - is_eos) > 0
    return (~after_eos).long()


def decode_responses(tokenizer, response_ids: torch.Tensor, stops: Sequence[int] | None = None) -> list[str]:
    stops = [tokenizer.eos_token_id] if stops is None else stops
    mask = response_mask(response_ids, stops)
    texts = []
    for row, m in zip(response_ids.tolist(), mask.tolist(), strict=True):
        kept = [t for t, keep in zip(row, m, strict=True) if keep and t not in stops]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return texts


def sample_responses(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    k: int | Sequence[int] = 1,
    max_new_tokens: int = 64,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 64,
    prompt_template: str = "{prompt}\n",
    chat: bool = True,
    share_prefix: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """K sampled responses for each prompt (a list of K strings per prompt; `k` may differ per prompt), in
    batches. Sample j of prompt i uses seed mix_seed(seed, i, j), whatever the batching. top_k=1 is greedy.
    Prompts go through the tokenizer's chat template when it has one, unless `chat=False`.
    """
    model.eval()
    ks = [k] * len(prompts) if isinstance(k, int) else list(k)
    encoded = encode_prompts(tokenizer, prompts, prompt_template, chat)
    stops = stop_ids(tokenizer)
    jobs = [(i, j) for i in range(len(prompts)) for j in range(ks[i])]
    out: list[list[str]] = [[""] * ks[i] for i in range(len(prompts))]
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        ids, mask = left_pad([encoded[i] for i, _ in batch], tokenizer.pad_token_id)
        seeds = torch.tensor([mix_seed(seed, i, j) for i, j in batch], dtype=torch.long)
        resp = generate(
            model,
            ids,
            mask,
            seeds=seeds,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            share_prefix=share_prefix,
        )
        for (i, j), text in zip(batch, decode_responses(tokenizer, resp, stops), strict=True):
            out[i][j] = text
        if progress is not None:
            progress(min(start + batch_size, len(jobs)), len(jobs))
    return out
