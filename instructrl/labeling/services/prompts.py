"""Prompt intake into the database: the web upload and `instructrl label import-prompts` both land here."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, NamedTuple

from sqlalchemy import Engine, delete, exists, func, insert, select
from sqlalchemy.orm import Session

from instructrl.datasets.records import PromptRecord
from instructrl.errors import UserError
from instructrl.labeling.core.db import write_transaction
from instructrl.labeling.models import MAX_DROPPED_LISTED, Intake, Prompt, Task
from instructrl.labeling.schemas import PromptUpload
from instructrl.labeling.services import Conflict
from instructrl.labeling.services.uploads import parse_rows
from instructrl.prompts.intake import IntakeSettings, KeptPrompt, run_intake


def parse_prompt_file(*, data: bytes, filename: str, limit: int) -> list[PromptRecord]:
    """Prompts from a CSV (header with `prompt` and `user_id`) or JSONL (`{"prompt", "user_id"}`) upload."""
    return list(parse_rows(data=data, filename=filename, model=PromptUpload, limit=limit))


IMPORT_BATCH = 1000
"""Prompts stored per transaction. SQLite has one write lock for the whole file: a batch holds it for
milliseconds, so labelers' writes interleave with a long import instead of waiting for all of it (one
transaction for a 30 MB file held the lock for 30 s, and labelers got 500 'database is locked')."""
BATCH_PAUSE_S = 0.05
"""Between batches, so that writers waiting for the lock get it: a Python lock is not handed over on release,
and another process (the server, while the CLI imports) polls SQLite's lock every 25-100 ms. With 5 ms,
a 20 MB CLI import under 50 labelers kept some of them waiting 3.3 s."""

_IMPORT_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_IMPORT_LOCKS_GUARD = threading.Lock()


IN_A_PROCESS_BYTES = 1_000_000
"""Uploads at least this big are parsed and checked in a process of their own, at a lower CPU priority: the
intake is pure Python and holds the GIL, and a 20 MB one in the server's thread pool stretched labelers'
requests to 6 s."""


class _Stored(NamedTuple):
    """What the intake was checked against: if another process imports meanwhile, these change."""

    prompts: int
    newest_prompt: int
    newest_intake: int


class _Checked(NamedTuple):
    """An intake's outcome in plain types (cheap to pass between processes)."""

    report: dict[str, Any]
    dropped: dict[str, list[dict[str, Any]]]
    kept: list[dict[str, Any]]
    """Rows for the `prompts` table: text, user_id, split, pii."""


PriorRows = list[tuple[str, str, str]]
"""(text, user_id, split) of every stored prompt."""


def import_prompts(
    *,
    session: Session,
    records: list[PromptRecord],
    settings: IntakeSettings,
    filename: str,
    created_by: int | None = None,
) -> Intake:
    """Run the intake against every prompt already stored, and store what it keeps, in batches (`_import`)."""
    return _import(
        session=session,
        check=lambda prior: _check(records, settings, prior),
        filename=filename,
        created_by=created_by,
    )


def import_prompt_file(
    *,
    session: Session,
    data: bytes,
    filename: str,
    limit: int,
    settings: IntakeSettings,
    created_by: int | None = None,
) -> Intake:
    """Parse an upload and import it (`_import`); from `IN_A_PROCESS_BYTES` on, parsed and checked in a
    process of its own, so that the server's other threads keep running meanwhile."""
    if len(data) < IN_A_PROCESS_BYTES:
        records = parse_prompt_file(data=data, filename=filename, limit=limit)
        return import_prompts(
            session=session, records=records, settings=settings, filename=filename, created_by=created_by
        )

    def check_elsewhere(prior: PriorRows) -> _Checked:
        spawn = multiprocessing.get_context("spawn")
        server = os.getpid()
        with ProcessPoolExecutor(1, mp_context=spawn, initializer=_start_child, initargs=(server,)) as pool:
            return pool.submit(_parse_and_check, data, filename, limit, settings, prior).result()

    return _import(session=session, check=check_elsewhere, filename=filename, created_by=created_by)


ORPHAN_POLL_S = 0.5
"""How often an intake process checks that the server that started it is still there."""


def _start_child(parent: int) -> None:
    """In the intake process: a lower CPU priority, and exit as soon as the server is gone. After a kill -9
    of the server it lived on, and with it the resource tracker it holds a pipe to: one was found 25 min
    later, blocked writing its result to the dead server (issue 23)."""
    os.nice(10)

    def exit_when_orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_S)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, name="exit-when-orphaned", daemon=True).start()


def _parse_and_check(
    data: bytes, filename: str, limit: int, settings: IntakeSettings, prior: PriorRows
) -> _Checked:
    return _check(parse_prompt_file(data=data, filename=filename, limit=limit), settings, prior)


def _check(records: list[PromptRecord], settings: IntakeSettings, prior: PriorRows) -> _Checked:
    kept_before = [KeptPrompt(prompt=t, user_id=u, split=s) for t, u, s in prior]  # type: ignore[arg-type]
    result = run_intake(records, settings, prior=kept_before)
    return _Checked(
        report=result.report.model_dump(mode="json"),
        dropped={
            k: [d.model_dump(mode="json") for d in v[:MAX_DROPPED_LISTED]] for k, v in result.dropped.items()
        },
        kept=[
            {
                "text": k.prompt,
                "messages": None if k.messages is None else [m.model_dump() for m in k.messages],
                "user_id": k.user_id,
                "split": k.split,
                "pii": k.pii,
            }
            for k in result.kept
        ],
    )


def _import(
    *, session: Session, check: Callable[[PriorRows], _Checked], filename: str, created_by: int | None
) -> Intake:
    """1. read the stored prompts and `check` the file against them: CPU only, no lock held;
    2. store the intake record ('importing') and its prompts, `IMPORT_BATCH` per transaction; the last
       one marks the record 'complete', so an import killed midway is seen to be incomplete;
    3. if anything fails on the way, remove what this import stored (in batches too), then re-raise.
    While it runs its prompts appear batch by batch (an admin could make tasks of them; those would be
    kept, and the error says how many). Imports in one process queue; one that meets another process's
    import is undone and refused (409), as its dedup, cap and split were computed without it.
    """
    with _import_lock(session):
        if session.in_transaction():
            session.commit()
        prior: PriorRows = [
            (text, user_id, split)
            for text, user_id, split in session.execute(select(Prompt.text, Prompt.user_id, Prompt.split))
        ]
        before = _stored(session)
        session.rollback()  # end the read snapshot: PostgreSQL would hold it open for the whole intake
        checked = check(prior)
        rows = checked.kept
        intake = Intake(
            filename=filename, report=checked.report, dropped=checked.dropped, created_by=created_by
        )
        busy = (
            f"{filename}: another import ran at the same time; nothing of this file was kept: import it again"
        )
        intake_id: int | None = None  # once its first batch is committed
        stored = 0
        starts = range(0, max(len(rows), 1), IMPORT_BATCH)
        try:
            for start in starts:
                if start:
                    time.sleep(BATCH_PAUSE_S)
                with write_transaction(session):
                    if start == 0:
                        if _stored(session) != before:
                            raise Conflict(busy)
                        session.add(intake)
                        session.flush()
                    elif session.scalar(select(func.max(Intake.id))) != intake.id:
                        raise Conflict(busy)
                    batch = [{**row, "intake_id": intake.id} for row in rows[start : start + IMPORT_BATCH]]
                    if batch:
                        session.execute(insert(Prompt), batch)
                    if start == starts[-1]:
                        if _stored(session).prompts - stored - len(batch) != before.prompts:
                            raise Conflict(busy)  # some it was deduplicated against went
                        intake.status = "complete"
                intake_id = intake.id
                stored += len(batch)
        except BaseException as e:
            session.rollback()
            if intake_id is not None:
                _undo(session=session, intake_id=intake_id, filename=filename, stored=stored, error=e)
            raise
    return intake


def _import_lock(session: Session) -> threading.Lock:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with _IMPORT_LOCKS_GUARD:
        return _IMPORT_LOCKS.setdefault(engine, threading.Lock())


def _stored(session: Session) -> _Stored:
    n, newest = session.execute(select(func.count(), func.max(Prompt.id)).select_from(Prompt)).one()
    return _Stored(n, newest or 0, session.scalar(select(func.max(Intake.id))) or 0)


def _undo(*, session: Session, intake_id: int, filename: str, stored: int, error: BaseException) -> None:
    """Remove a failed import's prompts and record, a batch per transaction. Prompts an admin already made
    tasks of stay (a task needs its prompt): the error then says how many, and under which intake."""
    kept_by_tasks = exists().where(Task.prompt_id == Prompt.id)
    try:
        while True:
            with write_transaction(session):
                ids = (
                    select(Prompt.id).where(Prompt.intake_id == intake_id, ~kept_by_tasks).limit(IMPORT_BATCH)
                )
                removed = session.execute(delete(Prompt).where(Prompt.id.in_(ids.scalar_subquery())))
            if not getattr(removed, "rowcount", 0):
                break
        with write_transaction(session):
            left = session.scalar(
                select(func.count()).select_from(Prompt).where(Prompt.intake_id == intake_id)
            )
            if not left:
                session.execute(delete(Intake).where(Intake.id == intake_id))
    except Exception as undo_error:
        raise UserError(
            f"{filename}: the import failed after storing {stored} prompts ({error}), and removing "
            f"them failed too ({undo_error}): they are stored under intake #{intake_id}"
        ) from error
    if left:
        raise Conflict(
            f"{filename}: the import failed ({error}); {left} of its prompts were kept, under intake "
            f"#{intake_id}, as tasks had been made of them meanwhile; the other {stored - left} were removed"
        ) from error


def list_intakes(*, session: Session) -> list[Intake]:
    return list(session.scalars(select(Intake).order_by(Intake.id.desc())))


def get_intake(*, session: Session, intake_id: int) -> Intake | None:
    return session.get(Intake, intake_id)


def prompt_counts(*, session: Session) -> dict[str, int]:
    """Prompts per split."""
    rows = session.execute(select(Prompt.split, func.count()).group_by(Prompt.split))
    return {split: n for split, n in rows}


def list_prompts(*, session: Session, limit: int = 50, offset: int = 0) -> list[Prompt]:
    return list(session.scalars(select(Prompt).order_by(Prompt.id.desc()).limit(limit).offset(offset)))
