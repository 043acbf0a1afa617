"""Steps 1-3 of a PPO iteration: generate responses and score them (`sample_and_score`), gather every
process's episodes (`gather_rollout`), all into one `Rollout`; the same sampling measures the reward's
normalisation on the SFT policy's samples (`normalise_reward`)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, fields
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from instructrl.errors import UserError
from instructrl.models.generation import decode_responses, generate, left_pad, mix_seed, response_mask
from instructrl.models.scoring import response_logits, scale_reward, score, token_logprobs, values
from instructrl.ppo.setup import PPOSetup, RewardNorm
from instructrl.training.runtime import epoch_batches, shard

NORM_STREAM = 0x5C0E  # the reward normalisation's sample seeds never collide with rollout seeds


@dataclass
class Rollout:
    """One iteration's episodes. B episodes, P prompt tokens (left-padded), R response tokens (right-padded)."""

    episode: torch.Tensor  # (B,) global episode index; rows are in this order on every process
    query: torch.Tensor  # (B, P) prompt token ids
    query_mask: torch.Tensor  # (B, P)
    response: torch.Tensor  # (B, R) response token ids, pad after EOS
    mask: torch.Tensor  # (B, R) 1 up to and including EOS
    logprobs: torch.Tensor  # (B, R) log π_θold(y_t | x, y_<t)
    ref_logprobs: torch.Tensor  # (B, R) log π_SFT(y_t | x, y_<t)
    values: torch.Tensor  # (B, R) V(x, y_<t)
    raw_scores: torch.Tensor  # (B,) r(x, y) as the reward model (or reward function) gives it
    scores: torch.Tensor  # (B,) normalised score, with the missing-EOS penalty: what PPO maximises
    has_eos: torch.Tensor  # (B,) bool

    def sequences(self, rows: Any = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.cat([self.query[rows], self.response[rows]], dim=1)  # (b, P + R)
        attn = torch.cat([self.query_mask[rows], self.mask[rows]], dim=1)  # (b, P + R)
        return ids, attn

    def trimmed(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """`sequences(rows)` without the columns that are padding in every one of the rows: (ids, attn, p, n),
        (b, p + n) each, where the rows' prompts fill the last p of the P query columns and their responses
        the first n of the R response columns. A minibatch's forward passes then skip the padding that the
        rollout's longest prompt and response put in every row (positions come from the mask: the same
        log-probs and values)."""
        P = self.query.shape[1]
        p = int(self.query_mask[rows].sum(-1).max())
        n = max(int(self.mask[rows].sum(-1).max()), 1)
        ids, attn = self.sequences(rows)
        return ids[:, P - p : P + n], attn[:, P - p : P + n], p, n


# ---------------------------------------------------------------------------------------------------------
# 1.-2. generate and score
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_and_score(
    s: PPOSetup,
    *,
    queries: list[list[int]],
    prompts: list[str],
    seeds: list[int],
    episodes: list[int],
    with_values: bool = True,
    timings: dict[str, float] | None = None,
    sampler: torch.nn.Module | None = None,
) -> Rollout:
    """This process's episodes: responses from the policy (or from `sampler`, e.g. the reference for the
    reward's normalisation) and every no-grad forward pass PPO needs. Sharded models are called inside
    `s.whole()`."""
    c, acc, tok = s.config, s.accelerator, s.tokenizer
    clock = Clock()
    policy = s.unwrapped_policy
    for model in (policy, s.value_model):  # rollouts always run in eval mode (no dropout, no layer drop)
        model.eval()
    query, query_mask = left_pad(queries, tok.pad_token_id)  # (B, P)
    query, query_mask = query.to(acc.device), query_mask.to(acc.device)
    with acc.autocast():
        response = generate(
            policy if sampler is None else sampler,
            query,
            query_mask,
            seeds=torch.tensor(seeds, dtype=torch.long),
            max_new_tokens=c.max_new_tokens,
            eos_token_id=s.stops,
            pad_token_id=tok.pad_token_id,
            temperature=c.temperature,
        )  # (B, R)
    clock.mark("generate")
    mask = response_mask(response, s.stops)  # (B, R)
    response = response.masked_fill(mask == 0, tok.pad_token_id)
    stops = torch.tensor(s.stops, device=response.device)
    has_eos = (torch.isin(response, stops) & (mask == 1)).any(-1)  # (B,) ended its turn
    P, R = query.shape[1], response.shape[1]
    ids, attn = torch.cat([query, response], 1), torch.cat([query_mask, mask], 1)  # (B, P + R)

    rm_device = acc.device if s.reward_model is None else next(s.reward_model.parameters()).device
    logprobs, ref_logprobs, vals, raw = [], [], [], []
    for start in range(0, len(queries), c.forward_batch_size):
        b = slice(start, start + c.forward_batch_size)
        with acc.autocast():
            logits = response_logits(policy, ids[b], attn[b], R) / c.temperature  # (b, R, V)
            logprobs.append(token_logprobs(logits, response[b]))  # (b, R)
            with s.reference() as ref:
                ref_logits = response_logits(ref, ids[b], attn[b], R) / (c.ref_temperature or c.temperature)
            ref_logprobs.append(token_logprobs(ref_logits, response[b]))  # (b, R)
            if with_values:
                vals.append(values(s.value_model, ids[b], attn[b])[:, P - 1 : P + R - 1])  # (b, R)
            if s.reward_model is not None:  # on reward_device; its scores come back
                raw.append(score(s.reward_model, ids[b].to(rm_device), attn[b].to(rm_device)).to(acc.device))
    if s.reward_fn is not None:
        given = s.reward_fn(prompts, decode_responses(tok, response, s.stops))
        raw = [torch.tensor(given, dtype=torch.float, device=acc.device)]
    raw_scores = torch.cat(raw).float()  # (B,)
    scores = s.reward_norm(raw_scores)  # (B,)
    if c.missing_eos_penalty is not None:
        scores = torch.where(has_eos, scores, scores + c.missing_eos_penalty)
    clock.mark("score")
    if timings is not None:
        timings.update(clock.timings())
    return Rollout(
        episode=torch.tensor(episodes, device=acc.device),
        query=query,
        query_mask=query_mask,
        response=response,
        mask=mask,
        logprobs=torch.cat(logprobs),
        ref_logprobs=torch.cat(ref_logprobs),
        values=torch.cat(vals) if vals else torch.zeros_like(mask, dtype=torch.float),
        raw_scores=raw_scores,
        scores=scores,
        has_eos=has_eos,
    )


# ---------------------------------------------------------------------------------------------------------
# 3. gather
# ---------------------------------------------------------------------------------------------------------
def gather_rollout(local: Rollout, accelerator: Accelerator, pad_id: int) -> Rollout:
    """Every process's episodes on every process, padded to common widths and sorted by episode."""
    if accelerator.num_processes == 1:
        return local
    out = {}
    for f in fields(Rollout):
        t = getattr(local, f.name)
        if t.dim() == 2:
            pad = pad_id if f.name in ("query", "response") else 0
            t = accelerator.pad_across_processes(
                t, dim=1, pad_index=pad, pad_first=f.name.startswith("query")
            )
        out[f.name] = accelerator.gather(t)
    order = torch.argsort(out["episode"])
    return Rollout(**{k: v[order] for k, v in out.items()})


def rollout_prompts(s: PPOSetup, it: int) -> list[int]:
    """The training prompt of each of iteration `it`'s episodes: the it-th batch of seeded per-epoch
    permutations."""
    per_epoch = len(s.train.queries) // s.config.rollout_batch_size
    epoch, i = divmod(it, per_epoch)
    return epoch_batches(len(s.train.queries), s.config.rollout_batch_size, s.config.seed, epoch)[i]


@torch.no_grad()
def normalise_reward(s: PPOSetup) -> tuple[RewardNorm, RewardNorm]:
    """The reward's gain and bias, and the value model's. The reward's give the SFT policy's samples on
    `reward_norm_samples` training prompts a mean score of 0 and a standard deviation of 1 (identity with
    reward_norm=false). The samples come from the reference (the SFT model), so that a PPO run continued from an
    earlier policy (`reference_dir`) measures its reward, and so β, on the same scale as the first round.

    The value model's head is given the gain and bias that put its first predictions on the scale of the
    rewards it will be paid: the reward's, when it starts as the reward model; when it starts from a model of
    its own (`value_apart`), those that give its scores of the same samples the mean and standard deviation
    that PPO's scores have."""
    c, acc = s.config, s.accelerator
    n = min(c.reward_norm_samples, len(s.train.queries))
    g = torch.Generator().manual_seed(mix_seed(c.seed, NORM_STREAM))
    rows = torch.randperm(len(s.train.queries), generator=g)[:n].tolist()
    mine = shard(rows, acc.num_processes, acc.process_index)
    raw: list[float] = []
    raw_values: list[float] = []
    with s.whole():  # this process's shard of the prompts may be the shorter one
        for start in range(0, len(mine), c.forward_batch_size):
            chunk = mine[start : start + c.forward_batch_size]
            # with LoRA the reference is the policy, adapters off, for every pass of the call: only scores are read
            with s.reference() as ref:
                r = sample_and_score(
                    s,
                    queries=[s.train.queries[i] for i in chunk],
                    prompts=[s.train.texts[i] for i in chunk],
                    seeds=[mix_seed(c.seed, NORM_STREAM, i) for i in chunk],
                    episodes=chunk,
                    with_values=False,
                    sampler=ref,
                )
            raw += r.raw_scores.tolist()
            if s.value_apart:
                with acc.autocast():
                    raw_values += score(acc.unwrap_model(s.value_model), *r.sequences()).tolist()
    reward = measured_norm(raw, acc, "reward model", n, scale=c.reward_norm)
    value = reward
    if s.value_apart:
        # its scores of the samples get the mean and standard deviation of the scores PPO sees
        own = measured_norm(raw_values, acc, "value model", n)
        mean, std = (0.0, 1.0) if c.reward_norm else (reward.raw_mean or 0.0, reward.raw_std or 0.0)
        value = dataclasses.replace(own, gain=own.gain * std, bias=own.bias * std + mean)
    scale_reward(acc.unwrap_model(s.value_model), value.gain, value.bias)
    return reward, value


def measured_norm(raw: list[float], acc: Accelerator, what: str, n: int, scale: bool = True) -> RewardNorm:
    """The mean and standard deviation of every process's scores, and (`scale`) the gain and bias that make
    them 0 and 1 (otherwise gain 1, bias 0)."""
    if acc.num_processes > 1:
        raw = gather_object(raw)
    t = torch.tensor(raw, dtype=torch.float64)
    mean, std = t.mean().item(), t.std(correction=0).item()
    if not scale:
        return RewardNorm(samples=n, raw_mean=mean, raw_std=std)
    if not std > 1e-6:
        raise UserError(
            f"the {what} gives the SFT policy's {n} samples the same score ({mean:.4g}): there is nothing "
            f"to normalise or to learn from; check --reward and --value-model, or --set reward_norm=false"
        )
    return RewardNorm(gain=1.0 / std, bias=-mean / std, samples=n, raw_mean=mean, raw_std=std)


def log_rollouts(s: PPOSetup, iteration: int, r: Rollout, prompt_of: list[int]) -> None:
    """Every episode of the iteration: prompt, response, normalised and raw score, KL to the SFT model."""
    if not s.accelerator.is_main_process:
        return
    texts = decode_responses(s.tokenizer, r.response, s.stops)
    kl = ((r.logprobs - r.ref_logprobs) * r.mask).sum(-1)  # (B,)
    rows = zip(r.episode.tolist(), texts, r.scores.tolist(), r.raw_scores.tolist(), kl.tolist(), strict=True)
    s.run.dir.log_many(
        [
            {
                "iteration": iteration,
                "episode": e,
                "prompt": s.train.texts[prompt_of[e]],
                "response": t,
                "score": sc,
                "raw_score": raw,
                "kl": k,
            }
            for e, t, sc, raw, k in rows
        ],
        "rollouts.jsonl",
    )


class Clock:
    """Wall and CPU (process) seconds between marks, as `<phase>_s` and `<phase>_cpu_s`; CPU time is what
    other processes on the machine do not inflate."""

    def __init__(self) -> None:
        self.start = self.last = (time.perf_counter(), time.process_time())
        self.out: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.out[f"{phase}_s"], self.out[f"{phase}_cpu_s"] = now[0] - self.last[0], now[1] - self.last[1]
        self.last = now

    def timings(self, total: str | None = None) -> dict[str, float]:
        """The phases so far, and with `total` the time since the clock started under that name."""
        if total is None:
            return dict(self.out)
        now = (time.perf_counter(), time.process_time())
        return {**self.out, f"{total}_s": now[0] - self.start[0], f"{total}_cpu_s": now[1] - self.start[1]}
