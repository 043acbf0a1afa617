"""Request dependencies: the database session, the logged-in user and role checks, CSRF, page rendering."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from instructrl.labeling.core.config import Settings
from instructrl.labeling.core.db import Database
from instructrl.labeling.core.security import tokens_match
from instructrl.labeling.models import AuthSession, User
from instructrl.labeling.schemas import UserPublic
from instructrl.labeling.services.users import get_login

SESSION_COOKIE = "instructrl_session"
LOGIN_CSRF_COOKIE = "instructrl_login_csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Ids in paths are bounded by the largest PostgreSQL `integer`: beyond it the drivers fail (PostgreSQL: out
# of range; SQLite past 2**63: OverflowError) and a typed-in id would be a 500 instead of a 422.
MAX_ID = 2**31 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    with db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]


def optional_login(request: Request, session: SessionDep) -> AuthSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    auth = get_login(session=session, token=token) if token else None
    request.state.auth = auth
    # What pages show of the login, copied now: an error page is rendered after the request's database
    # session has closed, and a rolled-back write has expired the ORM objects by then.
    if auth is not None:
        request.state.viewer = UserPublic.model_validate(auth.user)
        request.state.csrf_token = auth.csrf_token
    return auth


def current_login(auth: Annotated[AuthSession | None, Depends(optional_login)]) -> AuthSession:
    if auth is None:
        raise HTTPException(status_code=401, detail="log in first")
    return auth


def current_user(auth: Annotated[AuthSession, Depends(current_login)]) -> User:
    return auth.user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise HTTPException(status_code=403, detail="this page is for admins only")
    return user


def labeler_user(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "labeler":
        raise HTTPException(
            status_code=403, detail="this page is for labelers; log in with a labeler account"
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]
LabelerUser = Annotated[User, Depends(labeler_user)]


async def get_form(request: Request) -> FormData:
    return await request.form()


FormDep = Annotated[FormData, Depends(get_form)]


async def csrf_protect(request: Request, auth: Annotated[AuthSession, Depends(current_login)]) -> None:
    """Every state-changing request carries the login's CSRF token: as the X-CSRF-Token header (API, JS)
    or the csrf_token form field (HTML forms). A cross-site form cannot read it, so it cannot send it."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not tokens_match(sent, auth.csrf_token):
        raise HTTPException(
            status_code=403, detail="missing or wrong CSRF token; reload the page and try again"
        )


def templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates  # type: ignore[no-any-return]


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page, with the logged-in user and their CSRF token in the context."""
    context.setdefault("user", getattr(request.state, "viewer", None))
    context.setdefault("csrf_token", getattr(request.state, "csrf_token", ""))
    return templates(request).TemplateResponse(request, name, context, status_code=status_code)


def form_str(form: FormData, key: str, default: str = "") -> str:
    value = form.get(key)
    return value if isinstance(value, str) else default


def status_for(error: Exception) -> int:
    """The HTTP status of a service error."""
    from instructrl.labeling.services import Conflict, NotFound, TooLarge, TooManyRequests

    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, TooLarge):
        return 413
    if isinstance(error, TooManyRequests):
        return 429
    return 422
