"""Export: the trainers' JSONL records, per split, from every stored submission.

    OUT/train/demonstrations.jsonl   OUT/train/comparisons.jsonl    (`instructrl sft` / `instructrl rm`)
    OUT/validation/...               OUT/test/...
    OUT/ab.jsonl                     A/B judgements of all labelers, for evaluation
    OUT/heldout/...                  held-out labelers' demonstrations and rankings, for evaluation only
    OUT/manifest.json                counts

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
from instructrl.labeling.models import HELDOUT_GROUP, Assignment, Submission, User, utcnow
from instructrl.labeling.schemas import ExportSummary
from instructrl.prompts.intake import SPLITS


def export(*, session: Session, out_dir: Path) -> ExportSummary:
    files: dict[str, list[BaseModel]] = defaultdict(list)
    for split in SPLITS:
        files[f"{split}/demonstrations.jsonl"] = []
        files[f"{split}/comparisons.jsonl"] = []
    files["ab.jsonl"] = []
    files["heldout/demonstrations.jsonl"] = []
    files["heldout/comparisons.jsonl"] = []
    rows = session.execute(
        select(Submission, User)
        .join(Assignment, Assignment.id == Submission.assignment_id)
        .join(User, User.id == Assignment.labeler_id)
        .order_by(Submission.id)
    )
    excluded = 0
    for sub, labeler in rows:
        task = sub.assignment.task
        prompt = task.prompt
        extra: dict[str, object] = {
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
                    **extra,
                }
            )
            name = "comparisons.jsonl"
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
    summary = ExportSummary(files=counts, excluded_heldout=excluded)
    manifest = {"exported_at": utcnow().isoformat(), **summary.model_dump()}
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return summary


def export_zip(*, session: Session) -> bytes:
    """The same export as a zip archive (the web download)."""
    with tempfile.TemporaryDirectory(prefix="instructrl-export-") as tmp:
        export(session=session, out_dir=Path(tmp))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
        return buf.getvalue()
