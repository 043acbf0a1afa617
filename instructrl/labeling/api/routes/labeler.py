"""Labelers' pages and API: get the next task, see it, submit it."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from instructrl.datasets.records import METADATA_FLAGS
from instructrl.errors import UserError
from instructrl.labeling.api.deps import (
    FormDep,
    IdPath,
    LabelerUser,
    SessionDep,
    SettingsDep,
    csrf_protect,
    form_str,
    render,
)
from instructrl.labeling.core.config import Settings
from instructrl.labeling.schemas import AssignmentPublic, SubmissionCreate, SubmissionPublic, TaskKind
from instructrl.labeling.services import TooManyRequests, tasks

KIND_TITLES = {
    "demonstration": "Write a demonstration",
    "ranking": "Rank responses",
    "ab": "Compare two responses",
}
MESSAGES = {
    "submitted": "Saved. Thank you!",
    "none_left": "There are no more tasks of that kind for you right now.",
    "released": "The task was given back; another labeler will get it.",
    "rate_limited": "Saved. You have taken as many tasks as allowed for now; please come back a little later.",
}

pages = APIRouter(dependencies=[Depends(csrf_protect)])


@pages.get("/tasks")
def home(
    request: Request, user: LabelerUser, session: SessionDep, settings: SettingsDep, msg: str = ""
) -> Response:
    return render(
        request,
        "labeler/home.html",
        counts=tasks.labeler_counts(session=session, labeler=user, limits=settings.assignments),
        recent=tasks.list_assignments(session=session, labeler=user, limit=20),
        titles=KIND_TITLES,
        message=MESSAGES.get(msg),
    )


@pages.get("/tasks/next")
def open_task(user: LabelerUser, session: SessionDep, settings: SettingsDep, kind: TaskKind) -> Response:
    """The open assignment of `kind`, else the task list with its Start buttons: a GET reserves nothing, so
    a link from another site cannot take a task in the labeler's name."""
    assignment = tasks.pending_assignment(
        session=session, labeler=user, kind=kind, limits=settings.assignments
    )
    return RedirectResponse(f"/assignments/{assignment.id}" if assignment else "/tasks", status_code=303)


@pages.post("/tasks/next")
def next_task(
    request: Request,
    user: LabelerUser,
    session: SessionDep,
    settings: SettingsDep,
    kind: Annotated[TaskKind, Form()],
) -> Response:
    try:
        return _to_next_task(user=user, session=session, settings=settings, kind=kind)
    except TooManyRequests as e:
        # Rendered here, while the request's database session is still open to load the page's user.
        page = render(request, "error.html", status_code=429, status=429, message=str(e))
        page.headers["Retry-After"] = str(e.retry_after)
        return page


def _to_next_task(*, user: LabelerUser, session: SessionDep, settings: Settings, kind: str) -> Response:
    assignment = tasks.next_assignment(
        session=session, labeler=user, kind=kind, limits=settings.assignments, seed=settings.seed
    )
    if assignment is None:
        return RedirectResponse("/tasks?msg=none_left", status_code=303)
    return RedirectResponse(f"/assignments/{assignment.id}", status_code=303)


def _task_page(
    request: Request,
    assignment_id: int,
    user: LabelerUser,
    session: SessionDep,
    settings: Settings,
    **extra: object,
) -> Response:
    assignment = tasks.get_assignment(session=session, assignment_id=assignment_id, labeler=user)
    view = tasks.task_view(assignment)
    extra.setdefault("status_code", 200)
    return render(
        request,
        f"labeler/{view.kind}.html",
        assignment=assignment,
        status=tasks.status_of(assignment, settings.assignments),
        expires_at=tasks.expires_at(assignment, settings.assignments),
        task=view,
        title=KIND_TITLES[view.kind],
        flags=METADATA_FLAGS,
        submission_key=uuid.uuid4().hex,
        **extra,  # type: ignore[arg-type]
    )


@pages.get("/assignments/{assignment_id}")
def task_page(
    request: Request, assignment_id: IdPath, user: LabelerUser, session: SessionDep, settings: SettingsDep
) -> Response:
    return _task_page(request, assignment_id, user, session, settings, error=None, values={})


@pages.post("/assignments/{assignment_id}/release")
def release_form(assignment_id: IdPath, user: LabelerUser, session: SessionDep) -> Response:
    tasks.release(session=session, assignment_id=assignment_id, labeler=user)
    return RedirectResponse("/tasks?msg=released", status_code=303)


def answer_from_form(form: FormData, kind: str) -> SubmissionCreate:
    """The form fields of a task page as a SubmissionCreate (the same body the JSON API takes)."""
    data: dict[str, object] = {"submission_key": form_str(form, "submission_key")}
    note = form_str(form, "note").strip()
    if note:
        data["note"] = note
    if kind == "demonstration":
        data["response"] = form_str(form, "response")
    elif kind == "ranking":
        raw = form_str(form, "ranking")
        try:
            data["ranking"] = [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise UserError("field 'ranking': expected response indices separated by commas") from None
        labels = []
        for i in range(len(data["ranking"])):  # type: ignore[arg-type]
            likert = form_str(form, f"likert_{i}")
            labels.append(
                {
                    # isdigit() alone lets '²' through to int()
                    "likert": int(likert) if likert.isascii() and likert.isdigit() else None,
                    "flags": [f for f in form.getlist(f"flags_{i}") if isinstance(f, str)],
                }
            )
        if any(lab["likert"] is None for lab in labels):
            raise UserError("give every response a score from 1 to 7")
        data["labels"] = labels
    else:
        data["preferred"] = form_str(form, "preferred") or None
    try:
        return SubmissionCreate.model_validate(data)
    except ValidationError as e:
        raise UserError(_describe(e)) from None


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"field '{loc}': {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


@pages.post("/assignments/{assignment_id}")
def submit_form(
    request: Request,
    assignment_id: IdPath,
    form: FormDep,
    user: LabelerUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    assignment = tasks.get_assignment(session=session, assignment_id=assignment_id, labeler=user)
    kind = assignment.task.kind
    try:
        answer = answer_from_form(form, kind)
        tasks.submit(
            session=session,
            assignment_id=assignment_id,
            labeler=user,
            answer=answer,
            limits=settings.assignments,
        )
    except UserError as e:
        if type(e) is not UserError:
            raise  # NotFound / Conflict: the error page
        session.rollback()
        values = {k: form.getlist(k) for k in form}
        return _task_page(
            request, assignment_id, user, session, settings, error=str(e), values=values, status_code=422
        )
    # Straight on to the next task of the kind: this is a POST, so it may reserve one.
    try:
        return _to_next_task(user=user, session=session, settings=settings, kind=kind)
    except TooManyRequests:
        return RedirectResponse("/tasks?msg=rate_limited", status_code=303)


# --- JSON API ----------------------------------------------------------------------------------------

api = APIRouter(prefix="/api/v1", tags=["labeler"], dependencies=[Depends(csrf_protect)])


class NextIn(BaseModel):
    kind: Literal["demonstration", "ranking", "ab"]


@api.post(
    "/assignments/next",
    response_model=AssignmentPublic,
    responses={204: {"description": "nothing left to do"}},
)
def api_next(
    body: NextIn, user: LabelerUser, session: SessionDep, settings: SettingsDep
) -> AssignmentPublic | Response:
    """Your open assignment of the kind, else a new one; 204 when none is left; 429 with Retry-After past
    the task rate limit (Settings.assignments.max_tasks per window_minutes)."""
    assignment = tasks.next_assignment(
        session=session, labeler=user, kind=body.kind, limits=settings.assignments, seed=settings.seed
    )
    if assignment is None:
        return Response(status_code=204)
    return tasks.assignment_public(assignment, settings.assignments)


@api.get("/assignments")
def api_list(user: LabelerUser, session: SessionDep, settings: SettingsDep) -> list[AssignmentPublic]:
    return [
        tasks.assignment_public(a, settings.assignments)
        for a in tasks.list_assignments(session=session, labeler=user, limit=200)
    ]


@api.get("/assignments/{assignment_id}")
def api_get(
    assignment_id: IdPath, user: LabelerUser, session: SessionDep, settings: SettingsDep
) -> AssignmentPublic:
    return tasks.assignment_public(
        tasks.get_assignment(session=session, assignment_id=assignment_id, labeler=user),
        settings.assignments,
    )


@api.post("/assignments/{assignment_id}/release")
def api_release(
    assignment_id: IdPath, user: LabelerUser, session: SessionDep, settings: SettingsDep
) -> AssignmentPublic:
    """Give a pending task back: it goes to another labeler. 409 when it was already submitted."""
    assignment = tasks.release(session=session, assignment_id=assignment_id, labeler=user)
    return tasks.assignment_public(assignment, settings.assignments)


@api.post("/assignments/{assignment_id}/submission", status_code=201)
def api_submit(
    assignment_id: IdPath,
    body: SubmissionCreate,
    response: Response,
    user: LabelerUser,
    session: SessionDep,
    settings: SettingsDep,
) -> SubmissionPublic:
    """Store the answer. 201 when stored now; 200 with the stored submission when this submission_key was
    already stored with the same answer (a retry); 409 when it came with a different answer, or the
    assignment was already answered under another key, given back, or expired with its place taken since
    (an answer after expiry is still stored when nobody has taken the place)."""
    submission, created = tasks.submit(
        session=session, assignment_id=assignment_id, labeler=user, answer=body, limits=settings.assignments
    )
    if not created:
        response.status_code = 200
    return SubmissionPublic.model_validate(submission)
