"""Evaluation on held-out prompts (from training users: never the evaluation's), with the same seeds each time
(`evaluate`), and the checkpoint choice it feeds (`KeepBest`): with keep=best the evaluated policy with the
highest mean reward, within `kl_budget`, becomes final/ (checkpoint choice as early stopping: Gao et al. 2022
find the true reward peaks at some KL while the proxy reward keeps rising)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object

from instructrl.models.generation import decode_responses, mix_seed
from instructrl.ppo.rollout import sample_and_score
from instructrl.ppo.setup import PPOSetup
from instructrl.ppo.summary import Evaluation
from instructrl.training.losses import eval_loss
from instructrl.training.runtime import shard

EVAL_STREAM = 0xE7A1  # seeds of evaluation samples never collide with rollout seeds


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
    s.run.dir.log_many([{"eval": tag, **x} for x in samples], "eval_samples.jsonl")
    n = totals[4].item()
    metrics = {}
    if n > 0:  # eval_prompts=0, or no held-out prompts at all: no reward metrics
        metrics = {
            "score_mean": totals[0].item() / n,
            "raw_score_mean": totals[1].item() / n,
            "kl_mean": totals[2].item() / n,
            "length_mean": totals[3].item() / n,
        }
    if s.judge_fn is not None and samples:  # every process judges all answers: the same choice everywhere
        judged = s.judge_fn([x["prompt"] for x in samples], [x["response"] for x in samples])
        metrics["judge_mean"] = sum(judged) / len(judged)
    if s.ptx_val:
        metrics["pretrain_loss"] = eval_loss(s.unwrapped_policy, s.ptx_val, s.tokenizer.pad_token_id, acc)
    return metrics


@dataclass
class KeepBest:
    """Checkpoint choice. `evaluated` after every evaluation notes it and, with keep=best, saves the policy as
    OUT/kept when its held-out reward (its judge's mean where PPO has a judge_fn) is the best so far within
    kl_budget; `finish` after the last one makes the kept policy final/ (the last policy with keep=last, or
    when none was kept)."""

    evaluations: list[Evaluation] = field(default_factory=list)
    """Every evaluation so far, in order, each with its iteration."""
    kept: Evaluation | None = None
    """iteration, score_mean and kl_mean of the policy in OUT/kept."""

    def evaluated(self, s: PPOSetup, iteration: int, metrics: dict[str, float]) -> None:
        self.evaluations.append({"iteration": iteration, **metrics})
        c = s.config
        key = "judge_mean" if s.judge_fn is not None else "score_mean"  # never both: one rule per run
        if c.keep != "best" or key not in metrics:
            return
        if c.kl_budget is not None and metrics["kl_mean"] > c.kl_budget:
            return
        if self.kept is not None and metrics[key] <= self.kept[key]:
            return
        s.run.save("kept", s.policy, s.tokenizer, s.meta.model_copy(update={"iteration": iteration}))
        self.kept = {"iteration": iteration, **{k: metrics[k] for k in ("score_mean", "kl_mean", key)}}

    def finish(self, s: PPOSetup) -> Evaluation:
        """final/ from OUT/kept, or the last policy saved as final/; returns final/'s evaluation."""
        run = s.run
        if self.kept is not None and self.kept["iteration"] != s.iterations:
            run.as_final(run.dir.path / "kept")
            final = next(e for e in self.evaluations if e["iteration"] == self.kept["iteration"])
        else:
            run.save_final(s.policy, s.tokenizer, s.meta.model_copy(update={"iteration": s.iterations}))
            final = self.evaluations[-1]  # the last evaluation's, at iteration s.iterations
        if s.accelerator.is_main_process:
            shutil.rmtree(run.dir.path / "kept", ignore_errors=True)
        return final
