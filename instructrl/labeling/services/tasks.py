"""Tasks, their assignment to labelers, and submissions.

Assignment is pulled: a labeler asks for the next task of a kind and gets the oldest task that still needs
labelers from their group (`replicas` per group) and that they have not had. The held-out group has its own
quota, so its labelers see the same tasks as the training labelers without taking their places.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect

from instructrl.errors import UserError
from instructrl.labeling.core.config import AssignmentLimits
from instructrl.labeling.core.db import write_transaction, writes
from instructrl.labeling.models import (
    Assignment,
    GenerationJob,
    Prompt,
    Submission,
    Task,
    User,
    text_hash,
    utcnow,
)
from instructrl.labeling.schemas import (
    ABUploadItem,
    AssignmentPublic,
    RankingUploadItem,
    SubmissionCreate,
    TaskView,
)
from instructrl.labeling.services import Conflict, NotFound, TooManyRequests

HOLDING = ("pending", "done")
"""Assignment statuses that hold a place on a task; 'released' and 'expired' ones gave it back."""

# --- creating tasks ----------------------------------------------------------------------------------


def choose_replicas(*, n: int, overlap_fraction: float, overlap_labelers: int, seed: int) -> list[int]:
    """Labelers wanted for each of `n` new tasks: exactly round(n * overlap_fraction) of them (chosen by a
    seeded shuffle) get `overlap_labelers`, the rest 1."""
    n_overlap = round(n * overlap_fraction)
    chosen = set(random.Random(seed).sample(range(n), n_overlap))
    return [overlap_labelers if i in chosen else 1 for i in range(n)]


def _prompts_without_task(
    *,
    session: Session,
    kind: str,
    split: str,
    limit: int,
    round: int | None = None,
    exclude: Collection[int] = (),
) -> list[Prompt]:
    """Up to `limit` prompts (oldest first) with no task of `kind` (in `round`, when given), other than
    `exclude`."""
    has_task = exists().where(Task.prompt_id == Prompt.id, Task.kind == kind)
    if round is not None:
        has_task = has_task.where(Task.round == round)
    query = select(Prompt).where(~has_task)
    if split != "all":
        query = query.where(Prompt.split == split)
    if exclude:
        query = query.where(Prompt.id.not_in(list(exclude)))
    return list(session.scalars(query.order_by(Prompt.id).limit(limit)))


@writes
def create_demonstration_tasks(
    *, session: Session, split: str, limit: int, overlap_fraction: float, overlap_labelers: int, seed: int
) -> tuple[int, int]:
    """A demonstration task for each of up to `limit` prompts that have none yet; returns (created, overlapping)."""
    prompts = _prompts_without_task(session=session, kind="demonstration", split=split, limit=limit)
    replicas = choose_replicas(
        n=len(prompts), overlap_fraction=overlap_fraction, overlap_labelers=overlap_labelers, seed=seed
    )
    session.add_all(
        Task(kind="demonstration", prompt_id=p.id, replicas=r, source="prompts")
        for p, r in zip(prompts, replicas, strict=True)
    )
    session.commit()
    return len(prompts), sum(r > 1 for r in replicas)


ROUNDS_LOCK = 0x696E_7374_726F_756E  # b"instroun": any fixed 64-bit key, unique to this use


def lock_rounds(*, session: Session) -> None:
    """Serialise the writers that choose a round and its prompts until their transaction ends (PostgreSQL:
    an advisory lock; SQLite's writers hold the database's one write lock already), so two jobs of one round
    never give a prompt two ranking tasks."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(ROUNDS_LOCK)))


def latest_round(*, session: Session) -> int:
    """The latest labeling round: of the ranking tasks and of the generation jobs that have not failed
    (a running job's round has begun before its tasks exist); 0 before any."""
    tasks = session.scalar(select(func.max(Task.round)).where(Task.kind == "ranking")) or 0
    jobs = session.scalar(select(func.max(GenerationJob.round)).where(GenerationJob.status != "failed")) or 0
    return max(tasks, jobs)


def rounds(*, session: Session) -> list[int]:
    """The rounds that have ranking tasks, in order."""
    query = select(Task.round).where(Task.kind == "ranking", Task.round.is_not(None)).distinct()
    return sorted(r for r in session.scalars(query) if r is not None)


def check_round(*, session: Session, round: int | None) -> int:
    """`round`, or the next one when None; a round past the next one is refused (rounds do not skip)."""
    latest = latest_round(session=session)
    if round is None:
        return latest + 1
    if round > latest + 1:
        if latest == 0:
            raise UserError(f"round {round}: there is no round yet; start with round 1")
        raise UserError(
            f"round {round}: the latest round is {latest}; add to round {latest} or start round {latest + 1}"
        )
    return round


def prompts_for_generation(*, session: Session, split: str, limit: int, round: int) -> list[Prompt]:
    """Prompts with no ranking task in `round` and not taken by a queued or running job of that round: a
    prompt ranked in an earlier round is ranked again, but gets at most one ranking task per round."""
    active = session.scalars(
        select(GenerationJob.prompt_ids).where(
            GenerationJob.round == round, GenerationJob.status.in_(("queued", "running"))
        )
    )
    taken = {int(pid) for ids in active for pid in ids}
    return _prompts_without_task(
        session=session, kind="ranking", split=split, limit=limit, round=round, exclude=taken
    )


LOOKUP_BATCH = 1000
"""Prompt texts looked up per query by an upload (well under SQLite's 32,766 bound parameters)."""


def find_prompts(*, session: Session, texts: Sequence[str], filename: str) -> dict[str, int]:
    """The id of the (first) stored prompt of each of `texts`, by the indexed `text_hash`, in batched reads
    outside any write transaction; a UserError naming the lines (1-based) whose prompt is not stored."""
    wanted = {text_hash(t): t for t in texts}
    hashes = list(wanted)
    found: dict[str, int] = {}
    for start in range(0, len(hashes), LOOKUP_BATCH):
        rows = session.execute(
            select(Prompt.id, Prompt.text, Prompt.text_hash)
            .where(Prompt.text_hash.in_(hashes[start : start + LOOKUP_BATCH]))
            .order_by(Prompt.id)
        )
        for prompt_id, text, digest in rows:
            if text == wanted[digest]:
                found.setdefault(text, prompt_id)
    if session.in_transaction():
        session.commit()  # end the read snapshot (PostgreSQL would hold it open)
    missing = [i + 1 for i, t in enumerate(texts) if t not in found]
    if missing:
        lines = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise UserError(
            f"{filename}: line(s) {lines}: prompt not among the imported prompts. Import prompts first "
            f"(Prompts page or `instructrl label import-prompts`), so each has its user id and split"
        )
    return found


def _store_tasks(*, session: Session, tasks: list[Task], source: str) -> None:
    """Commit an upload's tasks, whose prompts were looked up before the write transaction began."""
    session.add_all(tasks)
    try:
        session.commit()
    except IntegrityError:
        # A prompt went meanwhile (a failed import removes its prompts): no task was stored.
        session.rollback()
        raise Conflict(
            f"{source}: prompts were removed while the tasks were made; upload the file again"
        ) from None


def create_ranking_tasks(
    *,
    session: Session,
    items: Sequence[RankingUploadItem],
    source: str,
    min_k: int,
    max_k: int,
    overlap_fraction: float,
    overlap_labelers: int,
    seed: int,
) -> tuple[int, int]:
    """A ranking task per item (K responses to an imported prompt); returns (created, overlapping). The
    prompts are looked up first; only storing the tasks takes the write lock."""
    for i, item in enumerate(items, start=1):
        if not min_k <= len(item.responses) <= max_k:
            raise UserError(
                f"{source}:{i}: {len(item.responses)} responses; a ranking task needs {min_k} to {max_k}"
            )
    prompt_ids = find_prompts(session=session, texts=[it.prompt for it in items], filename=source)
    replicas = choose_replicas(
        n=len(items), overlap_fraction=overlap_fraction, overlap_labelers=overlap_labelers, seed=seed
    )
    _store_ranking_tasks(
        session=session, items=items, prompt_ids=prompt_ids, replicas=replicas, source=source
    )
    return len(items), sum(r > 1 for r in replicas)


@writes
def _store_ranking_tasks(
    *,
    session: Session,
    items: Sequence[RankingUploadItem],
    prompt_ids: dict[str, int],
    replicas: list[int],
    source: str,
) -> None:
    lock_rounds(session=session)
    current_round = max(latest_round(session=session), 1)  # uploaded rankings join the current round
    tasks = [
        Task(
            kind="ranking",
            prompt_id=prompt_ids[it.prompt],
            responses=list(it.responses),
            model=it.model,
            response_models=[it.model] * len(it.responses),
            round=current_round,
            replicas=r,
            source=source,
        )
        for it, r in zip(items, replicas, strict=True)
    ]
    _store_tasks(session=session, tasks=tasks, source=source)


def create_ab_tasks(
    *,
    session: Session,
    items: Sequence[ABUploadItem],
    source: str,
    overlap_fraction: float,
    overlap_labelers: int,
    seed: int,
) -> tuple[int, int]:
    """An A/B task per item; returns (created, overlapping). As `create_ranking_tasks`, the prompts are
    looked up before the write lock."""
    prompt_ids = find_prompts(session=session, texts=[it.prompt for it in items], filename=source)
    replicas = choose_replicas(
        n=len(items), overlap_fraction=overlap_fraction, overlap_labelers=overlap_labelers, seed=seed
    )
    tasks = [
        Task(
            kind="ab",
            prompt_id=prompt_ids[it.prompt],
            response_a=it.response_a,
            response_b=it.response_b,
            model_a=it.model_a,
            model_b=it.model_b,
            replicas=r,
            source=source,
        )
        for it, r in zip(items, replicas, strict=True)
    ]
    with write_transaction(session):
        _store_tasks(session=session, tasks=tasks, source=source)
    return len(items), sum(r > 1 for r in replicas)


def ranking_counts_per_round(*, session: Session) -> dict[int, dict[str, int]]:
    """Per round: ranking tasks, and rankings submitted."""
    out: dict[int, dict[str, int]] = {}
    for rnd, n in session.execute(
        select(Task.round, func.count()).where(Task.kind == "ranking").group_by(Task.round)
    ):
        if rnd is not None:
            out.setdefault(rnd, {"tasks": 0, "done": 0})["tasks"] = n
    done = session.execute(
        select(Task.round, func.count())
        .join(Assignment, Assignment.task_id == Task.id)
        .where(Task.kind == "ranking", Assignment.status == "done")
        .group_by(Task.round)
    )
    for rnd, n in done:
        if rnd is not None:
            out.setdefault(rnd, {"tasks": 0, "done": 0})["done"] = n
    return dict(sorted(out.items()))


def task_counts(*, session: Session) -> dict[str, dict[str, int]]:
    """Per kind: tasks, assignments done, assignments pending."""
    out = {k: {"tasks": 0, "done": 0, "pending": 0} for k in ("demonstration", "ranking", "ab")}
    for kind, n in session.execute(select(Task.kind, func.count()).group_by(Task.kind)):
        out[kind]["tasks"] = n
    rows = session.execute(
        select(Task.kind, Assignment.status, func.count())
        .join(Assignment, Assignment.task_id == Task.id)
        .group_by(Task.kind, Assignment.status)
    )
    for kind, status, n in rows:
        out[kind][status] = n
    return out


# --- assignment --------------------------------------------------------------------------------------


def _ab_swap(*, seed: int, task_id: int, labeler_id: int) -> bool:
    """Whether this labeler sees response B on the left: a fair coin, fixed per (seed, task, labeler)."""
    digest = hashlib.sha256(f"{seed}:{task_id}:{labeler_id}".encode()).digest()
    return digest[0] & 1 == 1


def expires_at(assignment: Assignment, limits: AssignmentLimits) -> datetime:
    return assignment.created_at + timedelta(minutes=limits.expire_minutes)


def status_of(assignment: Assignment, limits: AssignmentLimits) -> str:
    """The assignment's status, 'expired' as soon as its time is up (the row is updated lazily)."""
    if assignment.status == "pending" and expires_at(assignment, limits) <= utcnow():
        return "expired"
    return assignment.status


def _live(limits: AssignmentLimits) -> ColumnElement[bool]:
    """Pending and not yet past its time."""
    cutoff = utcnow() - timedelta(minutes=limits.expire_minutes)
    return (Assignment.status == "pending") & (Assignment.created_at > cutoff)


def pending_assignment(
    *, session: Session, labeler: User, kind: str, limits: AssignmentLimits
) -> Assignment | None:
    """The labeler's oldest open assignment of `kind`, if any."""
    return session.scalar(
        select(Assignment)
        .join(Task, Assignment.task_id == Task.id)
        .where(Assignment.labeler_id == labeler.id, _live(limits), Task.kind == kind)
        .order_by(Assignment.id)
        .limit(1)
    )


def _expire_overdue(*, session: Session, limits: AssignmentLimits) -> None:
    """Every labeler's pending assignments past their time go back to the pool (run before a task is
    chosen, so an overdue one never keeps a place from the labeler asking)."""
    cutoff = utcnow() - timedelta(minutes=limits.expire_minutes)
    session.execute(
        update(Assignment)
        .where(Assignment.status == "pending", Assignment.created_at <= cutoff)
        .values(status="expired")
    )


def _check_rate(*, session: Session, labeler: User, limits: AssignmentLimits) -> None:
    """TooManyRequests when the labeler has reserved `max_tasks` tasks in the last `window_minutes`."""
    if not limits.max_tasks:
        return
    window = timedelta(minutes=limits.window_minutes)
    recent = session.scalars(
        select(Assignment.created_at)
        .where(Assignment.labeler_id == labeler.id, Assignment.created_at > utcnow() - window)
        .order_by(Assignment.created_at.desc())
        .limit(limits.max_tasks)
    ).all()
    if len(recent) >= limits.max_tasks:
        wait = (recent[-1] + window - utcnow()).total_seconds()
        raise TooManyRequests(
            f"you have taken {limits.max_tasks} tasks in {limits.window_minutes:g} minutes, the most "
            f"allowed; the next one in {max(1, round(wait))} s",
            retry_after=wait,
        )


def _taken(group: str) -> ScalarSelect[int]:
    """Places on the (correlated) task held by `group`."""
    return (
        select(func.count())
        .where(Assignment.task_id == Task.id, Assignment.group == group, Assignment.status.in_(HOLDING))
        .correlate(Task)
        .scalar_subquery()
    )


@writes
def next_assignment(
    *, session: Session, labeler: User, kind: str, limits: AssignmentLimits, seed: int = 0
) -> Assignment | None:
    """The labeler's open assignment of `kind`, else a new one on the oldest task that still needs their
    group; None when there is nothing left to do. TooManyRequests past the labeler's task rate limit."""
    # One request per labeler at a time (PostgreSQL: a lock on their user row; SQLite's writers are serial
    # already): 40 parallel requests of one labeler got 4 pending tasks of one kind (issue 23).
    session.execute(select(User.id).where(User.id == labeler.id).with_for_update())
    _expire_overdue(session=session, limits=limits)
    pending = pending_assignment(session=session, labeler=labeler, kind=kind, limits=limits)
    if pending is not None:
        session.commit()
        return pending
    _check_rate(session=session, labeler=labeler, limits=limits)
    # A labeler never gets a task again that they had, even one they released or let expire.
    mine = exists().where(Assignment.task_id == Task.id, Assignment.labeler_id == labeler.id)
    taken = _taken(labeler.group)
    # FOR UPDATE SKIP LOCKED (PostgreSQL): two labelers asking at once lock different tasks, so a task's
    # quota is never overrun. SQLite serialises writers (BEGIN IMMEDIATE) and ignores the clause.
    task_id = session.scalar(
        select(Task.id)
        .where(Task.kind == kind, ~mine, taken < Task.replicas)
        .order_by(Task.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if task_id is None:
        session.commit()  # the expired ones
        return None
    assignment = Assignment(
        task_id=task_id,
        labeler_id=labeler.id,
        group=labeler.group,
        swap=_ab_swap(seed=seed, task_id=task_id, labeler_id=labeler.id) if kind == "ab" else False,
    )
    session.add(assignment)
    session.commit()
    return assignment


def get_assignment(*, session: Session, assignment_id: int, labeler: User) -> Assignment:
    """The labeler's own assignment; anyone else's is NotFound (labelers cannot probe others' tasks)."""
    assignment = session.get(Assignment, assignment_id)
    if assignment is None or assignment.labeler_id != labeler.id:
        raise NotFound(f"assignment {assignment_id} not found")
    return assignment


def list_assignments(*, session: Session, labeler: User, limit: int = 50) -> list[Assignment]:
    return list(
        session.scalars(
            select(Assignment)
            .where(Assignment.labeler_id == labeler.id)
            .order_by(Assignment.id.desc())
            .limit(limit)
        )
    )


def labeler_counts(*, session: Session, labeler: User, limits: AssignmentLimits) -> dict[str, dict[str, int]]:
    """For the labeler's dashboard, per kind: done by me, pending for me, tasks still open to me."""
    out: dict[str, dict[str, int]] = {}
    for kind in ("demonstration", "ranking", "ab"):
        mine = exists().where(Assignment.task_id == Task.id, Assignment.labeler_id == labeler.id)
        available = session.scalar(
            select(func.count())
            .select_from(Task)
            .where(Task.kind == kind, ~mine, _taken(labeler.group) < Task.replicas)
        )
        mine_of_kind = (
            select(func.count())
            .select_from(Assignment)
            .join(Task, Assignment.task_id == Task.id)
            .where(Assignment.labeler_id == labeler.id, Task.kind == kind)
        )
        done = session.scalar(mine_of_kind.where(Assignment.status == "done")) or 0
        pending = session.scalar(mine_of_kind.where(_live(limits))) or 0
        out[kind] = {"done": done, "pending": pending, "available": available or 0}
    return out


def task_view(assignment: Assignment) -> TaskView:
    task = assignment.task
    if task.kind == "ab":
        left, right = (
            (task.response_b, task.response_a) if assignment.swap else (task.response_a, task.response_b)
        )
        return TaskView(
            kind="ab",
            prompt=task.prompt.text,
            messages=task.prompt.messages,
            response_left=left,
            response_right=right,
        )
    if task.kind == "ranking":
        return TaskView(
            kind="ranking",
            prompt=task.prompt.text,
            messages=task.prompt.messages,
            responses=list(task.responses or []),
        )
    return TaskView(kind="demonstration", prompt=task.prompt.text, messages=task.prompt.messages)


def assignment_public(assignment: Assignment, limits: AssignmentLimits) -> AssignmentPublic:
    status = status_of(assignment, limits)
    return AssignmentPublic(
        id=assignment.id,
        status=status,  # type: ignore[arg-type]
        task=task_view(assignment),
        created_at=assignment.created_at,
        expires_at=expires_at(assignment, limits) if status == "pending" else None,
    )


@writes
def release(*, session: Session, assignment_id: int, labeler: User) -> Assignment:
    """The labeler gives a pending task back: it goes to another labeler (never to them again)."""
    assignment = get_assignment(session=session, assignment_id=assignment_id, labeler=labeler)
    if assignment.status == "done":
        raise Conflict(f"assignment {assignment_id} was already submitted; it cannot be given back")
    if assignment.status == "pending":
        assignment.status = "released"
    session.commit()
    return assignment


# --- submissions -------------------------------------------------------------------------------------


def _check_answer(task: Task, answer: SubmissionCreate) -> dict[str, object]:
    """The stored columns for a valid answer to `task`; a UserError naming the field otherwise."""
    if task.kind == "demonstration":
        if answer.response is None or not answer.response.strip():
            raise UserError("field 'response': write a response to the prompt")
        return {"response": answer.response}
    if task.kind == "ranking":
        k = len(task.responses or [])
        if answer.ranking is None or sorted(answer.ranking) != list(range(k)):
            raise UserError(
                f"field 'ranking': must list each of the {k} responses (0..{k - 1}) once, best first"
            )
        if answer.labels is None or len(answer.labels) != k:
            given = "none" if answer.labels is None else len(answer.labels)
            raise UserError(f"field 'labels': {given} for {k} responses; give each a score from 1 to 7")
        return {
            "ranking": list(answer.ranking),
            "labels": [lab.model_dump(mode="json") for lab in answer.labels],
        }
    if answer.preferred is None:
        raise UserError("field 'preferred': choose 'a', 'b' or 'tie'")
    return {"preferred": answer.preferred}  # display order; `submit` maps it to the task's order


@writes
def submit(
    *,
    session: Session,
    assignment_id: int,
    labeler: User,
    answer: SubmissionCreate,
    limits: AssignmentLimits,
) -> tuple[Submission, bool]:
    """Store the labeler's answer and mark the assignment done, in one transaction.

    Returns (submission, created). The same `submission_key` with the same answer again returns the stored
    submission with created=False (a double click or a retried request stores nothing twice); the key with a
    different answer, or a different answer to an assignment already done, is a Conflict.
    """
    assignment = get_assignment(session=session, assignment_id=assignment_id, labeler=labeler)
    columns = _check_answer(assignment.task, answer)
    if assignment.task.kind == "ab" and assignment.swap:
        # Stored in the task's order, whatever side each response was shown on.
        columns["preferred"] = {"a": "b", "b": "a", "tie": "tie"}[str(columns["preferred"])]
    columns["note"] = answer.note.strip() if answer.note and answer.note.strip() else None
    replay = _replay(
        session=session,
        key=answer.submission_key,
        labeler=labeler,
        assignment_id=assignment_id,
        columns=columns,
    )
    if replay is not None:
        return replay, False
    if assignment.status == "done":
        raise Conflict(f"assignment {assignment_id} was already submitted")
    if assignment.status == "released":
        raise Conflict(f"assignment {assignment_id} was given back; your answer was not stored")
    if status_of(assignment, limits) == "expired":
        _check_late(session=session, assignment=assignment, limits=limits)
    submission = Submission(
        submission_key=answer.submission_key,
        assignment_id=assignment.id,
        labeler_id=labeler.id,
        kind=assignment.task.kind,
        **columns,
    )
    session.add(submission)
    assignment.status = "done"
    assignment.done_at = utcnow()
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key (or for the same assignment) committed first.
        session.rollback()
        replay = _replay(
            session=session,
            key=answer.submission_key,
            labeler=labeler,
            assignment_id=assignment_id,
            columns=columns,
        )
        if replay is not None:
            return replay, False
        raise Conflict(f"assignment {assignment_id} was already submitted") from None
    return submission, True


def _check_late(*, session: Session, assignment: Assignment, limits: AssignmentLimits) -> None:
    """An answer that comes after its assignment expired is stored when nobody has taken the place since
    (the work is not thrown away for nothing); otherwise it is a Conflict."""
    task = assignment.task
    # Lock the task (PostgreSQL), so a labeler asking for it now waits for this answer, or skips the task.
    session.execute(select(Task.id).where(Task.id == task.id).with_for_update())
    holders = session.scalar(
        select(func.count()).where(
            Assignment.task_id == task.id,
            Assignment.group == assignment.group,
            Assignment.status.in_(HOLDING),
            Assignment.id != assignment.id,
        )
    )
    if (holders or 0) >= task.replicas:
        raise Conflict(
            f"assignment {assignment.id} expired at {expires_at(assignment, limits):%Y-%m-%d %H:%M} UTC and "
            f"another labeler has taken the task since; your answer was not stored"
        )


def _replay(
    *, session: Session, key: str, labeler: User, assignment_id: int, columns: dict[str, object]
) -> Submission | None:
    """The submission stored under `key` when this request repeats it exactly; None when the key is new."""
    stored = session.scalar(select(Submission).where(Submission.submission_key == key))
    if stored is None:
        return None
    if stored.labeler_id != labeler.id:
        # Not 409: that would tell a labeler that someone else's key exists.
        raise NotFound(f"submission key '{key}' not found; generate a new key per form")
    if stored.assignment_id != assignment_id:
        raise Conflict("this submission key was already used for another task; generate a new key per form")
    if any(getattr(stored, name) != value for name, value in columns.items()):
        raise Conflict(
            f"submission key '{key}' was already used with a different answer, which is kept; "
            f"generate a new key per form"
        )
    return stored
