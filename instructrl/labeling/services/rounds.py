"""What the training side asks of the labeling app, by database URL: is the database ready for a round's
generation job, start one and run it here, wait until its ranking tasks are ranked, and export the labels.
The pipeline (`instructrl round --db`, the pipeline's database label source) calls these alone, never the
app's models.

Each call opens the database, does its work and closes it; the results are plain records, so a caller
holds no session and imports no ORM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from instructrl.errors import UserError
from instructrl.labeling.core.config import Settings
from instructrl.labeling.core.db import Database
from instructrl.labeling.models import Assignment, GenerationJob, Prompt, Task
from instructrl.labeling.schemas import ExportSummary, GenerationJobCreate

Split = Literal["train", "validation", "test", "all"]


class NotReady(UserError):
    """The database cannot take a round's generation job. `argument` is the one at fault (database_url, k or
    limit), `value` what it was, `reason` what is wrong, so that a caller can name its own flag for it."""

    def __init__(self, argument: str, value: object, reason: str) -> None:
        super().__init__(f"{argument}={value}: {reason}")
        self.argument, self.value, self.reason = argument, value, reason


class GenerationFailed(UserError):
    """A round's generation job ended failed: `error` is the job's."""

    def __init__(self, job_id: int, error: str | None) -> None:
        super().__init__(f"generation job {job_id} failed: {error}")
        self.job_id, self.error = job_id, error


@dataclass(frozen=True)
class Checkpoint:
    """A policy that writes some of a round's candidates, and the name its responses are recorded under."""

    path: str | Path
    name: str


@dataclass(frozen=True)
class RoundJob:
    """A finished generation job of one round."""

    id: int
    round: int
    checkpoints: list[dict[str, Any]]
    """Per checkpoint {"checkpoint": resolved dir, "model_name": str, "k": candidates it wrote}."""
    ranking_tasks: int
    """Ranking tasks the round holds now (this job's and any made before it)."""


@dataclass(frozen=True)
class RoundProgress:
    round: int
    tasks: int
    """Ranking tasks in the round."""
    ranked: int
    """Of those, the ones with at least one ranking submitted."""

    @property
    def done(self) -> bool:
        return self.tasks > 0 and self.ranked == self.tasks


def check_ready(*, database_url: str, k: int, limit: int) -> None:
    """Before any training: K is one the app accepts, the database answers and holds prompts. Writes
    nothing (a missing SQLite file is not created). Raises `NotReady`."""
    settings = Settings(database_url=database_url)
    if not settings.min_k <= k <= settings.max_k:
        raise NotReady("k", k, f"a ranking task needs {settings.min_k} to {settings.max_k} responses")
    if limit < 1:
        raise NotReady("limit", limit, "must be 1 or more")
    url = make_url(settings.database_url)
    file = url.database if url.get_backend_name() == "sqlite" and url.database != ":memory:" else None
    if file and not Path(file).is_file():  # checked first: opening it would create it
        raise NotReady(
            "database_url", database_url, f"no such labeling database ({url.database} does not exist)"
        )
    try:
        db = Database(settings.database_url, run_migrations=False)  # a check writes nothing
        with db.session() as session:
            prompts = session.scalar(select(func.count()).select_from(Prompt))
        db.dispose()
    except SQLAlchemyError as e:
        raise NotReady(
            "database_url",
            database_url,
            f"not a labeling database that answers ({type(e).__name__}: {str(e).splitlines()[0]}); "
            f"give the URL `instructrl label serve` uses",
        ) from None
    if not prompts:
        raise NotReady(
            "database_url",
            database_url,
            "holds no prompts; import them first (`instructrl label import-prompts`)",
        )


def start_round_generation(
    *,
    database_url: str,
    round: int,
    checkpoints: list[Checkpoint],
    k: int,
    limit: int,
    split: Split,
    seed: int = 0,
) -> RoundJob:
    """Round `round`'s generation job, its K candidates split between `checkpoints` (the first ones one
    more), run here and now: the ranking tasks are waiting when it returns. Raises `GenerationFailed`."""
    from instructrl.labeling.services.generation import create_generation_job, run_generation_job

    settings = Settings(database_url=database_url)
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            job_in = GenerationJobCreate.model_validate(
                {
                    "checkpoints": [{"checkpoint": str(c.path), "model_name": c.name} for c in checkpoints],
                    "round": round, "k": k, "limit": limit, "split": split, "seed": seed,
                }
            )  # fmt: skip
            job_id = create_generation_job(session=session, job_in=job_in, settings=settings).id
        run_generation_job(db=db, job_id=job_id, settings=settings)
        with db.session() as session:
            job = session.get(GenerationJob, job_id)
            assert job is not None
            if job.status != "done":
                raise GenerationFailed(job_id, job.error)
            tasks = session.scalar(
                select(func.count()).select_from(Task).where(Task.round == round, Task.kind == "ranking")
            )
            return RoundJob(id=job_id, round=round, checkpoints=job.checkpoints, ranking_tasks=tasks or 0)
    finally:
        db.dispose()


def round_progress(*, database_url: str, round: int) -> RoundProgress:
    """How many of round `round`'s ranking tasks are ranked (by at least one labeler)."""
    db = Database(Settings(database_url=database_url).database_url, run_migrations=False)  # reads only
    try:
        with db.session() as session:
            in_round = (Task.kind == "ranking", Task.round == round)
            tasks = session.scalar(select(func.count()).select_from(Task).where(*in_round))
            ranked = session.scalar(
                select(func.count(func.distinct(Task.id)))
                .join(Assignment, Assignment.task_id == Task.id)
                .where(*in_round, Assignment.status == "done")
            )
        return RoundProgress(round=round, tasks=tasks or 0, ranked=ranked or 0)
    finally:
        db.dispose()


def wait_for_rankings(
    *,
    database_url: str,
    round: int,
    poll_seconds: float = 30.0,
    timeout_seconds: float | None = None,
    progress: Callable[[RoundProgress], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RoundProgress:
    """Returns once every ranking task of round `round` has a ranking, polling every `poll_seconds` (and
    telling `progress` each time). Raises UserError for a round without ranking tasks, or when
    `timeout_seconds` pass first."""
    start = time.monotonic()
    while True:
        now = round_progress(database_url=database_url, round=round)
        if progress is not None:
            progress(now)
        if now.done:
            return now
        if now.tasks == 0:
            raise UserError(f"round {round}: no ranking tasks in it; start its generation job first")
        if timeout_seconds is not None and time.monotonic() - start >= timeout_seconds:
            raise UserError(
                f"round {round}: {now.ranked} of {now.tasks} ranking tasks ranked after {timeout_seconds:g} s; "
                f"rank the rest in the labeling app and run again"
            )
        sleep(poll_seconds)


def export_labels(*, database_url: str, out_dir: Path, round: int | None = None) -> ExportSummary:
    """`instructrl label export` into `out_dir`: every submission, or with `round` that round's rankings."""
    from instructrl.labeling.services.export import export

    db = Database(Settings(database_url=database_url).database_url, run_migrations=False)
    try:
        with db.session() as session:
            return export(session=session, out_dir=out_dir, round=round)
    finally:
        db.dispose()


def collect_round(
    *,
    database_url: str,
    round: int,
    checkpoints: list[Checkpoint],
    k: int,
    limit: int,
    split: Split,
    seed: int,
    out_dir: Path,
    poll_seconds: float = 30.0,
    timeout_seconds: float | None = None,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> ExportSummary:
    """A round's rankings, from start to export, as the pipeline asks for them in one call: round `round`'s
    generation job from `checkpoints` (unless the round holds ranking tasks already: uploaded, or a job
    started before the caller was stopped), the wait until every ranking task is ranked (a `log` line when
    the count moves), and the round's rankings exported into `out_dir`. A failed job is a UserError."""
    if round_progress(database_url=database_url, round=round).tasks == 0:
        log(f"labels: round {round}: sampling its candidates from {', '.join(c.name for c in checkpoints)}")
        try:
            start_round_generation(
                database_url=database_url, round=round, checkpoints=checkpoints, k=k, limit=limit,
                split=split, seed=seed,
            )  # fmt: skip
        except GenerationFailed as e:
            raise UserError(f"round {round}'s generation job {e.job_id} failed: {e.error}") from None
    seen: list[int] = []

    def progress(now: RoundProgress) -> None:
        if not seen or now.ranked != seen[-1]:  # a line when the count moves, not every poll
            log(f"labels: round {round}: {now.ranked} of {now.tasks} ranking tasks ranked")
        seen.append(now.ranked)

    wait_for_rankings(
        database_url=database_url, round=round, poll_seconds=poll_seconds, timeout_seconds=timeout_seconds,
        progress=progress, sleep=sleep,
    )  # fmt: skip
    return export_labels(database_url=database_url, out_dir=out_dir, round=round)
