"""One round of the loop ChatGPT ran on InstructGPT's method: rankings of the current policy's answers ->
the reward model retrained on every round's rankings -> PPO continued, with its KL still measured to SFT.

A round lives in one directory:

    OUT/data/comparisons.jsonl   every round's comparisons so far, each tagged with its round
    OUT/rm/                      the reward model (round 1: from SFT; later: continued from the last RM)
    OUT/ppo/                     the policy (round 1: from SFT; later: continued from the last policy)
    OUT/eval/answers.jsonl       A/B pairs of the new policy against SFT on held-out prompts (optional)
    OUT/round.json               what the round read and made (`RoundSummary`), read by the next round

With a labeling database, the round ends by starting the next one: a generation job of round N + 1 in the
labeling app, its K candidates split between the new policy and the one before it, run in this process so
that the ranking tasks are waiting when the command returns.

Who ranks is not this module's business: a team exports rankings from the labeling app
(`instructrl label export`), the demo passes its simulated labelers' rankings. The steps are resumable:
a finished step (its summary.json written) is not run again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel

from instructrl.datasets.io import atomic_write_text, read_comparisons, write_jsonl
from instructrl.datasets.records import ABPair, Message, prompt_text
from instructrl.errors import UserError
from instructrl.pipeline.config import RoundConfig
from instructrl.ppo.summary import PPOSummary
from instructrl.reward.summary import RMSummary
from instructrl.training.summary import read_model_in

if TYPE_CHECKING:
    from instructrl.labeling.services.rounds import Split
    from instructrl.ppo.setup import RewardFn

ROUND_FILE = "round.json"


class RoundSummary(BaseModel):
    """OUT/round.json: what a round read and made, the contract between one round and the next. Written by
    `run_round` alone (`write`); read by the next round, the pipeline and the demo (`read`)."""

    round: int
    sft: str
    """The SFT model: the first reward model's start and every round's KL reference."""
    reward_model: str
    policy: str
    comparisons: str
    """Every round's training comparisons up to this one (JSONL, each with its round)."""
    previous: str | None = None
    """The previous round's directory (None in round 1)."""
    rm_accuracy_before: float | None = None
    """The previous round's RM on this round's validation rankings (the policy it is about to train)."""
    rm_accuracy_after: float | None = None
    """This round's RM on the same rankings."""
    ppo: dict[str, Any] = {}
    """PPO's held-out reward and KL to SFT: initial (the previous policy) and final (the kept policy)."""
    answers: str | None = None
    next_job: dict[str, Any] | None = None
    """The labeling app's generation job for the next round: id, round, checkpoints, ranking tasks made."""

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """A finished round's record; `path` is its directory or its round.json."""
        missing = "{path}: not a round directory (no round.json); pass what `instructrl round --out` wrote"
        return read_model_in(cls, path, ROUND_FILE, missing)

    def write(self, path: str | Path) -> None:
        """OUT/round.json, into the round's directory `path`."""
        atomic_write_text(Path(path) / ROUND_FILE, self.model_dump_json(indent=2))


def resumable(run: Path) -> bool:
    """Whether a stage's directory holds a checkpoint to continue from (`--resume`). One stopped before its
    first checkpoint holds only its start (config.yaml, a few metrics lines): it is removed, and the stage
    starts over as it would have, rather than appending a second start to its logs."""
    if any((run / d / "trainer_state.json").is_file() for d in ("checkpoint", "checkpoint.old")):
        return True
    if run.is_dir() and not (run / "summary.json").exists():
        shutil.rmtree(run)
    return False


def accumulate_comparisons(out: Path, round_: int, new: Any, earlier: str | None) -> Path:
    """Every round's comparisons in one file: the earlier rounds' as they were, the new ones tagged with this
    round (a ranking without a round is this round's: the app's exports of older versions carry none)."""
    rows = read_comparisons(earlier) if earlier is not None else []
    fresh = [
        c if c.round is not None else c.model_copy(update={"round": round_}) for c in read_comparisons(new)
    ]
    later = [c for c in fresh if c.round is not None and c.round > round_]
    if later:
        raise UserError(
            f"{later[0].where('a comparison')}: is from round {later[0].round}, after this round ({round_}); "
            f"export the rounds up to {round_} (`instructrl label export --round N`)"
        )
    file = out / "data" / "comparisons.jsonl"
    write_jsonl(file, [*rows, *fresh])
    return file


def retrain_reward_model(
    *,
    out: Path,
    round_: int,
    sft: str | Path,
    comparisons: Path,
    config: RoundConfig,
    previous_rm: str | Path | None = None,
    val_data: Any = None,
    norm_data: Any = None,
    resume: bool = False,
) -> tuple[RMSummary, float | None, float | None]:
    """Step 1 of a round: the reward model, from SFT in round 1, continued from `previous_rm` later. Returns
    its summary and, with `val_data` (this round's held-out rankings), the accuracy there of the RM before
    (the previous round's; None in round 1) and after (this one's); else None, None."""
    from instructrl.evaluation.models import rm_accuracy
    from instructrl.reward.train import run_rm

    run = out / "rm"
    if (run / "summary.json").is_file():  # done earlier
        summary = RMSummary.read(run)
    else:
        summary = RMSummary.model_validate(
            run_rm(
                model_dir=None if previous_rm else sft,
                init_dir=previous_rm,
                data=comparisons,
                val_data=val_data,
                norm_data=norm_data,
                out=run,
                config=config.rm.model_copy(),
                resume=resume and resumable(run),
                changed_keys=config.changed.get("rm", set()),
            )
        )
    if val_data is None:
        return summary, None, None
    before = rm_accuracy(previous_rm, read_comparisons(val_data)) if previous_rm is not None else None
    return summary, before, summary.val_accuracy


def continue_policy(
    *,
    out: Path,
    sft: str | Path,
    reward_model: str | Path,
    prompts: Any,
    config: RoundConfig,
    previous_policy: str | Path | None = None,
    val_prompts: Any = None,
    pretrain_data: Any = None,
    resume: bool = False,
    reward_fn: RewardFn | None = None,
    judge_fn: RewardFn | None = None,
) -> PPOSummary:
    """Step 2 of a round: PPO from SFT in round 1, continued from `previous_policy` later; the KL is always
    measured to SFT, so it adds up over the rounds. `reward_fn`, `judge_fn`: run_ppo's."""
    from instructrl.ppo.train import run_ppo

    run = out / "ppo"
    if (run / "summary.json").is_file():
        return PPOSummary.read(run)
    summary = run_ppo(
        policy_dir=previous_policy or sft,
        reference_dir=sft,
        reward_dir=reward_model,
        prompts=prompts,
        val_prompts=val_prompts,
        pretrain_data=pretrain_data,
        out=run,
        config=config.ppo.model_copy(),
        resume=resume and resumable(run),
        changed_keys=config.changed.get("ppo", set()),
        reward_fn=reward_fn,
        judge_fn=judge_fn,
    )
    return PPOSummary.model_validate(summary)


def write_ab_answers(
    out: Path, sft: str | Path, policy: str | Path, prompts: list[str | list[Message]], seed: int
) -> Path:
    """Step 3: the new policy's and SFT's answers to held-out prompts (plain or conversations) as A/B pairs
    for the labeling app, which knows a prompt by its text."""
    from instructrl.evaluation.models import generate_answers

    new, base = (generate_answers(d, prompts, seed=seed) for d in (policy, sft))
    file = out / "eval" / "answers.jsonl"
    write_jsonl(
        file,
        [
            ABPair(prompt=p, model_a="policy", response_a=a, model_b="sft", response_b=b)
            for p, a, b in zip(map(prompt_text, prompts), new, base, strict=True)
        ],
    )
    return file


NEXT_JOB_FLAGS = {"database_url": "--db", "k": "--next-k", "limit": "--next-limit"}
"""`instructrl round`'s flag for each argument of the labeling app's `check_ready`."""


def check_next_job(*, database_url: str, k: int, limit: int, split: str) -> None:
    """Before any training: the labeling database answers and holds prompts, and K is one it accepts."""
    from instructrl.labeling.services.rounds import NotReady, check_ready

    try:
        check_ready(database_url=database_url, k=k, limit=limit)
    except NotReady as e:
        raise UserError(f"{NEXT_JOB_FLAGS[e.argument]} {e.value}: {e.reason}") from None


def start_next_job(
    *,
    database_url: str,
    round_: int,
    policy: str | Path,
    previous_policy: str | Path,
    k: int,
    limit: int,
    split: Split,
    seed: int = 0,
) -> dict[str, Any]:
    """Step 4: the labeling app's generation job for round `round_ + 1`, its K candidates split between this
    round's policy and the previous one (the paper's comparisons mixed policies), run here and now."""
    from dataclasses import asdict

    from instructrl.labeling.services.rounds import Checkpoint, GenerationFailed, start_round_generation

    names = (f"round{round_}", "sft" if round_ == 1 else f"round{round_ - 1}")
    try:
        job = start_round_generation(
            database_url=database_url,
            round=round_ + 1,
            checkpoints=[Checkpoint(policy, names[0]), Checkpoint(previous_policy, names[1])],
            k=k,
            limit=limit,
            split=split,
            seed=seed,
        )
    except GenerationFailed as e:
        raise UserError(f"the next round's generation job {e.job_id} failed: {e.error}") from None
    return asdict(job)


def run_round(
    *,
    out: str | Path,
    data: Any,
    prompts: Any,
    config: RoundConfig,
    sft: str | Path | None = None,
    previous: str | Path | None = None,
    val_data: Any = None,
    val_prompts: Any = None,
    norm_data: Any = None,
    pretrain_data: Any = None,
    eval_prompts: list[str | list[Message]] | None = None,
    next_job: dict[str, Any] | None = None,
    resume: bool = False,
    reward_fn: RewardFn | None = None,
    judge_fn: RewardFn | None = None,
) -> RoundSummary:
    """One round: round 1 from the SFT model (`sft`), round N + 1 from round N's directory (`previous`).
    `data`: this round's new comparisons (earlier rounds' come from `previous`). `next_job`: the keyword
    arguments of `start_next_job` but the policies (database_url, k, limit, split), to start the next round.
    `reward_fn`, `judge_fn`: PPO's (run_ppo), for a programmatic reward or checkpoint choice."""
    out = Path(out)
    if (sft is None) == (previous is None):
        raise UserError(
            "give the SFT model for round 1 (--sft SFT_DIR) or the previous round (--previous DIR)"
        )
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(f"{out}: already holds a round; pass --resume to continue it, or choose a new --out")
    if next_job is not None:
        check_next_job(**{k: next_job[k] for k in ("database_url", "k", "limit", "split")})
    last = RoundSummary.read(previous) if previous is not None else None
    round_ = last.round + 1 if last else 1
    sft = last.sft if last else str(sft)
    comparisons = accumulate_comparisons(out, round_, data, last.comparisons if last else None)

    _, rm_accuracy_before, rm_accuracy_after = retrain_reward_model(
        out=out,
        round_=round_,
        sft=sft,
        comparisons=comparisons,
        config=config,
        previous_rm=last.reward_model if last else None,
        val_data=val_data,
        norm_data=norm_data,
        resume=resume,
    )
    ppo = continue_policy(
        out=out,
        sft=sft,
        reward_model=out / "rm" / "final",
        prompts=prompts,
        config=config,
        previous_policy=last.policy if last else None,
        val_prompts=val_prompts,
        pretrain_data=pretrain_data,
        resume=resume,
        reward_fn=reward_fn,
        judge_fn=judge_fn,
    )
    answers = None
    if config.answers and eval_prompts:
        answers = str(write_ab_answers(out, sft, out / "ppo" / "final", eval_prompts[: config.answers], 0))
    job = None
    if next_job is not None:
        job = start_next_job(
            round_=round_,
            policy=out / "ppo" / "final",
            previous_policy=last.policy if last else sft,
            **next_job,
        )
    record = RoundSummary(
        round=round_,
        sft=str(sft),
        reward_model=str(out / "rm" / "final"),
        policy=str(out / "ppo" / "final"),
        comparisons=str(comparisons),
        previous=str(previous) if previous is not None else None,
        rm_accuracy_before=rm_accuracy_before,
        rm_accuracy_after=rm_accuracy_after,
        ppo={
            "initial_score_mean": ppo.initial_score_mean,
            "final_score_mean": ppo.final_score_mean,
            "initial_kl_mean": ppo.initial_kl_mean,
            "final_kl_mean": ppo.final_kl_mean,
            "kept_iteration": ppo.kept_iteration,
        },
        answers=answers,
        next_job=job,
    )
    record.write(out)
    return record
