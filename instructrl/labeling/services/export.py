"""Export: the trainers' JSONL records, per split, from every stored submission.

    OUT/train/demonstrations.jsonl   OUT/train/comparisons.jsonl    (`instructrl sft` / `instructrl rm`)
    OUT/validation/...               OUT/test/...
    OUT/ab.jsonl                     A/B judgements of all labelers, for evaluation
    OUT/heldout/...                  held-out labelers' demonstrations and rankings, for evaluation only
    OUT/manifest.json                counts (comparisons per labeling round too)

With a round (`instructrl label export --round N`), only that round's comparisons are written (the
demonstrations and A/B files are left out); without, all rounds. Into a folder holding an earlier export,
the files of it that this one does not write are removed, so the folder holds what the manifest lists (plus
any file of another name: only the export's own file names are touched). Each comparison carries its `round` and
the model that wrote each response (`models`).

Records are built with the schema classes in `instructrl.datasets.records`, so an export that would not
load in the trainers fails here instead. Extra keys (`labeler_id`, `split`, `task_id`, ...) ride along.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from instructrl.datasets.io import atomic_write_text, write_jsonl
from instructrl.datasets.records import ABJudgement, Comparison, Demonstration, ResponseLabel
from instructrl.errors import UserError
from instructrl.labeling.models import HELDOUT_GROUP, Assignment, Submission, Task, User, utcnow
from instructrl.labeling.schemas import ExportSummary
from instructrl.labeling.services import NotFound
from instructrl.labeling.services.tasks import rounds
from instructrl.prompts.intake import SPLITS

FILES = frozenset(
    [
        f"{folder}/{name}"
        for folder in (*SPLITS, "heldout")
        for name in ("demonstrations.jsonl", "comparisons.jsonl")
    ]
    + ["ab.jsonl"]
)
"""Every record file an export may write (relative paths)."""


def export(*, session: Session, out_dir: Path, round: int | None = None) -> ExportSummary:
    """Every submission, or with `round` the comparisons of that labeling round only (rounds are rankings'
    alone: demonstrations and A/B judgements belong to none)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: not a folder; give a folder to export into (it is created if missing)")
    names = ["comparisons.jsonl"] if round is not None else ["demonstrations.jsonl", "comparisons.jsonl"]
    files: dict[str, list[BaseModel]] = defaultdict(list)
    for folder in (*SPLITS, "heldout"):
        for name in names:
            files[f"{folder}/{name}"] = []
    if round is None:
        files["ab.jsonl"] = []
    query = (
        select(Submission, User)
        .join(Assignment, Assignment.id == Submission.assignment_id)
        .join(User, User.id == Assignment.labeler_id)
        .order_by(Submission.id)
    )
    if round is not None:
        known = rounds(session=session)
        if round not in known:
            raise NotFound(
                f"round {round}: no ranking tasks in it; "
                + (f"the rounds so far: {', '.join(map(str, known))}" if known else "there are none yet")
            )
        query = query.join(Task, Task.id == Assignment.task_id).where(Task.round == round)
    excluded = 0
    per_round: dict[int, int] = defaultdict(int)
    for sub, labeler in session.execute(query):
        task = sub.assignment.task
        prompt = task.prompt
        extra: dict[str, object] = {
            **({"messages": prompt.messages} if prompt.messages is not None else {}),
            "labeler_id": labeler.name,
            "labeler_group": labeler.group,
            "split": prompt.split,
            "task_id": task.id,
            "submitted_at": sub.created_at.isoformat(),
        }
        if sub.note:
            extra["note"] = sub.note
        heldout = labeler.group == HELDOUT_GROUP
        record: BaseModel
        if sub.kind == "demonstration":
            record = Demonstration.model_validate(
                {"prompt": prompt.text, "response": sub.response or "", "user_id": prompt.user_id, **extra}
            )
            name = "demonstrations.jsonl"
        elif sub.kind == "ranking":
            labels = [ResponseLabel.model_validate(x) for x in sub.labels] if sub.labels is not None else None
            record = Comparison.model_validate(
                {
                    "prompt": prompt.text,
                    "responses": list(task.responses or []),
                    "ranking": list(sub.ranking or []),
                    "user_id": prompt.user_id,
                    "labels": labels,
                    "model": task.model,
                    "models": task.response_models,
                    "round": task.round,
                    **extra,
                }
            )
            name = "comparisons.jsonl"
            if task.round is not None:
                per_round[task.round] += 1
        else:
            files["ab.jsonl"].append(
                ABJudgement.model_validate(
                    {
                        "prompt": prompt.text,
                        "response_a": task.response_a or "",
                        "response_b": task.response_b or "",
                        "model_a": task.model_a or "",
                        "model_b": task.model_b or "",
                        "preferred": sub.preferred,
                        **extra,
                    }
                )
            )
            continue
        if heldout:
            excluded += 1
            files[f"heldout/{name}"].append(record)
        else:
            files[f"{prompt.split}/{name}"].append(record)
    counts = {path: write_jsonl(out_dir / path, records) for path, records in sorted(files.items())}
    summary = ExportSummary(
        files=counts,
        excluded_heldout=excluded,
        round=round,
        comparisons_per_round=dict(sorted(per_round.items())),
    )
    manifest = {"exported_at": utcnow().isoformat(), **summary.model_dump()}
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    # An earlier export's files that this one did not write (`--round` writes no demonstrations or A/B):
    # removed once the new manifest is in place, so a folder never lacks a file its manifest lists; an
    # export stopped before this line leaves them, and the next one removes them.
    for stale in sorted(FILES - counts.keys()):
        (out_dir / stale).unlink(missing_ok=True)
    return summary


def export_zip(*, session: Session, round: int | None = None) -> bytes:
    """The same export as a zip archive (the web download)."""
    with tempfile.TemporaryDirectory(prefix="instructrl-export-") as tmp:
        export(session=session, out_dir=Path(tmp), round=round)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
        return buf.getvalue()
