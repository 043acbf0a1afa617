"""`instructrl ppo`: PPO / PPO-ptx against a reward model (InstructGPT step 3).

Every iteration, as in the paper (Ouyang et al. 2022, section 3.5) and Ziegler et al. 2019:
  1. sample prompts and generate responses with the policy (batched, KV cache, one seed per episode)
  2. forward passes: log-probs of the policy and of the frozen SFT reference, values, reward-model scores
  3. per-token rewards: the RM score at the end of the response minus β·(log π_RL − log π_SFT) on every token
  4. gather every process's episodes, so whitening and minibatches are over the global batch
  5. advantages (GAE) and returns; whiten the advantages
  6. PPO epochs over minibatches: clipped policy loss (+ γ·pretraining LM loss for PPO-ptx), clipped value loss
  7. update the KL controller, log
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from instructrl.datasets.io import read_pretrain, read_prompts
from instructrl.datasets.tokenize import Example, prompt_ids, split_by_user, tokenize_texts
from instructrl.errors import UserError
from instructrl.models.generation import decode_responses, generate, left_pad, mix_seed, response_mask
from instructrl.models.loading import (
    context_window,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    read_meta,
)
from instructrl.models.scoring import (
    ScalarHead,
    entropy_from_logits,
    response_logits,
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
from instructrl.sft.train import batch_nll, eval_loss
from instructrl.training.loop import add_sums, reduce_sums
from instructrl.training.optim import make_optimizer
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
)

EVAL_STREAM = 0xE7A1  # seeds of evaluation samples never collide with rollout seeds


RewardFn = Callable[[list[str], list[str]], list[float]]
"""(prompts, responses) -> one score per response: a reward given as a Python function."""


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
    scores: torch.Tensor  # (B,) r(x, y), with the missing-EOS penalty
    has_eos: torch.Tensor  # (B,) bool

    def sequences(self, rows: Any = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.cat([self.query[rows], self.response[rows]], dim=1)  # (b, P + R)
        attn = torch.cat([self.query_mask[rows], self.mask[rows]], dim=1)  # (b, P + R)
        return ids, attn


# ---------------------------------------------------------------------------------------------------------
# 1.-2. generate and score
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_and_score(
    *,
    policy: torch.nn.Module,
    ref_policy: torch.nn.Module,
    value_model: torch.nn.Module | None,
    reward_model: torch.nn.Module,
    queries: list[list[int]],
    seeds: list[int],
    episodes: list[int],
    tokenizer: Any,
    config: PPOConfig,
    accelerator: Accelerator,
    timings: dict[str, float] | None = None,
    reward_fn: RewardFn | None = None,
    prompts: list[str] | None = None,
) -> Rollout:
    """This process's episodes: responses from the policy and every no-grad forward pass PPO needs.
    `reward_fn(prompts, responses)`, when given, scores the responses instead of the reward model."""
    t0 = time.perf_counter()
    device = accelerator.device
    query, query_mask = left_pad(queries, tokenizer.pad_token_id)  # (B, P)
    query, query_mask = query.to(device), query_mask.to(device)
    with accelerator.autocast():
        response = generate(
            policy,
            query,
            query_mask,
            seeds=torch.tensor(seeds, dtype=torch.long),
            max_new_tokens=config.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            temperature=config.temperature,
            top_p=config.top_p,
        )  # (B, R)
    t_generated = time.perf_counter()
    mask = response_mask(response, tokenizer.eos_token_id)  # (B, R)
    response = response.masked_fill(mask == 0, tokenizer.pad_token_id)
    has_eos = ((response == tokenizer.eos_token_id) & (mask == 1)).any(-1)  # (B,)
    P, R = query.shape[1], response.shape[1]
    ids, attn = torch.cat([query, response], 1), torch.cat([query_mask, mask], 1)  # (B, P + R)

    logprobs, ref_logprobs, vals, score_chunks = [], [], [], []
    for s in range(0, len(queries), config.forward_batch_size):
        b = slice(s, s + config.forward_batch_size)
        with accelerator.autocast():
            logits = response_logits(policy, ids[b], attn[b], R) / config.temperature  # (b, R, V)
            logprobs.append(token_logprobs(logits, response[b]))  # (b, R)
            ref_logits = response_logits(ref_policy, ids[b], attn[b], R) / config.temperature
            ref_logprobs.append(token_logprobs(ref_logits, response[b]))  # (b, R)
            if value_model is not None:
                vals.append(values(value_model, ids[b], attn[b])[:, P - 1 : P + R - 1])  # (b, R)
            if reward_fn is None:
                score_chunks.append(score(reward_model, ids[b], attn[b]))  # (b,)
    if reward_fn is None:
        scores = torch.cat(score_chunks)
    else:
        assert prompts is not None and len(prompts) == len(queries)
        given = reward_fn(prompts, decode_responses(tokenizer, response))
        scores = torch.tensor(given, dtype=torch.float, device=device)  # (B,)
    if config.missing_eos_penalty is not None:
        scores = torch.where(has_eos, scores, scores + config.missing_eos_penalty)
    if timings is not None:
        timings["generate_s"] = t_generated - t0
        timings["score_s"] = time.perf_counter() - t_generated
    return Rollout(
        episode=torch.tensor(episodes, device=device),
        query=query,
        query_mask=query_mask,
        response=response,
        mask=mask,
        logprobs=torch.cat(logprobs),
        ref_logprobs=torch.cat(ref_logprobs),
        values=torch.cat(vals) if vals else torch.zeros_like(mask, dtype=torch.float),
        scores=scores,
        has_eos=has_eos,
    )


# ---------------------------------------------------------------------------------------------------------
# 4. gather
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
# evaluation on held-out prompts: the same prompts and seeds before and after training
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_policy(
    *,
    policy,
    ref_policy,
    reward_model,
    queries: list[list[int]],
    prompts: list[str],
    tokenizer,
    config: PPOConfig,
    accelerator: Accelerator,
    reward_fn: RewardFn | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    mine = shard(range(len(queries)), accelerator.num_processes, accelerator.process_index)
    totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # score, kl, length, count
    samples = []
    for s in range(0, len(mine), config.forward_batch_size):
        rows = mine[s : s + config.forward_batch_size]
        r = sample_and_score(
            policy=policy,
            ref_policy=ref_policy,
            value_model=None,
            reward_model=reward_model,
            queries=[queries[i] for i in rows],
            seeds=[mix_seed(config.seed, EVAL_STREAM, i) for i in rows],
            episodes=rows,
            tokenizer=tokenizer,
            config=config,
            accelerator=accelerator,
            reward_fn=reward_fn,
            prompts=[prompts[i] for i in rows],
        )
        kl = ((r.logprobs - r.ref_logprobs) * r.mask).sum(-1)  # (b,)
        totals += torch.tensor(
            [r.scores.sum().item(), kl.sum().item(), r.mask.sum().item(), len(rows)],
            dtype=torch.float64,
            device=totals.device,
        )
        texts = decode_responses(tokenizer, r.response)
        samples += [
            {"prompt": prompts[i], "response": t, "score": sc, "kl": k}
            for i, t, sc, k in zip(rows, texts, r.scores.tolist(), kl.tolist(), strict=True)
        ]
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, "sum")
        samples = gather_object(samples)
    n = totals[3].item()
    if n == 0:  # eval_prompts=0, or no held-out prompts at all
        return {}, samples
    metrics = {
        "score_mean": totals[0].item() / n,
        "kl_mean": totals[1].item() / n,
        "length_mean": totals[2].item() / n,
    }
    return metrics, samples


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
def load_prompt_queries(
    records, tokenizer, config: PPOConfig, what: str
) -> tuple[list[list[int]], list[str], int]:
    """Tokenized prompts that leave room for max_new_tokens; too-long ones are skipped or rejected."""
    queries, texts, skipped = [], [], 0
    limit = config.max_length - config.max_new_tokens
    for i, rec in enumerate(records):
        q = prompt_ids(tokenizer, rec.prompt, config.prompt_template)
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
    return queries, texts, skipped


def check_same_tokenizer(policy_tok, reward_tok, reward_dir) -> None:
    if policy_tok.get_vocab() != reward_tok.get_vocab():
        raise UserError(
            f"{reward_dir}: the reward model's tokenizer differs from the policy's; instructrl scores the "
            f"policy's token ids directly, so train the reward model from the same SFT model"
        )


def run_ppo(
    *,
    policy_dir: str | Path,
    reward_dir: str | Path,
    prompts: Any,
    out: str | Path,
    config: PPOConfig,
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
    changed_keys = changed_keys or set()
    if "prompt_template" not in changed_keys and "prompt_template" in read_meta(policy_dir):
        config.prompt_template = read_meta(policy_dir)["prompt_template"]
    if config.ptx_coef > 0 and pretrain_data is None:
        raise UserError("ptx_coef > 0 (PPO-ptx) needs --pretrain-data text.jsonl")
    config = resolve_config(out, config, resume, changed_keys)
    accelerator = make_accelerator(config)
    world, rank = accelerator.num_processes, accelerator.process_index

    # --- data: prompts, held-out prompts, pretraining text --------------------------------------------------
    tokenizer = load_tokenizer(policy_dir)
    config.max_length = min(config.max_length, context_window(policy_dir) or config.max_length)
    check_same_tokenizer(tokenizer, load_tokenizer(reward_dir), reward_dir)
    records = read_prompts(prompts)
    if val_prompts is not None:
        train_records, val_records = records, read_prompts(val_prompts)
    else:
        train_records, val_records = split_by_user(records, config.val_fraction, config.seed)
    val_records = val_records[: config.eval_prompts]
    train_q, train_texts, skipped = load_prompt_queries(train_records, tokenizer, config, "training")
    val_q, val_texts, val_skipped = load_prompt_queries(val_records, tokenizer, config, "held-out")
    if len(train_q) < config.rollout_batch_size:
        raise UserError(
            f"{len(train_q)} usable prompts are fewer than rollout_batch_size={config.rollout_batch_size}; "
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
    ptx_batch = config.ptx_batch_size or config.batch_size

    # --- models: policy and value are trained; the SFT reference and the reward model are frozen ---------------
    attention = attention_implementation(accelerator)
    policy = load_causal_lm(policy_dir, dropout=False, attn_implementation=attention)
    ref_policy = load_causal_lm(policy_dir, dropout=False, attn_implementation=attention)
    ref_policy = ref_policy.eval().requires_grad_(False).to(accelerator.device)
    reward_model = load_reward_model(reward_dir, attn_implementation=attention)
    reward_model = reward_model.eval().requires_grad_(False).to(accelerator.device)
    value_model = ScalarHead(load_reward_model(reward_dir, attn_implementation=attention))  # starts as the RM

    steps_per_iteration = config.epochs * config.minibatches
    iterations = config.iterations
    if config.max_steps is not None:
        iterations = min(iterations, max(1, config.max_steps // steps_per_iteration))
    total_steps = iterations * steps_per_iteration
    policy_opt, policy_sched = make_optimizer(policy, config, total_steps)
    value_cfg = config.model_copy(update={"lr": config.value_lr or config.lr})
    value_opt, value_sched = make_optimizer(value_model, value_cfg, total_steps)
    policy, value_model, policy_opt, value_opt = accelerator.prepare(
        policy, value_model, policy_opt, value_opt
    )
    accelerator.register_for_checkpointing(policy_sched)
    accelerator.register_for_checkpointing(value_sched)
    unwrapped_policy = accelerator.unwrap_model(policy)

    kl_ctl: FixedKLController | AdaptiveKLController
    if config.kl_target is None:
        kl_ctl = FixedKLController(config.kl_coef)
    else:
        kl_ctl = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)

    run = RunDir(out, accelerator)
    run.start(config)
    meta = {
        "stage": "ppo",
        "prompt_template": config.prompt_template,
        "sft_model": str(policy_dir),
        "reward_model": str(reward_dir),
        "ptx_coef": config.ptx_coef,
    }

    def evaluate(tag: str) -> dict[str, float]:
        metrics, samples = evaluate_policy(
            policy=unwrapped_policy,
            ref_policy=ref_policy,
            reward_model=reward_model,
            queries=val_q,
            prompts=val_texts,
            tokenizer=tokenizer,
            config=config,
            accelerator=accelerator,
            reward_fn=reward_fn,
        )
        if ptx_val:
            metrics["pretrain_loss"] = eval_loss(
                unwrapped_policy, ptx_val, tokenizer.pad_token_id, accelerator
            )
        run.log_many([{"eval": tag, **s} for s in samples], "eval_samples.jsonl")
        return metrics

    state: dict[str, Any] = {"iteration": 0, "step": 0, "kl_coef": kl_ctl.value}
    if run.has_checkpoint():
        state = run.load_checkpoint()
        kl_ctl.value = state["kl_coef"]
    else:
        state["initial"] = evaluate("initial")
        run.log({"iteration": 0, **{f"eval/{k}": v for k, v in state["initial"].items()}})

    stop = StopSignal()
    bar = progress(iterations, state["iteration"], "ppo", accelerator)
    per_epoch = len(train_q) // config.rollout_batch_size
    try:
        for it in range(state["iteration"], iterations):
            t0, timings = time.perf_counter(), dict[str, float]()
            # 1.-2. sample prompts, generate, score -----------------------------------------------------------
            epoch, i = divmod(it, per_epoch)
            batch = epoch_batches(len(train_q), config.rollout_batch_size, config.seed, epoch)[i]
            mine = shard(range(len(batch)), world, rank)  # positions of this process's episodes in the batch
            local = sample_and_score(
                policy=unwrapped_policy,
                ref_policy=ref_policy,
                value_model=value_model,
                reward_model=reward_model,
                queries=[train_q[batch[j]] for j in mine],
                seeds=[mix_seed(config.seed, it, j) for j in mine],
                episodes=mine,
                tokenizer=tokenizer,
                config=config,
                accelerator=accelerator,
                timings=timings,
                reward_fn=reward_fn,
                prompts=[train_texts[batch[j]] for j in mine],
            )
            t_rollout = time.perf_counter()

            # 3.-4. rewards with the KL penalty; every process gets the whole batch --------------------------------
            r = gather_rollout(local, accelerator, tokenizer.pad_token_id)
            rewards, non_score_reward, kl = kl_penalised_rewards(
                r.scores, r.logprobs, r.ref_logprobs, r.mask.float(), kl_ctl.value
            )  # (B, R) each

            # 5. advantages and returns -------------------------------------------------------------------------
            mask = r.mask.float()  # (B, R)
            advantages, returns = gae(rewards, r.values, mask, config.gamma, config.lam)  # (B, R)
            if config.whiten_advantages:
                advantages = masked_whiten(advantages, mask)

            # 6. PPO epochs over minibatches ------------------------------------------------------------------
            sums: dict[str, float] = {}
            policy.train()
            value_model.train()
            for ppo_epoch in range(config.epochs):
                g = torch.Generator().manual_seed(mix_seed(config.seed, it, ppo_epoch))
                perm = torch.randperm(config.rollout_batch_size, generator=g)  # (B,)
                for k in range(config.minibatches):
                    mb = perm[k * config.batch_size : (k + 1) * config.batch_size].tolist()
                    ptx_rows = ptx_batch_rows(state["step"], len(ptx_train), ptx_batch, config)
                    add_sums(
                        sums,
                        ppo_update(
                            r,
                            advantages,
                            returns,
                            mb,
                            [ptx_train[x] for x in ptx_rows],
                            policy=policy,
                            value_model=value_model,
                            optimizers=(policy_opt, value_opt),
                            schedulers=(policy_sched, value_sched),
                            config=config,
                            accelerator=accelerator,
                            pad_id=tokenizer.pad_token_id,
                        ),
                    )
                    state["step"] += 1
            t_train = time.perf_counter()

            # 7. KL controller, logging -----------------------------------------------------------------------
            sums = reduce_sums(accelerator, sums)
            mean_kl = kl.sum(-1).mean().item()  # per episode, summed over its tokens
            kl_ctl.update(mean_kl, config.rollout_batch_size)
            metrics = {
                "iteration": it + 1,
                "objective/scores": r.scores.mean().item(),
                "objective/kl": mean_kl,
                "objective/kl_coef": kl_ctl.value,
                "objective/non_score_reward": non_score_reward.sum(-1).mean().item(),
                "objective/rlhf_reward": (r.scores + non_score_reward.sum(-1)).mean().item(),
                "losses/policy": sums["pg_loss"] / sums["tokens"],
                "losses/value": sums["vf_loss"] / sums["tokens"],
                "policy/clipfrac": sums["pg_clipped"] / sums["tokens"],
                "policy/approxkl": sums["approxkl"] / sums["tokens"],
                "policy/entropy": sums["entropy"] / sums["tokens"],
                "value/clipfrac": sums["vf_clipped"] / sums["tokens"],
                "response/length": mask.sum(-1).mean().item(),
                "response/eos_fraction": r.has_eos.float().mean().item(),
                "train/lr": policy_sched.get_last_lr()[0],
            }
            if sums.get("ptx_tokens"):
                metrics["ptx/loss"] = sums["ptx_nll"] / sums["ptx_tokens"]
            if config.eval_every and (it + 1) % config.eval_every == 0 and it + 1 < iterations:
                metrics.update({f"eval/{k}": v for k, v in evaluate(f"iteration {it + 1}").items()})
            metrics.update(
                {
                    "time/generate_s": timings["generate_s"],
                    "time/score_s": timings["score_s"],
                    "time/rollout_s": t_rollout - t0,
                    "time/train_s": t_train - t_rollout,
                    "time/iteration_s": time.perf_counter() - t0,
                }
            )
            run.log(metrics)
            if config.log_rollouts:
                texts = decode_responses(tokenizer, r.response) if accelerator.is_main_process else []
                run.log_many(
                    [
                        {
                            "iteration": it + 1,
                            "episode": int(e),
                            "prompt": train_texts[batch[int(e)]],
                            "response": t,
                            "score": sc,
                            "kl": k,
                        }
                        for e, t, sc, k in zip(
                            r.episode.tolist(), texts, r.scores.tolist(), kl.sum(-1).tolist(), strict=False
                        )
                    ],
                    "rollouts.jsonl",
                )
            bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{mean_kl:.3f}", refresh=False)
            bar.update(1)

            state["iteration"], state["kl_coef"] = it + 1, kl_ctl.value
            if stop.should_stop(accelerator):
                run.save_checkpoint(state)
                raise Stopped(f"stopped after iteration {it + 1}/{iterations}; continue with --resume")
            if (it + 1) % config.checkpoint_every == 0 and it + 1 < iterations:
                run.save_checkpoint(state)
    finally:
        bar.close()
        stop.restore()

    # --- final evaluation on the same held-out prompts and seeds, and the checkpoints ----------------------
    final = evaluate("final")
    run.log({"iteration": iterations, **{f"eval/{k}": v for k, v in final.items()}})
    run.save_model(policy, tokenizer, "final", meta)
    run.save_model(value_model, tokenizer, "value", {**meta, "stage": "ppo-value"})
    run.remove_checkpoint()
    initial = state["initial"]
    summary = {
        "stage": "ppo-ptx" if config.ptx_coef > 0 else "ppo",
        "initial_score_mean": initial.get("score_mean"),  # None without held-out prompts
        "final_score_mean": final.get("score_mean"),
        "initial_kl_mean": initial.get("kl_mean"),
        "final_kl_mean": final.get("kl_mean"),
        "final_kl_coef": kl_ctl.value,
        "iterations": iterations,
        "optimizer_steps": total_steps,
        "episodes": iterations * config.rollout_batch_size,
        "train_prompts": len(train_q),
        "eval_prompts": len(val_q),
        "skipped_too_long": skipped + val_skipped,
        "mixed_precision": accelerator.mixed_precision,
        "processes": world,
        "time_s": time.perf_counter() - t_start,
    }
    if ptx_val:
        summary["pretrain_loss_initial"] = initial["pretrain_loss"]
        summary["pretrain_loss_final"] = final["pretrain_loss"]
    run.write_summary(summary)
    finish(accelerator)
    return summary


# ---------------------------------------------------------------------------------------------------------
# 6. one PPO minibatch update
# ---------------------------------------------------------------------------------------------------------
def ppo_update(
    r: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mb: list[int],
    ptx_examples: list[Example],
    *,
    policy,
    value_model,
    optimizers,
    schedulers,
    config: PPOConfig,
    accelerator: Accelerator,
    pad_id: int,
) -> dict[str, float]:
    """One optimizer step of the policy and the value model on global minibatch rows `mb`.

    Every process holds the whole rollout, takes every world-th row of the minibatch, and normalises the
    losses by the global token counts, so the step is the same for any number of processes.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    micro = micro_batch_size(config, world)
    mask = r.mask.float()  # (B, R)
    P, R = r.query.shape[1], r.response.shape[1]
    norm = mask[mb].sum().item()  # response tokens in the global minibatch
    mine = mb[rank::world]
    micros = [mine[s : s + micro] for s in range(0, len(mine), micro)]
    ptx_norm = float(sum(len(e.input_ids) - 1 for e in ptx_examples))  # their target tokens
    ptx_mine = ptx_examples[rank::world]
    ptx_micros = [ptx_mine[s : s + micro] for s in range(0, len(ptx_mine), micro)]
    sums: dict[str, float] = {}

    for j, rows in enumerate(micros):
        last = j == len(micros) - 1
        with contextlib.ExitStack() as ctx:  # sync gradients on each model's last backward only
            if not last:
                ctx.enter_context(accelerator.no_sync(value_model))
            if not (last and not ptx_micros):
                ctx.enter_context(accelerator.no_sync(policy))
            ids, attn = r.sequences(rows)  # (b, P + R)
            logits = response_logits(policy, ids, attn, R) / config.temperature  # (b, R, V)
            new_logprobs = token_logprobs(logits, r.response[rows])  # (b, R)
            pg_loss, pg_stats = policy_loss(
                new_logprobs, r.logprobs[rows], advantages[rows], mask[rows], config.cliprange, norm
            )
            new_values = values(value_model, ids, attn)[:, P - 1 : P + R - 1]  # (b, R)
            vf_loss, vf_stats = value_loss(
                new_values, r.values[rows], returns[rows], mask[rows], config.cliprange_value, norm
            )
            accelerator.backward((pg_loss + vf_loss) * world)
        with torch.no_grad():
            entropy = (entropy_from_logits(logits) * mask[rows]).sum().item()
        add_sums(
            sums,
            {
                "pg_loss": pg_loss.item() * norm,
                "vf_loss": vf_loss.item() * norm,
                "pg_clipped": pg_stats["clipped"],
                "vf_clipped": vf_stats["clipped"],
                "approxkl": pg_stats["approxkl"],
                "entropy": entropy,
                "tokens": mask[rows].sum().item(),
            },
        )

    # PPO-ptx: γ · language-model loss on pretraining text, added to the policy's objective
    for j, examples in enumerate(ptx_micros):
        with accelerator.no_sync(policy) if j < len(ptx_micros) - 1 else contextlib.nullcontext():
            nll, n = batch_nll(policy, examples, pad_id, accelerator.device)
            accelerator.backward(config.ptx_coef * nll / ptx_norm * world)
        add_sums(sums, {"ptx_nll": nll.item(), "ptx_tokens": n})

    for model, optimizer, scheduler in zip((policy, value_model), optimizers, schedulers, strict=True):
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
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
