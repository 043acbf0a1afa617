"""Prompt intake into the database: the web upload and `instructrl label import-prompts` both land here."""

from __future__ import annotations

import threading
import weakref
from typing import NamedTuple

from sqlalchemy import Engine, delete, exists, func, insert, select
from sqlalchemy.orm import Session

from instructrl.datasets.records import PromptRecord
from instructrl.errors import UserError
from instructrl.labeling.core.db import write_transaction
from instructrl.labeling.models import Intake, Prompt, Task
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

_IMPORT_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_IMPORT_LOCKS_GUARD = threading.Lock()


class _Stored(NamedTuple):
    """What the intake was checked against: if another process imports meanwhile, these change."""

    prompts: int
    newest_prompt: int
    newest_intake: int


def import_prompts(
    *,
    session: Session,
    records: list[PromptRecord],
    settings: IntakeSettings,
    filename: str,
    created_by: int | None = None,
) -> Intake:
    """Run the intake against every prompt already stored, and store what it keeps, in batches.

    1. read the stored prompts and run the intake on them: CPU only, no lock held;
    2. store the intake record and its prompts, `IMPORT_BATCH` per transaction;
    3. if anything fails on the way, remove what this import stored (in batches too), then re-raise.
    While it runs its prompts appear batch by batch (an admin could make tasks of them; those would be
    kept, and the error says how many). Imports in one process queue; one that meets another process's
    import is undone and refused (409), as its dedup, cap and split were computed without it.
    """
    with _import_lock(session):
        if session.in_transaction():
            session.commit()
        prior = [
            KeptPrompt(prompt=text, user_id=user_id, split=split)  # type: ignore[arg-type]
            for text, user_id, split in session.execute(select(Prompt.text, Prompt.user_id, Prompt.split))
        ]
        before = _stored(session)
        session.rollback()  # end the read snapshot: PostgreSQL would hold it open for the whole intake
        result = run_intake(records, settings, prior=prior)
        rows = [{"text": k.prompt, "user_id": k.user_id, "split": k.split, "pii": k.pii} for k in result.kept]
        intake = Intake(
            filename=filename,
            report=result.report.model_dump(mode="json"),
            dropped={k: [d.model_dump(mode="json") for d in v] for k, v in result.dropped.items()},
            created_by=created_by,
        )
        busy = (
            f"{filename}: another import ran at the same time; nothing of this file was kept: import it again"
        )
        intake_id: int | None = None  # once its first batch is committed
        stored = 0
        try:
            for start in range(0, max(len(rows), 1), IMPORT_BATCH):
                with write_transaction(session):
                    if start == 0:
                        if _stored(session) != before:
                            raise Conflict(busy)
                        session.add(intake)
                        session.flush()
                    elif _stored(session).newest_intake != intake.id:
                        raise Conflict(busy)
                    batch = [{**row, "intake_id": intake.id} for row in rows[start : start + IMPORT_BATCH]]
                    if batch:
                        session.execute(insert(Prompt), batch)
                intake_id = intake.id
                stored += len(batch)
            if (
                _stored(session).prompts - stored != before.prompts
            ):  # e.g. some it was deduplicated against went
                raise Conflict(busy)
            session.commit()
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
