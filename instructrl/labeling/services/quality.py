"""Quality: inter-labeler agreement on overlapping rankings, throughput per labeler, flagged items."""

from __future__ import annotations

import statistics
from collections import defaultdict
from itertools import combinations

from sqlalchemy import select
from sqlalchemy.orm import Session

from instructrl.labeling.models import Assignment, Prompt, Submission, Task, User
from instructrl.labeling.schemas import (
    AgreementReport,
    FlaggedItem,
    LabelerAgreement,
    LabelerThroughput,
    PairAgreement,
    QualityReport,
    RoundAgreement,
)
from instructrl.labeling.services.tasks import ranking_counts_per_round


def pair_agreement(ranking_a: list[int], ranking_b: list[int]) -> tuple[int, int]:
    """(agreeing, total) over the C(K, 2) response pairs: a pair agrees when both rankings put the same
    response of the two first."""
    assert sorted(ranking_a) == sorted(ranking_b), "rankings of different response sets"
    pos_a = {r: i for i, r in enumerate(ranking_a)}
    pos_b = {r: i for i, r in enumerate(ranking_b)}
    agree = total = 0
    for x, y in combinations(sorted(pos_a), 2):
        total += 1
        agree += (pos_a[x] < pos_a[y]) == (pos_b[x] < pos_b[y])
    return agree, total


def agreement_report(*, session: Session, round: int | None = None) -> AgreementReport:
    """Agreement on the rankings of one labeling round, or of all rounds together (a task belongs to one
    round, so only labelers of the same round's candidates are compared either way)."""
    query = (
        select(Assignment.task_id, User.name, User.group, Submission.ranking)
        .join(Submission, Submission.assignment_id == Assignment.id)
        .join(User, User.id == Assignment.labeler_id)
        .where(Submission.kind == "ranking")
        .order_by(Assignment.task_id, User.name)
    )
    if round is not None:
        query = query.join(Task, Task.id == Assignment.task_id).where(Task.round == round)
    rows = session.execute(query)
    by_task: dict[int, list[tuple[str, list[int]]]] = defaultdict(list)
    groups: dict[str, str] = {}
    for task_id, name, group, ranking in rows:
        by_task[task_id].append((name, ranking))
        groups[name] = group
    per_labeler: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # tasks, agree, total
    per_pair: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    overlapping = agree_all = total_all = 0
    for labelled in by_task.values():
        if len(labelled) < 2:
            continue
        overlapping += 1
        for name, _ in labelled:
            per_labeler[name][0] += 1
        for (name_a, rank_a), (name_b, rank_b) in combinations(labelled, 2):
            agree, total = pair_agreement(rank_a, rank_b)
            agree_all, total_all = agree_all + agree, total_all + total
            for name in (name_a, name_b):
                per_labeler[name][1] += agree
                per_labeler[name][2] += total
            pair = per_pair[(name_a, name_b)]
            pair[0], pair[1], pair[2] = pair[0] + 1, pair[1] + agree, pair[2] + total
    return AgreementReport(
        overall=agree_all / total_all if total_all else None,
        overlapping_tasks=overlapping,
        pairs_compared=total_all,
        per_labeler=[
            LabelerAgreement(
                labeler=name,
                group=groups[name],
                overlapping_tasks=tasks,
                pairs_compared=total,
                agreement=agree / total if total else None,
            )
            for name, (tasks, agree, total) in sorted(per_labeler.items())
        ],
        per_pair=[
            PairAgreement(labeler_a=a, labeler_b=b, tasks=t, pairs_compared=n, agreement=g / n)
            for (a, b), (t, g, n) in sorted(per_pair.items())
        ],
    )


def throughput(*, session: Session) -> list[LabelerThroughput]:
    rows = session.execute(
        select(User.name, User.group, Submission.kind, Submission.created_at, Assignment.created_at)
        .join(Submission, Submission.labeler_id == User.id)
        .join(Assignment, Assignment.id == Submission.assignment_id)
        .order_by(User.name, Submission.created_at)
    )
    stats: dict[str, dict] = {}
    for name, group, kind, submitted, assigned in rows:
        s = stats.setdefault(name, {"group": group, "kinds": defaultdict(int), "secs": [], "times": []})
        s["kinds"][kind] += 1
        s["secs"].append((submitted - assigned).total_seconds())
        s["times"].append(submitted)
    out = []
    for name, s in stats.items():
        total = len(s["times"])
        span_h = (s["times"][-1] - s["times"][0]).total_seconds() / 3600
        out.append(
            LabelerThroughput(
                labeler=name,
                group=s["group"],
                demonstrations=s["kinds"]["demonstration"],
                rankings=s["kinds"]["ranking"],
                ab=s["kinds"]["ab"],
                total=total,
                median_seconds=statistics.median(s["secs"]),
                per_hour=(total - 1) / span_h if total > 1 and span_h >= 0.25 else None,
            )
        )
    return out


def flagged_items(*, session: Session, limit: int = 200) -> list[FlaggedItem]:
    """Responses given metadata flags, tasks flagged by labelers with a note, prompts kept with PII flags."""
    out: list[FlaggedItem] = []
    rows = session.execute(
        select(Submission, User.name)
        .join(User, User.id == Submission.labeler_id)
        .where((Submission.note.is_not(None)) | (Submission.kind == "ranking"))
        .order_by(Submission.id.desc())
    )
    for sub, name in rows:
        task = sub.assignment.task
        if sub.note:
            out.append(
                FlaggedItem(
                    kind="note", prompt=task.prompt.text, detail=sub.note, labeler=name, task_id=task.id
                )
            )
        for i, label in enumerate(sub.labels or []):
            if label.get("flags"):
                detail = f"response {i + 1}: " + ", ".join(f.replace("_", " ") for f in label["flags"])
                out.append(
                    FlaggedItem(
                        kind="metadata", prompt=task.prompt.text, detail=detail, labeler=name, task_id=task.id
                    )
                )
        if len(out) >= limit:
            return out[:limit]
    for prompt in session.scalars(select(Prompt).order_by(Prompt.id.desc()).limit(limit * 10)):
        if prompt.pii:
            out.append(
                FlaggedItem(
                    kind="pii", prompt=prompt.text, detail=", ".join(prompt.pii), labeler=None, task_id=None
                )
            )
        if len(out) >= limit:
            break
    return out


def round_agreement(*, session: Session) -> list[RoundAgreement]:
    out = []
    for rnd, counts in ranking_counts_per_round(session=session).items():
        report = agreement_report(session=session, round=rnd)
        out.append(
            RoundAgreement(
                round=rnd,
                ranking_tasks=counts["tasks"],
                rankings=counts["done"],
                overall=report.overall,
                overlapping_tasks=report.overlapping_tasks,
                pairs_compared=report.pairs_compared,
            )
        )
    return out


def quality_report(*, session: Session) -> QualityReport:
    return QualityReport(
        agreement=agreement_report(session=session),
        rounds=round_agreement(session=session),
        throughput=throughput(session=session),
        flagged=flagged_items(session=session),
    )
