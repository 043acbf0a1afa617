"""Admins' pages and API: prompt intake, task creation and candidate generation, users, quality, export."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile as StarletteUpload

from instructrl.errors import UserError
from instructrl.labeling.api.deps import (
    AdminUser,
    DbDep,
    FormDep,
    IdPath,
    SessionDep,
    SettingsDep,
    admin_user,
    csrf_protect,
    form_str,
    render,
    status_for,
)
from instructrl.labeling.core.config import Settings
from instructrl.labeling.models import GenerationJob, User
from instructrl.labeling.schemas import (
    MAX_ROUND,
    ABUploadItem,
    DemonstrationTasksCreate,
    GenerationJobCreate,
    GenerationJobPublic,
    IntakePublic,
    PasswordIn,
    QualityReport,
    RankingUploadItem,
    SessionsEnded,
    TasksCreated,
    UserCreate,
    UserPublic,
)
from instructrl.labeling.services import NotFound, generation, prompts, quality, tasks, users
from instructrl.labeling.services import export as export_service
from instructrl.labeling.services.uploads import check_size, parse_rows

pages = APIRouter(prefix="/admin", dependencies=[Depends(admin_user), Depends(csrf_protect)])


def problems(e: ValidationError) -> str:
    """A form's validation errors, each as 'field: what is wrong'."""
    return "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())


def read_upload(upload: object, settings: Settings) -> tuple[bytes, str]:
    """The bytes of an uploaded file, refusing more than the size limit."""
    if not isinstance(upload, StarletteUpload) or not upload.filename:
        raise UserError("choose a file to upload")
    data = upload.file.read(settings.max_upload_bytes + 1)
    check_size(data=data, limit=settings.max_upload_bytes, filename=upload.filename)
    return data, upload.filename


def _intake(
    *, session: SessionDep, settings: Settings, data: bytes, filename: str, admin_id: int
) -> IntakePublic:
    # CPU-heavy: the routes that call it are plain `def`, which FastAPI runs in its thread pool, off the event
    # loop. A regex holds the GIL, though: linear PII patterns and `MAX_PROMPT` keep each scan short, and a
    # large file is parsed and checked in a process of its own.
    intake = prompts.import_prompt_file(
        session=session,
        data=data,
        filename=filename,
        limit=settings.max_upload_bytes,
        settings=settings.intake,
        created_by=admin_id,
    )
    return IntakePublic.model_validate(intake)


@pages.get("")
def overview(request: Request, session: SessionDep) -> Response:
    return render(
        request,
        "admin/home.html",
        prompt_counts=prompts.prompt_counts(session=session),
        task_counts=tasks.task_counts(session=session),
        labelers=[u for u in users.list_users(session=session) if u.role == "labeler"],
        jobs=generation.list_jobs(session=session)[:5],
    )


# --- prompts -----------------------------------------------------------------------------------------


@pages.get("/prompts")
def prompts_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _prompts_page(request, session, settings)


def _prompts_page(request: Request, session: SessionDep, settings: Settings, **extra: object) -> Response:
    status = int(extra.pop("status_code", 200))  # type: ignore[call-overload]
    return render(
        request,
        "admin/prompts.html",
        status_code=status,
        intakes=prompts.list_intakes(session=session),
        recent=prompts.list_prompts(session=session, limit=30),
        counts=prompts.prompt_counts(session=session),
        intake_settings=settings.intake,
        **extra,
    )


@pages.post("/prompts")
def upload_prompts(
    request: Request, form: FormDep, admin: AdminUser, session: SessionDep, settings: SettingsDep
) -> Response:
    try:
        data, filename = read_upload(form.get("file"), settings)
        intake = _intake(session=session, settings=settings, data=data, filename=filename, admin_id=admin.id)
    except UserError as e:
        session.rollback()
        return _prompts_page(request, session, settings, error=str(e), status_code=status_for(e))
    return RedirectResponse(f"/admin/intakes/{intake.id}", status_code=303)


@pages.get("/intakes/{intake_id}")
def intake_page(request: Request, intake_id: IdPath, session: SessionDep) -> Response:
    intake = prompts.get_intake(session=session, intake_id=intake_id)
    if intake is None:
        raise HTTPException(status_code=404, detail=f"intake {intake_id} not found")
    return render(request, "admin/intake.html", intake=IntakePublic.model_validate(intake))


# --- tasks and candidate generation ------------------------------------------------------------------


@pages.get("/tasks")
def tasks_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return _tasks_page(request, session, settings)


def _tasks_page(request: Request, session: SessionDep, settings: Settings, **extra: object) -> Response:
    status = int(extra.pop("status_code", 200))  # type: ignore[call-overload]
    extra.setdefault("error", None)
    extra.setdefault("created", None)
    return render(
        request,
        "admin/tasks.html",
        status_code=status,
        task_counts=tasks.task_counts(session=session),
        prompt_counts=prompts.prompt_counts(session=session),
        jobs=generation.list_jobs(session=session),
        latest_round=tasks.latest_round(session=session),
        rounds=tasks.ranking_counts_per_round(session=session),
        settings=settings,
        **extra,
    )


def _overlap(form: FormDep, settings: Settings) -> tuple[float, int]:
    try:
        fraction = float(form_str(form, "overlap_fraction", str(settings.overlap_fraction)))
        labelers = int(form_str(form, "overlap_labelers", str(settings.overlap_labelers)))
    except ValueError:
        raise UserError("overlap: give a fraction between 0 and 1 and a whole number of labelers") from None
    if not 0.0 <= fraction <= 1.0 or not 2 <= labelers <= 20:
        raise UserError("overlap: the fraction must be between 0 and 1 and the labelers between 2 and 20")
    return fraction, labelers


@pages.post("/tasks/demonstrations")
def create_demonstrations(
    request: Request, form: FormDep, session: SessionDep, settings: SettingsDep
) -> Response:
    try:
        fraction, labelers = _overlap(form, settings)
        fields = {"split": form_str(form, "split", "all"), "limit": form_str(form, "limit").strip() or 100}
        try:
            wanted = DemonstrationTasksCreate.model_validate(fields)
        except ValidationError as e:
            raise UserError(problems(e)) from None
        created, overlapping = tasks.create_demonstration_tasks(
            session=session,
            split=wanted.split,
            limit=wanted.limit,
            overlap_fraction=fraction,
            overlap_labelers=labelers,
            seed=settings.seed,
        )
    except UserError as e:
        session.rollback()
        return _tasks_page(request, session, settings, error=str(e), status_code=422)
    return _tasks_page(
        request, session, settings, created=TasksCreated(created=created, overlapping=overlapping)
    )


def _upload_tasks(form: FormDep, session: SessionDep, settings: Settings, kind: str) -> TasksCreated:
    fraction, labelers = _overlap(form, settings)
    data, filename = read_upload(form.get("file"), settings)
    if kind == "ranking":
        items = parse_rows(
            data=data,
            filename=filename,
            model=RankingUploadItem,
            limit=settings.max_upload_bytes,
            csv_ok=False,
        )
        created, overlapping = tasks.create_ranking_tasks(
            session=session,
            items=items,
            source=f"upload:{filename}",
            min_k=settings.min_k,
            max_k=settings.max_k,
            overlap_fraction=fraction,
            overlap_labelers=labelers,
            seed=settings.seed,
        )
    else:
        ab_items = parse_rows(
            data=data, filename=filename, model=ABUploadItem, limit=settings.max_upload_bytes, csv_ok=False
        )
        created, overlapping = tasks.create_ab_tasks(
            session=session,
            items=ab_items,
            source=f"upload:{filename}",
            overlap_fraction=fraction,
            overlap_labelers=labelers,
            seed=settings.seed,
        )
    return TasksCreated(created=created, overlapping=overlapping)


@pages.post("/tasks/rankings")
def upload_rankings(request: Request, form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    try:
        created = _upload_tasks(form, session, settings, "ranking")
    except UserError as e:
        session.rollback()
        return _tasks_page(request, session, settings, error=str(e), status_code=status_for(e))
    return _tasks_page(request, session, settings, created=created)


@pages.post("/tasks/ab")
def upload_ab(request: Request, form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    try:
        created = _upload_tasks(form, session, settings, "ab")
    except UserError as e:
        session.rollback()
        return _tasks_page(request, session, settings, error=str(e), status_code=status_for(e))
    return _tasks_page(request, session, settings, created=created)


def _job_from_form(form: FormDep) -> GenerationJobCreate:
    """The job form names one checkpoint, or two (the second: e.g. the previous policy, for a round that
    mixes their answers); the JSON API takes any number."""
    fields = ("round", "split", "limit", "k", "max_new_tokens", "temperature", "seed")
    data: dict[str, object] = {f: form_str(form, f) for f in fields if form_str(form, f).strip()}
    checkpoints = [
        {
            "checkpoint": form_str(form, f"checkpoint{n}").strip(),
            "model_name": form_str(form, f"model_name{n}").strip(),
        }
        for n in ("", "_2")
        if form_str(form, f"checkpoint{n}").strip()
    ]
    if not checkpoints:
        raise UserError("checkpoint: give a checkpoint directory")
    if form_str(form, "model_name_2").strip() and not form_str(form, "checkpoint_2").strip():
        raise UserError("model_name_2: give the second checkpoint's directory too, or leave its name empty")
    data["checkpoints"] = [{k: v for k, v in c.items() if v} for c in checkpoints]
    try:
        return GenerationJobCreate.model_validate(data)
    except ValidationError as e:
        raise UserError(problems(e)) from None


@pages.post("/jobs")
def start_job(
    request: Request, form: FormDep, session: SessionDep, db: DbDep, settings: SettingsDep
) -> Response:
    try:
        job = generation.create_generation_job(
            session=session, job_in=_job_from_form(form), settings=settings
        )
    except UserError as e:
        session.rollback()
        return _tasks_page(request, session, settings, error=str(e), status_code=422)
    generation.start_generation(db=db, job_id=job.id, settings=settings)
    return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)


@pages.get("/jobs/{job_id}")
def job_page(request: Request, job_id: IdPath, session: SessionDep) -> Response:
    job = session.get(GenerationJob, job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"generation job {job_id} not found")
    return render(request, "admin/job.html", job=GenerationJobPublic.model_validate(job))


# --- users, quality, export --------------------------------------------------------------------------


def _users_page(
    request: Request,
    session: SessionDep,
    *,
    error: str | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "admin/users.html",
        status_code=status_code,
        users=users.list_users(session=session),
        sessions=users.live_sessions(session=session),
        password_min_length=request.app.state.settings.password.min_length,
        error=error,
        message=message,
    )


@pages.get("/users")
def users_page(request: Request, session: SessionDep) -> Response:
    return _users_page(request, session)


@pages.post("/users/{user_id}/{action}")
def user_action(
    request: Request,
    user_id: IdPath,
    action: str,
    form: FormDep,
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """Disable, enable, end-sessions or password (reset) for one account, from the Users page."""
    try:
        message = _apply_user_action(
            session=session,
            settings=settings,
            admin=admin,
            user_id=user_id,
            action=action,
            password=form_str(form, "password"),
        )
    except UserError as e:
        session.rollback()
        return _users_page(request, session, error=str(e), status_code=status_for(e))
    return _users_page(request, session, message=message)


def _apply_user_action(
    *, session: SessionDep, settings: Settings, admin: User, user_id: int, action: str, password: str
) -> str:
    if action in ("disable", "enable"):
        if action == "disable" and user_id == admin.id:
            raise UserError("you cannot disable your own account")
        user = users.set_disabled(session=session, user_id=user_id, disabled=action == "disable")
        return f"{action.capitalize()}d '{user.name}'" + (
            " (logged out everywhere, pending tasks given back)." if action == "disable" else "."
        )
    if action == "end-sessions":
        n = users.end_sessions(session=session, user_id=user_id)
        return f"Ended {n} session(s) of '{users.get_user(session=session, user_id=user_id).name}'."
    if action == "password":
        n = users.reset_password(
            session=session, user_id=user_id, password=password, policy=settings.password
        )
        name = users.get_user(session=session, user_id=user_id).name
        return f"Set a new password for '{name}' and ended {n} session(s)."
    raise NotFound(f"no user action '{action}'; use disable, enable, end-sessions or password")


@pages.post("/users")
def create_user_form(request: Request, form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    data = {
        "name": form_str(form, "name"),
        "password": form_str(form, "password"),
        "role": form_str(form, "role"),
    }
    if form_str(form, "group").strip():
        data["group"] = form_str(form, "group").strip()
    try:
        user = users.create_user(
            session=session, user_in=UserCreate.model_validate(data), policy=settings.password
        )
    except ValidationError as e:
        return _users_page(request, session, error=problems(e), status_code=422)
    except UserError as e:
        session.rollback()
        return _users_page(request, session, error=str(e), status_code=status_for(e))
    return _users_page(request, session, message=f"Created {user.role} '{user.name}'.")


@pages.get("/quality")
def quality_page(request: Request, session: SessionDep) -> Response:
    return render(request, "admin/quality.html", report=quality.quality_report(session=session))


@pages.get("/export")
def export_page(request: Request, session: SessionDep) -> Response:
    return render(
        request,
        "admin/export.html",
        task_counts=tasks.task_counts(session=session),
        rounds=tasks.ranking_counts_per_round(session=session),
    )


RoundQuery = Annotated[int | None, Query(ge=1, le=MAX_ROUND, description="one labeling round only")]


def _zip_response(session: SessionDep, round: int | None) -> Response:
    name = "instructrl-labels" + (f"-round-{round}" if round is not None else "")
    return Response(
        export_service.export_zip(session=session, round=round),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
    )


@pages.get("/export.zip")
def export_zip(session: SessionDep, round: RoundQuery = None) -> Response:
    return _zip_response(session, round)


# --- JSON API ----------------------------------------------------------------------------------------

api = APIRouter(
    prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(admin_user), Depends(csrf_protect)]
)


@api.get("/openapi.json", include_in_schema=False)
def api_schema(request: Request) -> dict[str, Any]:
    """The app's OpenAPI schema, for admins writing API clients."""
    return request.app.openapi()


@api.post("/prompts", status_code=201)
def api_upload_prompts(
    admin: AdminUser, session: SessionDep, settings: SettingsDep, file: Annotated[UploadFile, File()]
) -> IntakePublic:
    """Upload prompts (CSV or JSONL with `prompt` and `user_id`); returns the intake report."""
    data, filename = read_upload(file, settings)
    return _intake(session=session, settings=settings, data=data, filename=filename, admin_id=admin.id)


@api.post("/jobs", status_code=201)
def api_start_job(
    body: GenerationJobCreate, session: SessionDep, db: DbDep, settings: SettingsDep
) -> GenerationJobPublic:
    job = generation.create_generation_job(session=session, job_in=body, settings=settings)
    generation.start_generation(db=db, job_id=job.id, settings=settings)
    return GenerationJobPublic.model_validate(job)


@api.get("/jobs/{job_id}")
def api_job(job_id: IdPath, session: SessionDep) -> GenerationJobPublic:
    job = session.get(GenerationJob, job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"generation job {job_id} not found")
    return GenerationJobPublic.model_validate(job)


@api.get("/users")
def api_users(session: SessionDep) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in users.list_users(session=session)]


@api.post("/users", status_code=201)
def api_create_user(body: UserCreate, session: SessionDep, settings: SettingsDep) -> UserPublic:
    return UserPublic.model_validate(
        users.create_user(session=session, user_in=body, policy=settings.password)
    )


@api.post("/users/{user_id}/disable")
def api_disable_user(user_id: IdPath, admin: AdminUser, session: SessionDep) -> UserPublic:
    """Disable an account: its sessions stop working at once and its pending tasks go back to the pool."""
    if user_id == admin.id:
        raise HTTPException(status_code=409, detail="you cannot disable your own account")
    return UserPublic.model_validate(users.set_disabled(session=session, user_id=user_id, disabled=True))


@api.post("/users/{user_id}/enable")
def api_enable_user(user_id: IdPath, session: SessionDep) -> UserPublic:
    return UserPublic.model_validate(users.set_disabled(session=session, user_id=user_id, disabled=False))


@api.post("/users/{user_id}/password")
def api_reset_password(
    user_id: IdPath, body: PasswordIn, session: SessionDep, settings: SettingsDep
) -> SessionsEnded:
    """Set a new password (checked against the password policy); ends all of the user's sessions."""
    n = users.reset_password(
        session=session, user_id=user_id, password=body.password, policy=settings.password
    )
    return SessionsEnded(sessions_ended=n)


@api.post("/users/{user_id}/sessions/end")
def api_end_sessions(user_id: IdPath, session: SessionDep) -> SessionsEnded:
    """Log the user out everywhere."""
    return SessionsEnded(sessions_ended=users.end_sessions(session=session, user_id=user_id))


@api.get("/quality")
def api_quality(session: SessionDep) -> QualityReport:
    return quality.quality_report(session=session)


@api.get("/export.zip")
def api_export_zip(session: SessionDep, round: RoundQuery = None) -> Response:
    """The export as a zip; with `round`, that labeling round's comparisons only."""
    return _zip_response(session, round)
