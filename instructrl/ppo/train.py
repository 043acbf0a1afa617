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

Every `eval_every` iterations the policy answers held-out prompts, and with `keep=best` the best of the
evaluated policies becomes final/ (`evaluate.py`). Set-up is in `setup.py`, steps 1-3 in `rollout.py`, step 6
in `update.py`, the math in `core.py`; this file holds the iteration and the run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instructrl.models.generation import mix_seed
from instructrl.models.scoring import scale_reward
from instructrl.ppo.config import PPOConfig
from instructrl.ppo.core import gae, kl_penalised_rewards, masked_whiten
from instructrl.ppo.evaluate import KeepBest, evaluate
from instructrl.ppo.rollout import (
    Clock,
    Rollout,
    gather_rollout,
    log_rollouts,
    normalise_reward,
    rollout_prompts,
    sample_and_score,
)
from instructrl.ppo.setup import PPOSetup, RewardFn, RewardNorm, setup_ppo
from instructrl.ppo.summary import PPOSummary
from instructrl.ppo.update import iteration_metrics, ppo_epochs
from instructrl.training.runtime import Stopped, StopSignal, progress, shard, stage


@dataclass
class TrainState:
    """What the train loop carries from one iteration to the next, and what a checkpoint saves of it
    (trainer_state.json)."""

    iteration: int = 0
    """Iterations done."""
    step: int = 0
    """Optimizer steps done."""
    kl_coef: float | None = None
    """β after the last iteration done (the adaptive KL controller moves it)."""
    reward_norm: RewardNorm = field(default_factory=RewardNorm)
    value_norm: RewardNorm = field(default_factory=RewardNorm)
    """The value model's head's gain and bias (the reward's unless it starts from a model of its own)."""
    initial: dict[str, float] = field(default_factory=dict)
    """The starting policy's evaluation."""
    keep_best: KeepBest = field(default_factory=KeepBest)

    def as_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "step": self.step,
            "kl_coef": self.kl_coef,
            "reward_norm": asdict(self.reward_norm),
            "value_norm": asdict(self.value_norm),
            "initial": self.initial,
            "evaluations": self.keep_best.evaluations,
            "kept": self.keep_best.kept,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(
            iteration=d["iteration"],
            step=d["step"],
            kl_coef=d["kl_coef"],
            reward_norm=RewardNorm(**d["reward_norm"]),
            # checkpoints written before value models of their own: the value model was the reward model
            value_norm=RewardNorm(**d.get("value_norm", d["reward_norm"])),
            initial=d["initial"],
            keep_best=KeepBest(evaluations=d["evaluations"], kept=d.get("kept")),
        )


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
    judge_fn: RewardFn | None = None,
    value_dir: str | Path | None = None,
) -> dict[str, Any]:
    """PPO (PPO-ptx when config.ptx_coef > 0) from the SFT policy against the reward model in `reward_dir`.

    `reward_fn(prompts, responses) -> scores`, a Python function, replaces the reward model's score when
    given (a programmatic or oracle reward); the value model still starts from `reward_dir`.
    `judge_fn(prompts, responses) -> scores` scores the held-out answers for keep=best instead of the
    reward model being optimised (people's judgements, another reward model)."""
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
        judge_fn=judge_fn,
        value_dir=value_dir,
    )
    return train_ppo(s)


def train_ppo(s: PPOSetup) -> dict[str, Any]:
    """The run after its set-up: reward normalisation, the iterations (resumable), the kept policy as
    final/, summary.json. Returns the summary as summary.json holds it (`PPOSummary.read` types it)."""
    c, acc, run_dir = s.config, s.accelerator, s.run.dir

    if run_dir.has_checkpoint():
        saved = TrainState.from_dict(run_dir.checkpoint_state())
        s.reward_norm, s.value_norm = saved.reward_norm, saved.value_norm
        # the head's offset lives in the value model's config, which the checkpoint's weights do not restore
        scale_reward(acc.unwrap_model(s.value_model), s.value_norm.gain, s.value_norm.bias)
        state = TrainState.from_dict(run_dir.load_checkpoint())
        assert state.kl_coef is not None, "a checkpoint is saved after an iteration, with its β"
        s.kl_ctl.value = state.kl_coef
    else:
        if c.reward_norm or s.value_apart:
            s.reward_norm, s.value_norm = normalise_reward(s)
        state = TrainState(reward_norm=s.reward_norm, value_norm=s.value_norm, initial=evaluate(s, "initial"))
        state.keep_best.evaluated(s, 0, state.initial)

    stop = StopSignal()
    bar = progress(s.iterations, state.iteration, "ppo", acc)
    try:
        for it in range(state.iteration, s.iterations):
            metrics, r, prompt_of = ppo_iteration(s, it, state.step)
            state.step += s.steps_per_iteration
            if c.eval_every and (it + 1) % c.eval_every == 0 and it + 1 < s.iterations:
                t = time.perf_counter()
                evaluation = evaluate(s, f"iteration {it + 1}")
                state.keep_best.evaluated(s, it + 1, evaluation)
                metrics.update({f"eval/{k}": v for k, v in evaluation.items()})
                metrics["time/eval_s"] = time.perf_counter() - t
            run_dir.log({"iteration": it + 1, **metrics})
            if c.log_rollouts:
                log_rollouts(s, it + 1, r, prompt_of)
            bar.set_postfix(
                score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}", refresh=False
            )
            bar.update(1)

            state.iteration, state.kl_coef = it + 1, s.kl_ctl.value
            if stop.should_stop(acc):
                run_dir.save_checkpoint(state.as_dict())
                raise Stopped(f"stopped after iteration {it + 1}/{s.iterations}; continue with --resume")
            if (it + 1) % c.checkpoint_every == 0 and it + 1 < s.iterations:
                run_dir.save_checkpoint(state.as_dict())
    finally:
        bar.close()
        stop.restore()

    # --- the last evaluation, the kept policy as final/, the summary ------------------------------------------
    last = evaluate(s, "final")
    state.keep_best.evaluated(s, s.iterations, last)
    run_dir.log({"iteration": s.iterations, **{f"eval/{k}": v for k, v in last.items()}})
    final = state.keep_best.finish(s)
    s.run.save("value", s.value_model, s.tokenizer, s.meta.model_copy(update={"stage": "ppo-value"}))
    initial = state.initial
    summary = PPOSummary(
        stage="ppo-ptx" if c.ptx_coef > 0 else "ppo",
        kept_iteration=int(final["iteration"]),
        keep=c.keep,
        kl_budget=c.kl_budget,
        reward_norm=asdict(state.reward_norm),
        value_norm=asdict(state.value_norm),
        initial_score_mean=initial.get("score_mean"),  # None without held-out prompts
        final_score_mean=final.get("score_mean"),  # the kept policy's, in final/
        last_score_mean=last.get("score_mean"),  # the last iteration's
        initial_raw_score_mean=initial.get("raw_score_mean"),
        final_raw_score_mean=final.get("raw_score_mean"),
        initial_kl_mean=initial.get("kl_mean"),
        final_kl_mean=final.get("kl_mean"),
        last_kl_mean=last.get("kl_mean"),
        final_kl_coef=s.kl_ctl.value,
        evaluations=state.keep_best.evaluations,
        iterations=s.iterations,
        optimizer_steps=s.iterations * s.steps_per_iteration,
        episodes=s.iterations * c.rollout_batch_size,
        train_prompts=len(s.train.queries),
        eval_prompts=len(s.val.queries),
        skipped_too_long=s.skipped_too_long,
        pretrain_loss_initial=initial["pretrain_loss"] if s.ptx_val else None,
        pretrain_loss_final=final["pretrain_loss"] if s.ptx_val else None,
        **s.run.facts(),
    )
    return s.run.finish(summary)
