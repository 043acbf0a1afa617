"""`instructrl ppo`: PPO / PPO-ptx against a reward model (InstructGPT step 3).

Set-up (`setup_ppo`): the policy and value model to train, the frozen SFT reference and reward model, the
prompts, and the reward's normalisation — a gain and bias that give the SFT policy's own samples a mean score
of 0 and a standard deviation of 1, so that β, the value clip and the missing-EOS penalty have a known scale
(lm-human-preferences, Ziegler et al. 2019; "The N+ implementation details of RLHF with PPO", Huang et al. 2024).

Every iteration (`ppo_iteration`), as in the paper (Ouyang et al. 2022, section 3.5) and Ziegler et al. 2019:
  1. sample prompts and generate responses with the policy (batched, KV cache, one seed per episode)
  2. forward passes: log-probs of the policy and of the frozen SFT reference, values, reward-model scores
  3. gather every process's episodes, so whitening and minibatches are over the global batch
  4. per-token rewards: the normalised score at the end of the response minus β·(log π_RL − log π_SFT) on
     every token
  5. advantages (GAE) and returns; whiten the advantages
  6. PPO epochs over minibatches: clipped policy loss (+ γ·pretraining LM loss for PPO-ptx), clipped value loss
  7. update the KL controller

Every `eval_every` iterations the policy answers held-out prompts (from training users: never the evaluation's)
with the same seeds each time; with `keep=best` the evaluated policy with the highest mean reward, within
`kl_budget`, becomes final/ (checkpoint choice as early stopping: Gao et al. 2022 find the true reward peaks
at some KL while the proxy reward keeps rising).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from instructrl.datasets.io import read_pretrain, read_prompts
from instructrl.datasets.tokenize import Example, prompt_ids, split_by_user, stop_ids, tokenize_texts
from instructrl.errors import UserError
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.generation import decode_responses, generate, left_pad, mix_seed, response_mask
from instructrl.models.loading import context_window, load_causal_lm, load_reward_model, load_tokenizer
from instructrl.models.lora import add_lora
from instructrl.models.memory import (
    enable_gradient_checkpointing,
    frozen_dtype,
    resolve_device,
    to_frozen_dtype,
)
from instructrl.models.scoring import (
    ScalarHead,
    entropy_from_logits,
    response_logits,
    scale_reward,
    score,
    token_logprobs,
    values,
)
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    gae,
    kl_penalised_rewards,
    masked_whiten,
    policy_loss,
    value_loss,
)
from instructrl.training.loop import add_sums, reduce_sums
from instructrl.training.losses import batch_nll, eval_loss, length_groups
from instructrl.training.optim import clip_grad_norms, make_optimizer
from instructrl.training.rundir import RunDir, resolve_config
from instructrl.training.runtime import (
    Stopped,
    StopSignal,
    attention_implementation,
    epoch_batches,
    finish,
    make_accelerator,
    micro_batch_size,
    progress,
    shard,
    stage,
)
from instructrl.training.sharding import (
    clip_grad_norm,
    gathered,
    gradient_sync,
    is_sharded,
    local_state_bytes,
    shard_model,
    wants_sharding,
)

EVAL_STREAM = 0xE7A1  # seeds of evaluation samples never collide with rollout seeds
NORM_STREAM = 0x5C0E  # nor do those of the samples that set the reward's normalisation

RewardFn = Callable[[list[str], list[str]], list[float]]
"""(prompts, responses) -> one score per response: a reward given as a Python function."""


@dataclass
class RewardNorm:
    """score = gain · r(x, y) + bias, with gain and bias chosen so that the SFT policy's samples on training
    prompts score mean 0 and standard deviation 1 (gain 1, bias 0: no normalisation)."""

    gain: float = 1.0
    bias: float = 0.0
    samples: int = 0
    """How many SFT samples the mean and standard deviation were measured on."""
    raw_mean: float | None = None
    raw_std: float | None = None

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * self.gain + self.bias


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


@dataclass
class Prompts:
    queries: list[list[int]]  # token ids, prompt template applied
    texts: list[str]


@dataclass
class PPOSetup:
    """Everything one PPO run holds, built once by `setup_ppo`; the iteration reads it, never module globals."""

    config: PPOConfig
    accelerator: Accelerator
    run: RunDir
    tokenizer: Any
    stops: list[int]  # token ids that end a response: EOS and the chat template's end-of-turn token
    policy: torch.nn.Module  # π_θ, prepared for training (DDP-wrapped or, with sharding=fsdp, FSDP2-sharded)
    # π_SFT, frozen; None with LoRA, where it is the policy with its adapters off (`reference`)
    ref_policy: torch.nn.Module | None
    value_model: torch.nn.Module  # V_φ, starts as the reward model; prepared for training as the policy is
    reward_model: torch.nn.Module | None  # r_ψ, frozen; None when reward_fn scores instead
    reward_fn: RewardFn | None
    reward_norm: RewardNorm
    # one AdamW, a parameter group for the policy and one for the value model (their shards, when sharded)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    kl_ctl: FixedKLController | AdaptiveKLController
    train: Prompts
    val: Prompts
    ptx_train: list[Example]  # pretraining sequences for PPO-ptx
    ptx_val: list[Example]  # held-out pretraining sequences: the alignment tax, before and after
    skipped_too_long: int
    iterations: int
    meta: CheckpointMeta  # what final/, kept/ and value/ note in their instructrl.json

    @property
    def unwrapped_policy(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.policy)

    @property
    def sharded(self) -> bool:
        return is_sharded(self.policy)

    @property
    def trained(self) -> torch.nn.Module:
        """The policy and the value model as one module, whose parameters are the optimizer's (a sharded
        checkpoint's state dict, the memory record)."""
        return torch.nn.ModuleDict({"policy": self.policy, "value": self.value_model})

    def whole(self) -> contextlib.AbstractContextManager[None]:
        """Sharded policy and value model gathered whole for the `with`'s rollouts and scoring: generation stops
        when a process's own rows have ended, so its forward passes could not run in lockstep with the other
        processes'. A no-op when unsharded. Every process enters it together."""
        return gathered(self.policy, self.value_model)

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """π_SFT for the duration of a `with`: its own frozen copy, or with LoRA the policy itself with its
        adapters switched off (the frozen weights are the SFT model's: one copy in memory, not two)."""
        if self.ref_policy is not None:
            yield self.ref_policy
            return
        policy: Any = self.unwrapped_policy
        with policy.disable_adapter():
            yield policy

    @property
    def ptx_batch(self) -> int:
        return self.config.ptx_batch_size or self.config.batch_size

    @property
    def steps_per_iteration(self) -> int:
        return self.config.epochs * self.config.minibatches


# ---------------------------------------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------------------------------------
def setup_ppo(
    *,
    policy_dir: str | Path,
    reward_dir: str | Path,
    prompts: Any,
    out: str | Path,
    config: PPOConfig,
    reference_dir: str | Path | None = None,
    val_prompts: Any = None,
    pretrain_data: Any = None,
    resume: bool = False,
    changed_keys: set[str] | None = None,
    reward_fn: RewardFn | None = None,
    accelerator: Accelerator | None = None,
) -> PPOSetup:
    """Validate the inputs, load the four models and the data, build the optimizer. Writes nothing but
    OUT/config.yaml, and only once every input was read.

    `reference_dir`: the frozen model the KL is measured to, when the policy does not start from it — PPO
    continued from an earlier round's policy keeps the SFT model as its reference (ChatGPT's loop). Default:
    the policy's own start, `policy_dir`."""
    changed_keys = changed_keys or set()
    policy_meta = CheckpointMeta.find(policy_dir)
    if "prompt_template" not in changed_keys and policy_meta is not None:
        config.prompt_template = policy_meta.prompt_template
    if config.ptx_coef > 0 and pretrain_data is None:
        raise UserError("ptx_coef > 0 (PPO-ptx) needs --pretrain-data text.jsonl")
    config = resolve_config(out, config, resume, changed_keys)
    reward_device = resolve_device(config.reward_device, "reward_device")
    accelerator = accelerator or make_accelerator(config, out)
    world = accelerator.num_processes

    # --- data: prompts, held-out prompts, pretraining text --------------------------------------------------
    reference_dir = policy_dir if reference_dir is None else reference_dir
    tokenizer = load_tokenizer(policy_dir)
    config.max_length = min(config.max_length, context_window(policy_dir) or config.max_length)
    check_same_tokenizer(tokenizer, load_tokenizer(reward_dir), reward_dir)
    if reference_dir != policy_dir:
        check_same_tokenizer(tokenizer, load_tokenizer(reference_dir), reference_dir, "reference")
    records = read_prompts(prompts)
    if val_prompts is not None:
        train_records, val_records = records, read_prompts(val_prompts)
    else:
        train_records, val_records = split_by_user(records, config.val_fraction, config.seed)
    train, skipped = load_prompt_queries(train_records, tokenizer, config, "training")
    val, val_skipped = load_prompt_queries(val_records[: config.eval_prompts], tokenizer, config, "held-out")
    if len(train.queries) < config.rollout_batch_size:
        raise UserError(
            f"{len(train.queries)} usable prompts are fewer than rollout_batch_size={config.rollout_batch_size}; "
            f"lower it (--set rollout_batch_size=N) or add prompts"
        )
    if config.rollout_batch_size % world or config.batch_size % world:
        raise UserError(f"rollout_batch_size and batch_size must be multiples of the {world} processes")
    ptx_train: list[Example] = []
    ptx_val: list[Example] = []
    if pretrain_data is not None:
        docs = read_pretrain(pretrain_data)
        train_docs, val_docs = split_by_user(docs, config.val_fraction, config.seed)
        window = min(config.max_length, 1024)
        ptx_train = tokenize_texts([d.text for d in train_docs], tokenizer, window)
        ptx_val = tokenize_texts([d.text for d in val_docs], tokenizer, window)[:256]

    # --- models: policy and value are trained; the SFT reference and the reward model are frozen ---------------
    # The frozen ones are never given to accelerator.prepare (no optimizer state, no gradients, no DDP wrapper);
    # they may be held in bf16/fp16 (frozen_dtype), and the RM on a device of its own (reward_device).
    attention = attention_implementation(accelerator)
    frozen = frozen_dtype(config.frozen_dtype, accelerator.mixed_precision)
    policy: torch.nn.Module = load_causal_lm(policy_dir, dropout=False, attn_implementation=attention)
    ref_policy: torch.nn.Module | None = None
    if config.lora_r:
        policy = add_lora(policy, config, "CAUSAL_LM")
    # with LoRA the reference is the policy's own frozen weights (`PPOSetup.reference`), unless the policy
    # starts from a later round's policy, not from the reference: then the reference is loaded, as without LoRA
    if not config.lora_r or str(reference_dir) != str(policy_dir):
        ref_policy = load_causal_lm(reference_dir, dropout=False, attn_implementation=attention)
        ref_policy = to_frozen_dtype(ref_policy, frozen).eval().requires_grad_(False).to(accelerator.device)
    reward_model: torch.nn.Module | None = None
    if reward_fn is None:
        reward_model = load_reward_model(reward_dir, attn_implementation=attention)
        reward_model = to_frozen_dtype(reward_model, frozen).eval().requires_grad_(False)
        reward_model = reward_model.to(reward_device or accelerator.device)
    # V_φ starts as the RM. With LoRA it is the RM's own copy with adapters and a fully trained head: sharing the
    # frozen RM's weights would share its config too, where the value head's gain and offset live (scale_reward)
    value_rm: torch.nn.Module = load_reward_model(reward_dir, attn_implementation=attention)
    value_rm = add_lora(value_rm, config, "SEQ_CLS") if config.lora_r else value_rm
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
        enable_gradient_checkpointing(value_rm)
    value_model: torch.nn.Module = ScalarHead(value_rm)

    iterations = config.iterations
    steps_per_iteration = config.epochs * config.minibatches
    if config.max_steps is not None:
        iterations = min(iterations, max(1, config.max_steps // steps_per_iteration))
    # sharding=fsdp: each trained model sharded on its own (its blocks, then its root), before the optimizer
    # is built, which then holds the shards. The frozen reference and RM stay whole on every process: they
    # have no gradients or optimizer state to split, and each process scores its own episodes, with no
    # forward passes in lockstep (frozen_dtype halves them). bf16 is autocast's, as unsharded: FSDP2's bf16
    # weights (norms and embeddings too) put the SFT policy 4.5e-4 nats per episode from its own reference.
    sharded = wants_sharding(config, accelerator)
    if sharded:
        policy = shard_model(policy, accelerator, autocast=True)
        value_model = shard_model(value_model, accelerator, autocast=True)
    # One optimizer for both models: under fp16 loss scaling, accelerate unscales every optimizer in each
    # clip_grad_norm_ and resets its record at each step, so a second optimizer's gradients were unscaled twice.
    # Sharded, its parameters are the two models' DTensor shards, each model's a group of its own.
    optimizer, scheduler = make_optimizer(
        [
            {"params": list(policy.parameters()), "lr": config.lr},
            {"params": list(value_model.parameters()), "lr": config.value_lr or config.lr},
        ],
        config,
        iterations * steps_per_iteration,
    )
    if not sharded:
        policy, value_model, optimizer = accelerator.prepare(policy, value_model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    kl_ctl: FixedKLController | AdaptiveKLController
    if config.kl_target is None:
        kl_ctl = FixedKLController(config.kl_coef)
    else:
        kl_ctl = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)

    run = RunDir(out, accelerator)
    run.checkpoint_sharded(torch.nn.ModuleDict({"policy": policy, "value": value_model}), optimizer)
    run.start(config)
    rm_meta = CheckpointMeta.read(reward_dir) if reward_fn is None else CheckpointMeta()
    meta = CheckpointMeta(
        stage="ppo",
        prompt_template=config.prompt_template,
        sft_model=str(reference_dir),
        reward_model=str(reward_dir),
        ptx_coef=config.ptx_coef,
        lora_r=config.lora_r,
        round=rm_meta.round,
        # which models this policy descends from, round by round (ChatGPT's loop continues from the last)
        lineage=[
            *(policy_meta.lineage if policy_meta else []),
            {
                "stage": "ppo",
                "round": rm_meta.round,
                "policy_init": str(policy_dir),
                "reference": str(reference_dir),
                "reward_model": str(reward_dir),
            },
        ],
    )
    return PPOSetup(
        config=config,
        accelerator=accelerator,
        run=run,
        tokenizer=tokenizer,
        stops=stop_ids(tokenizer),
        policy=policy,
        ref_policy=ref_policy,
        value_model=value_model,
        reward_model=reward_model,
        reward_fn=reward_fn,
        reward_norm=RewardNorm(),
        optimizer=optimizer,
        scheduler=scheduler,
        kl_ctl=kl_ctl,
        train=train,
        val=val,
        ptx_train=ptx_train,
        ptx_val=ptx_val,
        skipped_too_long=skipped + val_skipped,
        iterations=iterations,
        meta=meta,
    )


def load_prompt_queries(records, tokenizer, config: PPOConfig, what: str) -> tuple[Prompts, int]:
    """Tokenized prompts that leave room for max_new_tokens; too-long ones are skipped or rejected."""
    queries, texts, skipped = [], [], 0
    limit = config.max_length - config.max_new_tokens
    for i, rec in enumerate(records):
        q = prompt_ids(tokenizer, rec.conversation, config.prompt_template)
        if len(q) > limit:
            if config.too_long == "error":
                raise UserError(
                    f"{rec.where(f'{what} prompt {i + 1}')}: prompt is {len(q)} tokens; with max_new_tokens={config.max_new_tokens} it "
                    f"does not fit max_length={config.max_length}. Shorten it or --set too_long=skip"
                )
            skipped += 1
            continue
        queries.append(q)
        texts.append(rec.prompt)
    return Prompts(queries, texts), skipped


def check_same_tokenizer(policy_tok, other_tok, other_dir, what: str = "reward") -> None:
    if policy_tok.get_vocab() != other_tok.get_vocab():
        raise UserError(
            f"{other_dir}: the {what} model's tokenizer differs from the policy's; instructrl scores the "
            f"policy's token ids directly, so use models that descend from the same SFT model"
        )


@torch.no_grad()
def normalise_reward(s: PPOSetup) -> RewardNorm:
    """Gain and bias that give the SFT policy's samples on `reward_norm_samples` training prompts a mean score
    of 0 and a standard deviation of 1. The samples come from the reference (the SFT model), so that a PPO run
    continued from an earlier policy (`reference_dir`) measures its reward, and so β, on the same scale as the
    first round. The value model starts as the reward model, so its head gets the same gain and bias: its
    first predictions are on the scale of the rewards it will be paid."""
    c, acc = s.config, s.accelerator
    n = min(c.reward_norm_samples, len(s.train.queries))
    g = torch.Generator().manual_seed(mix_seed(c.seed, NORM_STREAM))
    rows = torch.randperm(len(s.train.queries), generator=g)[:n].tolist()
    mine = shard(rows, acc.num_processes, acc.process_index)
    raw: list[float] = []
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
    if acc.num_processes > 1:
        raw = gather_object(raw)
    t = torch.tensor(raw, dtype=torch.float64)
    mean, std = t.mean().item(), t.std(correction=0).item()
    if not std > 1e-6:
        raise UserError(
            f"the reward model gives the SFT policy's {n} samples the same score ({mean:.4g}): there is nothing "
            f"to normalise or to learn from; check --reward, or --set reward_norm=false"
        )
    norm = RewardNorm(gain=1.0 / std, bias=-mean / std, samples=n, raw_mean=mean, raw_std=std)
    scale_reward(acc.unwrap_model(s.value_model), norm.gain, norm.bias)
    return norm


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
                ref_logits = response_logits(ref, ids[b], attn[b], R) / c.temperature  # (b, R, V)
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


# ---------------------------------------------------------------------------------------------------------
# one iteration
# ---------------------------------------------------------------------------------------------------------
def ppo_iteration(s: PPOSetup, it: int, step: int) -> tuple[dict[str, float], Rollout, list[int]]:
    """PPO iteration `it` (0-based), starting at optimizer step `step`. Returns its metrics, the gathered
    rollout and the training prompt of each of its episodes."""
    c, acc = s.config, s.accelerator
    timings: dict[str, float] = {}
    clock = Clock()
    # 1.-2. sample prompts, generate, score ---------------------------------------------------------------
    prompt_of = rollout_prompts(s, it)  # (B,) the training prompt of each episode
    mine = shard(range(len(prompt_of)), acc.num_processes, acc.process_index)  # this process's episodes
    with s.whole():
        local = sample_and_score(
            s,
            queries=[s.train.queries[prompt_of[j]] for j in mine],
            prompts=[s.train.texts[prompt_of[j]] for j in mine],
            seeds=[mix_seed(c.seed, it, j) for j in mine],
            episodes=mine,
            timings=timings,
        )
    # 3. every process gets the whole batch ---------------------------------------------------------------
    r = gather_rollout(local, acc, s.tokenizer.pad_token_id)
    clock.mark("rollout")
    # 4. rewards with the KL penalty ---------------------------------------------------------------------
    mask = r.mask.float()  # (B, R)
    rewards, non_score_reward, kl = kl_penalised_rewards(
        r.scores, r.logprobs, r.ref_logprobs, mask, s.kl_ctl.value
    )
    # 5. advantages and returns ----------------------------------------------------------------------------
    advantages, returns = gae(rewards, r.values, mask, c.gamma, c.lam)  # (B, R) each
    if c.whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    # 6. PPO epochs over minibatches -----------------------------------------------------------------------
    sums = ppo_epochs(s, r, advantages, returns, it, step)
    clock.mark("train")
    # 7. the KL controller --------------------------------------------------------------------------------
    mean_kl = kl.sum(-1).mean().item()  # per episode, summed over its tokens
    s.kl_ctl.update(mean_kl, c.rollout_batch_size)

    metrics = iteration_metrics(s, r, sums, non_score_reward, mean_kl)
    metrics.update({f"time/{k}": v for k, v in timings.items()})
    metrics.update({f"time/{k}": v for k, v in clock.timings(total="iteration").items()})
    return metrics, r, prompt_of


def rollout_prompts(s: PPOSetup, it: int) -> list[int]:
    """The training prompt of each of iteration `it`'s episodes: the it-th batch of seeded per-epoch
    permutations."""
    per_epoch = len(s.train.queries) // s.config.rollout_batch_size
    epoch, i = divmod(it, per_epoch)
    return epoch_batches(len(s.train.queries), s.config.rollout_batch_size, s.config.seed, epoch)[i]


def ppo_epochs(
    s: PPOSetup, r: Rollout, advantages: torch.Tensor, returns: torch.Tensor, it: int, step: int
) -> dict[str, float]:
    """config.epochs passes over the rollout in seeded minibatches, one optimizer step each."""
    c = s.config
    sums: dict[str, float] = {}
    for ppo_epoch in range(c.epochs):
        g = torch.Generator().manual_seed(mix_seed(c.seed, it, ppo_epoch))
        perm = torch.randperm(c.rollout_batch_size, generator=g)  # (B,)
        for k in range(c.minibatches):
            mb = perm[k * c.batch_size : (k + 1) * c.batch_size].tolist()
            ptx = [s.ptx_train[x] for x in ptx_batch_rows(step, len(s.ptx_train), s.ptx_batch, c)]
            add_sums(sums, ppo_update(s, r, advantages, returns, mb, ptx))
            step += 1
    return reduce_sums(s.accelerator, sums)


def iteration_metrics(
    s: PPOSetup, r: Rollout, sums: dict[str, float], non_score_reward: torch.Tensor, mean_kl: float
) -> dict[str, float]:
    updates = s.steps_per_iteration * s.accelerator.num_processes  # grad norms were summed over both
    metrics = {
        "objective/scores": r.scores.mean().item(),
        "objective/raw_scores": r.raw_scores.mean().item(),
        "objective/kl": mean_kl,
        "objective/kl_coef": s.kl_ctl.value,
        "objective/non_score_reward": non_score_reward.sum(-1).mean().item(),
        "objective/rlhf_reward": (r.scores + non_score_reward.sum(-1)).mean().item(),
        "losses/policy": sums["pg_loss"] / sums["tokens"],
        "losses/value": sums["vf_loss"] / sums["tokens"],
        "policy/clipfrac": sums["pg_clipped"] / sums["tokens"],
        "policy/approxkl": sums["approxkl"] / sums["tokens"],
        "policy/entropy": sums["entropy"] / sums["tokens"],
        "policy/grad_norm": sums["policy_grad_norm"] / updates,
        "value/clipfrac": sums["vf_clipped"] / sums["tokens"],
        "value/grad_norm": sums["value_grad_norm"] / updates,
        "response/length": r.mask.float().sum(-1).mean().item(),
        "response/width": float(r.response.shape[1]),
        "response/eos_fraction": r.has_eos.float().mean().item(),
        "train/lr": s.scheduler.get_last_lr()[0],
    }
    if "ptx_tokens" in sums:
        metrics["ptx/loss"] = sums["ptx_nll"] / max(sums["ptx_tokens"], 1)
    return metrics


# ---------------------------------------------------------------------------------------------------------
# 6. one PPO minibatch update
# ---------------------------------------------------------------------------------------------------------
def ppo_update(
    s: PPOSetup,
    r: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mb: list[int],
    ptx_examples: list[Example],
) -> dict[str, float]:
    """One optimizer step of the policy and the value model on global minibatch rows `mb`.

    Every process holds the whole rollout, takes every world-th row of the minibatch, and normalises the
    losses by the global token counts, so the step is the same for any number of processes. Sharded, every
    process runs as many forward and backward passes as the others (each gathers from all of them): its rows
    in passes of `micro` in order, not by length, and stand-in PPO-ptx passes where its share is shorter.
    """
    c, acc = s.config, s.accelerator
    policy, value_model = s.policy, s.value_model
    world, rank = acc.num_processes, acc.process_index
    policy.train()
    value_model.train()
    micro = micro_batch_size(c, world)
    mask = r.mask.float()  # (B, R)
    norm = mask[mb].sum().item()  # response tokens in the global minibatch
    mine = mb[rank::world]
    if s.sharded:
        micros = [mine[i : i + micro] for i in range(0, len(mine), micro)]
    else:  # passes of rows of similar length
        lengths = (r.query_mask[mine].sum(-1) + r.mask[mine].sum(-1)).tolist()
        micros = [[mine[i] for i in g] for g in length_groups(lengths, micro)]
    ptx_norm = float(sum(len(e.input_ids) - 1 for e in ptx_examples))  # their target tokens
    ptx_mine = ptx_examples[rank::world]
    ptx_micros = [ptx_mine[i : i + micro] for i in range(0, len(ptx_mine), micro)]
    if s.sharded:  # as many passes as the largest share needs; an empty one is a stand-in (eval_batches)
        largest = -(-len(ptx_examples) // world)  # ceil
        ptx_micros += [[] for _ in range(-(-largest // micro) - len(ptx_micros))]

    def autocast() -> contextlib.AbstractContextManager[None]:  # prepared models autocast their own forward
        return acc.autocast() if s.sharded else contextlib.nullcontext()

    sums: dict[str, float] = {}

    for j, rows in enumerate(micros):
        last = j == len(micros) - 1
        # sync gradients on each model's last backward only
        with (
            gradient_sync(acc, value_model, last),
            gradient_sync(acc, policy, last and not ptx_micros),
        ):
            ids, attn, p, n = r.trimmed(rows)  # (b, p + n)
            with autocast():
                logits = response_logits(policy, ids, attn, n)  # (b, n, V)
                new_values = values(value_model, ids, attn)[:, p - 1 : p + n - 1]  # (b, n)
            logits = logits.float() / c.temperature  # (b, n, V)
            new_logprobs = token_logprobs(logits, r.response[rows, :n])  # (b, n)
            m = mask[rows, :n]  # (b, n)
            pg_loss, pg_stats = policy_loss(
                new_logprobs, r.logprobs[rows, :n], advantages[rows, :n], m, c.cliprange, norm
            )
            vf_loss, vf_stats = value_loss(
                new_values, r.values[rows, :n], returns[rows, :n], m, c.cliprange_value, norm
            )
            acc.backward((pg_loss + vf_loss) * world)
        with torch.no_grad():
            entropy = (entropy_from_logits(logits) * m).sum().item()
        add_sums(
            sums,
            {
                "pg_loss": pg_loss.item() * norm,
                "vf_loss": vf_loss.item() * norm,
                "pg_clipped": pg_stats["clipped"],
                "vf_clipped": vf_stats["clipped"],
                "approxkl": pg_stats["approxkl"],
                "entropy": entropy,
                "tokens": m.sum().item(),
            },
        )

    # PPO-ptx: γ · language-model loss on pretraining text, added to the policy's objective
    if ptx_examples:  # every process reports the keys, also one whose share of the batch is empty
        add_sums(sums, {"ptx_nll": 0.0, "ptx_tokens": 0.0})
    for j, examples in enumerate(ptx_micros):
        with gradient_sync(acc, policy, j == len(ptx_micros) - 1):
            with autocast():
                nll, n = batch_nll(
                    policy, examples or ptx_examples[:1], s.tokenizer.pad_token_id, acc.device, s.sharded
                )
            acc.backward(c.ptx_coef * nll / ptx_norm * world * (1.0 if examples else 0.0))
        if examples:
            add_sums(sums, {"ptx_nll": nll.item(), "ptx_tokens": n})

    if s.sharded:  # fp16's loss scaling is refused with sharding: nothing to unscale
        policy_norm, value_norm = (clip_grad_norm(acc, m, c.max_grad_norm) for m in (policy, value_model))
    else:
        policy_norm, value_norm = clip_grad_norms(acc, [policy, value_model], c.max_grad_norm)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    add_sums(sums, {"policy_grad_norm": policy_norm, "value_grad_norm": value_norm})
    return sums


def ptx_batch_rows(step: int, n: int, ptx_batch: int, config: PPOConfig) -> list[int]:
    """Pretraining sequences for optimizer step `step`: consecutive slices of seeded per-epoch permutations,
    a function of the step alone (so a resumed run reads the same text)."""
    if n == 0 or config.ptx_coef <= 0:
        return []
    rows = []
    for pos in range(step * ptx_batch, (step + 1) * ptx_batch):
        epoch, i = divmod(pos, n)
        rows.append(_ptx_permutation(n, config.seed, epoch)[i])
    return rows


@functools.lru_cache(maxsize=2)
def _ptx_permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(mix_seed(seed, 0x9742, epoch))
    return torch.randperm(n, generator=g).tolist()


# ---------------------------------------------------------------------------------------------------------
# evaluation on held-out prompts: the same prompts and seeds before, during and after training
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(s: PPOSetup, tag: str) -> dict[str, float]:
    """Mean score, KL and length of the policy's answers to the held-out prompts (and the pretraining loss
    when there is pretraining text); the answers go to eval_samples.jsonl."""
    c, acc = s.config, s.accelerator
    mine = shard(range(len(s.val.queries)), acc.num_processes, acc.process_index)
    totals = torch.zeros(5, dtype=torch.float64, device=acc.device)  # score, raw score, kl, length, count
    samples = []
    with s.whole():  # this process's shard of the prompts may be the shorter one
        for start in range(0, len(mine), c.forward_batch_size):
            rows = mine[start : start + c.forward_batch_size]
            r = sample_and_score(
                s,
                queries=[s.val.queries[i] for i in rows],
                prompts=[s.val.texts[i] for i in rows],
                seeds=[mix_seed(c.seed, EVAL_STREAM, i) for i in rows],
                episodes=rows,
                with_values=False,
            )
            kl = ((r.logprobs - r.ref_logprobs) * r.mask).sum(-1)  # (b,)
            totals += torch.tensor(
                [
                    r.scores.sum().item(),
                    r.raw_scores.sum().item(),
                    kl.sum().item(),
                    r.mask.sum().item(),
                    len(rows),
                ],
                dtype=torch.float64,
                device=totals.device,
            )
            texts = decode_responses(s.tokenizer, r.response, s.stops)
            samples += [
                {"prompt": s.val.texts[i], "response": t, "score": sc, "kl": k}
                for i, t, sc, k in zip(rows, texts, r.scores.tolist(), kl.tolist(), strict=True)
            ]
    if acc.num_processes > 1:
        totals = acc.reduce(totals, "sum")
        samples = gather_object(samples)
    s.run.log_many([{"eval": tag, **x} for x in samples], "eval_samples.jsonl")
    n = totals[4].item()
    metrics = {}
    if n > 0:  # eval_prompts=0, or no held-out prompts at all: no reward metrics
        metrics = {
            "score_mean": totals[0].item() / n,
            "raw_score_mean": totals[1].item() / n,
            "kl_mean": totals[2].item() / n,
            "length_mean": totals[3].item() / n,
        }
    if s.ptx_val:
        metrics["pretrain_loss"] = eval_loss(s.unwrapped_policy, s.ptx_val, s.tokenizer.pad_token_id, acc)
    return metrics


def consider_keeping(s: PPOSetup, state: dict[str, Any], iteration: int, metrics: dict[str, float]) -> None:
    """Checkpoint choice: save the policy as OUT/kept when its held-out reward is the best so far within
    kl_budget (keep=best)."""
    c = s.config
    if c.keep != "best" or "score_mean" not in metrics:
        return
    if c.kl_budget is not None and metrics["kl_mean"] > c.kl_budget:
        return
    kept = state.get("kept")
    if kept is not None and metrics["score_mean"] <= kept["score_mean"]:
        return
    s.run.save_model(s.policy, s.tokenizer, "kept", s.meta.model_copy(update={"iteration": iteration}))
    state["kept"] = {
        "iteration": iteration,
        "score_mean": metrics["score_mean"],
        "kl_mean": metrics["kl_mean"],
    }


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
@stage
def run_ppo(
    *,
    policy_dir: str | Path,
    reward_dir: str | Path,
    prompts: Any,
    out: str | Path,
    config: PPOConfig,
    reference_dir: str | Path | None = None,
    val_prompts: Any = None,
    pretrain_data: Any = None,
    resume: bool = False,
    changed_keys: set[str] | None = None,
    reward_fn: RewardFn | None = None,
) -> dict[str, Any]:
    """PPO (PPO-ptx when config.ptx_coef > 0) from the SFT policy against the reward model in `reward_dir`.

    `reward_fn(prompts, responses) -> scores`, a Python function, replaces the reward model's score when
    given (a programmatic or oracle reward); the value model still starts from `reward_dir`."""
    t_start = time.perf_counter()
    s = setup_ppo(
        policy_dir=policy_dir,
        reward_dir=reward_dir,
        prompts=prompts,
        out=out,
        config=config,
        reference_dir=reference_dir,
        val_prompts=val_prompts,
        pretrain_data=pretrain_data,
        resume=resume,
        changed_keys=changed_keys,
        reward_fn=reward_fn,
    )
    return train_ppo(s, t_start)


def train_ppo(s: PPOSetup, t_start: float | None = None) -> dict[str, Any]:
    """The run after its set-up: reward normalisation, the iterations (resumable), the kept policy as
    final/, summary.json. Returns the summary."""
    t_start = time.perf_counter() if t_start is None else t_start
    c, acc, run = s.config, s.accelerator, s.run

    state: dict[str, Any] = {"iteration": 0, "step": 0, "evaluations": []}
    if run.has_checkpoint():
        s.reward_norm = RewardNorm(**run.checkpoint_state()["reward_norm"])
        # the head's offset lives in the value model's config, which the checkpoint's weights do not restore
        scale_reward(acc.unwrap_model(s.value_model), s.reward_norm.gain, s.reward_norm.bias)
        state = run.load_checkpoint()
        s.kl_ctl.value = state["kl_coef"]
    else:
        if c.reward_norm:
            s.reward_norm = normalise_reward(s)
        state["reward_norm"] = asdict(s.reward_norm)
        state["initial"] = evaluate(s, "initial")
        record_evaluation(s, state, 0, state["initial"])

    stop = StopSignal()
    bar = progress(s.iterations, state["iteration"], "ppo", acc)
    try:
        for it in range(state["iteration"], s.iterations):
            metrics, r, prompt_of = ppo_iteration(s, it, state["step"])
            state["step"] += s.steps_per_iteration
            if c.eval_every and (it + 1) % c.eval_every == 0 and it + 1 < s.iterations:
                t = time.perf_counter()
                evaluation = evaluate(s, f"iteration {it + 1}")
                record_evaluation(s, state, it + 1, evaluation)
                metrics.update({f"eval/{k}": v for k, v in evaluation.items()})
                metrics["time/eval_s"] = time.perf_counter() - t
            run.log({"iteration": it + 1, **metrics})
            if c.log_rollouts:
                log_rollouts(s, it + 1, r, prompt_of)
            bar.set_postfix(
                score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}", refresh=False
            )
            bar.update(1)

            state["iteration"], state["kl_coef"] = it + 1, s.kl_ctl.value
            if stop.should_stop(acc):
                run.save_checkpoint(state)
                raise Stopped(f"stopped after iteration {it + 1}/{s.iterations}; continue with --resume")
            if (it + 1) % c.checkpoint_every == 0 and it + 1 < s.iterations:
                run.save_checkpoint(state)
    finally:
        bar.close()
        stop.restore()

    # --- the last evaluation, the kept policy as final/, the summary ------------------------------------------
    last = evaluate(s, "final")
    record_evaluation(s, state, s.iterations, last)
    run.log({"iteration": s.iterations, **{f"eval/{k}": v for k, v in last.items()}})
    kept = state.get("kept")
    if kept is not None and kept["iteration"] != s.iterations:
        if acc.is_main_process:
            shutil.rmtree(run.path / "final", ignore_errors=True)
            os.replace(run.path / "kept", run.path / "final")
        acc.wait_for_everyone()
        final = next(e for e in state["evaluations"] if e["iteration"] == kept["iteration"])
    else:
        run.save_model(s.policy, s.tokenizer, "final", s.meta.model_copy(update={"iteration": s.iterations}))
        final = {"iteration": s.iterations, **last}
    if acc.is_main_process:
        shutil.rmtree(run.path / "kept", ignore_errors=True)
    run.save_model(s.value_model, s.tokenizer, "value", s.meta.model_copy(update={"stage": "ppo-value"}))
    run.remove_checkpoint()
    initial = state["initial"]
    summary = {
        "stage": "ppo-ptx" if c.ptx_coef > 0 else "ppo",
        "kept_iteration": final["iteration"],
        "keep": c.keep,
        "kl_budget": c.kl_budget,
        "reward_norm": state["reward_norm"],
        "initial_score_mean": initial.get("score_mean"),  # None without held-out prompts
        "final_score_mean": final.get("score_mean"),  # the kept policy's, in final/
        "last_score_mean": last.get("score_mean"),  # the last iteration's
        "initial_raw_score_mean": initial.get("raw_score_mean"),
        "final_raw_score_mean": final.get("raw_score_mean"),
        "initial_kl_mean": initial.get("kl_mean"),
        "final_kl_mean": final.get("kl_mean"),
        "last_kl_mean": last.get("kl_mean"),
        "final_kl_coef": s.kl_ctl.value,
        "evaluations": state["evaluations"],
        "iterations": s.iterations,
        "optimizer_steps": s.iterations * s.steps_per_iteration,
        "episodes": s.iterations * c.rollout_batch_size,
        "train_prompts": len(s.train.queries),
        "eval_prompts": len(s.val.queries),
        "skipped_too_long": s.skipped_too_long,
        "mixed_precision": acc.mixed_precision,
        "processes": acc.num_processes,
        "sharding": c.sharding if s.sharded else "none",
        "process_state_bytes": local_state_bytes(s.trained, s.optimizer),  # the main process's
        "time_s": time.perf_counter() - t_start,
    }
    if s.ptx_val:
        summary["pretrain_loss_initial"] = initial["pretrain_loss"]
        summary["pretrain_loss_final"] = final["pretrain_loss"]
    run.write_summary(summary)
    finish(acc)
    return summary


def record_evaluation(s: PPOSetup, state: dict[str, Any], iteration: int, metrics: dict[str, float]) -> None:
    state["evaluations"].append({"iteration": iteration, **metrics})
    consider_keeping(s, state, iteration, metrics)


def log_rollouts(s: PPOSetup, iteration: int, r: Rollout, prompt_of: list[int]) -> None:
    """Every episode of the iteration: prompt, response, normalised and raw score, KL to the SFT model."""
    if not s.accelerator.is_main_process:
        return
    texts = decode_responses(s.tokenizer, r.response, s.stops)
    kl = ((r.logprobs - r.ref_logprobs) * r.mask).sum(-1)  # (B,)
    rows = zip(r.episode.tolist(), texts, r.scores.tolist(), r.raw_scores.tolist(), kl.tolist(), strict=True)
    s.run.log_many(
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
