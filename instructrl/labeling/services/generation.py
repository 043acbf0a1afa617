"""Candidate generation: sample K responses per prompt from one or more checkpoints in a background thread,
then queue a ranking task per prompt in the job's round. Progress (samples done / total) is written to the
job row as it goes.

Rounds are ChatGPT's loop: rank the current policy's answers, retrain the reward model, continue PPO, and
rank again. A new round takes prompts ranked in earlier rounds again; its K candidates may mix the current
policy with the previous one, each recording which checkpoint wrote it.
"""

from __future__ import annotations

import random
import threading
import traceback
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from instructrl.datasets.records import Message
from instructrl.errors import UserError
from instructrl.labeling.core.config import Settings
from instructrl.labeling.core.db import Database, write_transaction, writes
from instructrl.labeling.models import GenerationJob, Prompt, Task, utcnow
from instructrl.labeling.schemas import GenerationJobCreate
from instructrl.labeling.services.tasks import (
    check_round,
    choose_replicas,
    lock_rounds,
    prompts_for_generation,
)


def split_k(k: int, n: int) -> list[int]:
    """Candidates per checkpoint when `n` checkpoints write `k` per prompt: as even as can be, the first
    ones getting one more (k=5 from 2 checkpoints: 3 and 2)."""
    assert 1 <= n <= k
    return [k // n + (i < k % n) for i in range(n)]


@writes
def create_generation_job(
    *, session: Session, job_in: GenerationJobCreate, settings: Settings
) -> GenerationJob:
    if not settings.min_k <= job_in.k <= settings.max_k:
        raise UserError(f"k={job_in.k}: a ranking task needs {settings.min_k} to {settings.max_k} responses")
    sources = job_in.sources()
    checkpoints: list[dict[str, Any]] = []
    from instructrl.models.loading import resolve_model

    for source, k in zip(sources, split_k(job_in.k, len(sources)), strict=True):
        # a directory written by save_pretrained (e.g. an instructrl run's final/) or a Hub id ORG/NAME[@REV]
        try:
            model = resolve_model(source.checkpoint, "checkpoint")
        except OSError as e:  # e.g. a name over the file system's 255 bytes
            raise UserError(
                f"checkpoint: cannot read that path ({e.strerror}); give a model directory"
            ) from None
        where = str(Path(model.name).resolve()) if model.is_dir else str(model)
        name = source.model_name or Path(model.name).name
        checkpoints.append({"checkpoint": where, "model_name": name, "k": k})
    names: list[str] = [c["model_name"] for c in checkpoints]
    if len(set(names)) < len(names):
        raise UserError(
            f"checkpoints named {', '.join(sorted({n for n in names if names.count(n) > 1}))} more than "
            f"once: give each checkpoint its own model name, so each response says which one wrote it"
        )
    lock_rounds(session=session)
    round = check_round(session=session, round=job_in.round)
    prompts = prompts_for_generation(session=session, split=job_in.split, limit=job_in.limit, round=round)
    if not prompts:
        raise UserError(
            f"no prompts without a ranking task in round {round} (split '{job_in.split}'); import prompts "
            f"first, or start the next round"
        )
    job = GenerationJob(
        checkpoint=checkpoints[0]["checkpoint"],
        model_name=checkpoints[0]["model_name"],
        checkpoints=checkpoints,
        round=round,
        prompt_ids=[p.id for p in prompts],
        k=job_in.k,
        max_new_tokens=job_in.max_new_tokens,
        temperature=job_in.temperature,
        seed=job_in.seed,
        total=len(prompts) * job_in.k,
    )
    session.add(job)
    session.commit()
    return job


def list_jobs(*, session: Session) -> list[GenerationJob]:
    return list(session.scalars(select(GenerationJob).order_by(GenerationJob.id.desc())))


@writes
def fail_interrupted_jobs(*, session: Session) -> int:
    """At start: jobs left queued or running by a stopped server are marked failed (start them again)."""
    result = session.execute(
        update(GenerationJob)
        .where(GenerationJob.status.in_(("queued", "running")))
        .values(
            status="failed",
            error="interrupted by a server restart; start the job again",
            finished_at=utcnow(),
        )
    )
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


def start_generation(*, db: Database, job_id: int, settings: Settings) -> threading.Thread:
    thread = threading.Thread(
        target=run_generation_job, kwargs={"db": db, "job_id": job_id, "settings": settings}, daemon=True
    )
    thread.name = f"generation-{job_id}"
    thread.start()
    return thread


def run_generation_job(*, db: Database, job_id: int, settings: Settings) -> None:
    with db.session() as session, write_transaction(session):
        job = session.get(GenerationJob, job_id)
        assert job is not None
        job.status = "running"
        session.commit()
        prompt_rows = session.scalars(select(Prompt).where(Prompt.id.in_(job.prompt_ids)).order_by(Prompt.id))
        # a conversation is sampled through the checkpoint's chat template turn by turn, as PPO samples it
        prompts = [
            (p.id, p.text if p.messages is None else [Message(**m) for m in p.messages]) for p in prompt_rows
        ]

    try:
        # per prompt: (response, model name) from every checkpoint in turn
        candidates: list[list[tuple[str, str]]] = [[] for _ in prompts]
        for i, source in enumerate(job.checkpoints):
            responses = _sample(db=db, job=job, index=i, prompts=[prompt for _, prompt in prompts])
            for per_prompt, resp in zip(candidates, responses, strict=True):
                per_prompt.extend((text, source["model_name"]) for text in resp)
        replicas = choose_replicas(
            n=len(prompts),
            overlap_fraction=settings.overlap_fraction,
            overlap_labelers=settings.overlap_labelers,
            seed=settings.seed + job_id,
        )
        with db.session() as session, write_transaction(session):
            # A prompt gets one ranking task per round, even when an upload gave it one while we sampled.
            lock_rounds(session=session)
            ranked = set(
                session.scalars(
                    select(Task.prompt_id).where(
                        Task.kind == "ranking", Task.round == job.round, Task.prompt_id.in_(job.prompt_ids)
                    )
                )
            )
            created = 0
            for (pid, _), cands, r in zip(prompts, candidates, replicas, strict=True):
                if pid in ranked:
                    continue
                # Shuffled, so that a response's place says nothing about the checkpoint that wrote it.
                random.Random(f"{job.seed}:{job_id}:{pid}").shuffle(cands)
                names = [name for _, name in cands]
                session.add(
                    Task(
                        kind="ranking",
                        prompt_id=pid,
                        responses=[text for text, _ in cands],
                        model=names[0] if len(set(names)) == 1 else None,
                        response_models=names,
                        round=job.round,
                        replicas=r,
                        source=f"generation:{job_id}",
                    )
                )
                created += 1
            session.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id)
                .values(status="done", done=job.total, tasks_created=created, finished_at=utcnow())
            )
            session.commit()
    except Exception as e:
        message = str(e) if isinstance(e, UserError) else traceback.format_exception_only(e)[-1].strip()
        with db.session() as session, write_transaction(session):
            session.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id)
                .values(status="failed", error=message, finished_at=utcnow())
            )
            session.commit()


def _sample(
    *, db: Database, job: GenerationJob, index: int, prompts: list[str | list[Message]]
) -> list[list[str]]:
    """The job's `index`-th checkpoint's candidates for each prompt; progress counts the samples of the
    checkpoints before it."""
    from instructrl.models.checkpoint import CheckpointMeta
    from instructrl.models.generation import sample_responses
    from instructrl.models.loading import load_causal_lm, load_tokenizer

    source = job.checkpoints[index]
    before = sum(c["k"] for c in job.checkpoints[:index]) * len(prompts)

    def progress(done: int, _total: int) -> None:
        with db.session() as s, write_transaction(s):
            s.execute(update(GenerationJob).where(GenerationJob.id == job.id).values(done=before + done))
            s.commit()

    return sample_responses(
        load_causal_lm(source["checkpoint"]),
        load_tokenizer(source["checkpoint"]),
        prompts,
        k=source["k"],
        max_new_tokens=job.max_new_tokens,
        seed=job.seed + index,  # two copies of one checkpoint still write different candidates
        temperature=job.temperature,
        batch_size=16,
        prompt_template=CheckpointMeta.read(source["checkpoint"]).prompt_template,
        progress=progress,
    )
