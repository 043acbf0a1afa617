"""Candidate generation: sample K responses per prompt from a checkpoint in a background thread, then queue
a ranking task per prompt. Progress (samples done / total) is written to the job row as it goes."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from instructrl.errors import UserError
from instructrl.labeling.core.config import Settings
from instructrl.labeling.core.db import Database, write_transaction, writes
from instructrl.labeling.models import GenerationJob, Prompt, Task, utcnow
from instructrl.labeling.schemas import GenerationJobCreate
from instructrl.labeling.services.tasks import choose_replicas, prompts_for_generation


@writes
def create_generation_job(
    *, session: Session, job_in: GenerationJobCreate, settings: Settings
) -> GenerationJob:
    checkpoint = Path(job_in.checkpoint).expanduser()
    if not (checkpoint / "config.json").is_file():
        raise UserError(
            f"{checkpoint}: not a Hugging Face model directory (no config.json). "
            f"Give a directory written by save_pretrained, e.g. an instructrl run's final/"
        )
    if not settings.min_k <= job_in.k <= settings.max_k:
        raise UserError(f"k={job_in.k}: a ranking task needs {settings.min_k} to {settings.max_k} responses")
    prompts = prompts_for_generation(session=session, split=job_in.split, limit=job_in.limit)
    if not prompts:
        raise UserError(f"no prompts without a ranking task in split '{job_in.split}'; import prompts first")
    job = GenerationJob(
        checkpoint=str(checkpoint.resolve()),
        model_name=job_in.model_name or checkpoint.resolve().name,
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
        prompts = [(p.id, p.text) for p in prompt_rows]

    def progress(done: int, total: int) -> None:
        with db.session() as s, write_transaction(s):
            s.execute(update(GenerationJob).where(GenerationJob.id == job_id).values(done=done, total=total))
            s.commit()

    try:
        from instructrl.models.generation import sample_responses
        from instructrl.models.loading import load_causal_lm, load_tokenizer, read_meta

        model = load_causal_lm(job.checkpoint)
        tokenizer = load_tokenizer(job.checkpoint)
        template = read_meta(job.checkpoint).get("prompt_template", "{prompt}\n")
        responses = sample_responses(
            model,
            tokenizer,
            [text for _, text in prompts],
            k=job.k,
            max_new_tokens=job.max_new_tokens,
            seed=job.seed,
            temperature=job.temperature,
            batch_size=16,
            prompt_template=template,
            progress=progress,
        )
        replicas = choose_replicas(
            n=len(prompts),
            overlap_fraction=settings.overlap_fraction,
            overlap_labelers=settings.overlap_labelers,
            seed=settings.seed + job_id,
        )
        with db.session() as session, write_transaction(session):
            session.add_all(
                Task(
                    kind="ranking",
                    prompt_id=pid,
                    responses=resp,
                    model=job.model_name,
                    replicas=r,
                    source=f"generation:{job_id}",
                )
                for (pid, _), resp, r in zip(prompts, responses, replicas, strict=True)
            )
            session.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id)
                .values(status="done", done=job.total, tasks_created=len(prompts), finished_at=utcnow())
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
