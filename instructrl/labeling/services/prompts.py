"""Prompt intake into the database: the web upload and `instructrl label import-prompts` both land here."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from instructrl.datasets.records import PromptRecord
from instructrl.labeling.core.db import writes
from instructrl.labeling.models import Intake, Prompt
from instructrl.labeling.schemas import PromptUpload
from instructrl.labeling.services.uploads import parse_rows
from instructrl.prompts.intake import IntakeSettings, KeptPrompt, run_intake


def parse_prompt_file(*, data: bytes, filename: str, limit: int) -> list[PromptRecord]:
    """Prompts from a CSV (header with `prompt` and `user_id`) or JSONL (`{"prompt", "user_id"}`) upload."""
    return list(parse_rows(data=data, filename=filename, model=PromptUpload, limit=limit))


@writes
def import_prompts(
    *,
    session: Session,
    records: list[PromptRecord],
    settings: IntakeSettings,
    filename: str,
    created_by: int | None = None,
) -> Intake:
    """Run the intake against every prompt already stored, and store what it keeps, in one transaction."""
    prior = [
        KeptPrompt(prompt=text, user_id=user_id, split=split)  # type: ignore[arg-type]
        for text, user_id, split in session.execute(select(Prompt.text, Prompt.user_id, Prompt.split))
    ]
    result = run_intake(records, settings, prior=prior)
    intake = Intake(
        filename=filename,
        report=result.report.model_dump(mode="json"),
        dropped={k: [d.model_dump(mode="json") for d in v] for k, v in result.dropped.items()},
        created_by=created_by,
    )
    session.add(intake)
    session.flush()
    session.add_all(
        Prompt(text=k.prompt, user_id=k.user_id, split=k.split, pii=k.pii, intake_id=intake.id)
        for k in result.kept
    )
    session.commit()
    return intake


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
