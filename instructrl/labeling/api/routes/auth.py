"""Log in and out: the login page (HTML form) and the JSON endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from instructrl.labeling.api.deps import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    CurrentUser,
    FormDep,
    SessionDep,
    SettingsDep,
    csrf_protect,
    form_str,
    optional_login,
    render,
)
from instructrl.labeling.core.config import Settings
from instructrl.labeling.core.security import new_token, tokens_match
from instructrl.labeling.models import AuthSession, User
from instructrl.labeling.schemas import LoginIn, LoginPublic, UserPublic
from instructrl.labeling.services import TooManyRequests, users

router = APIRouter()


def home_for(user: User) -> str:
    return "/admin" if user.role == "admin" else "/tasks"


def _safe_next(target: str) -> str | None:
    """Only local paths: a login link must not bounce the user to another site."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else None


def _set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )


def _log_in(
    request: Request, session: SessionDep, settings: Settings, name: str, password: str
) -> User | None:
    # Behind a reverse proxy, uvicorn sets the client from X-Forwarded-For when the proxy's address is in
    # FORWARDED_ALLOW_IPS (default 127.0.0.1); otherwise every client would share the proxy's address.
    address = request.client.host if request.client else "unknown"
    return users.log_in(
        session=session, name=name, password=password, address=address, throttle=settings.login
    )


@router.get("/")
def index(auth: Annotated[AuthSession | None, Depends(optional_login)]) -> RedirectResponse:
    return RedirectResponse(home_for(auth.user) if auth else "/login", status_code=303)


@router.get("/login")
def login_page(request: Request, settings: SettingsDep, next: str = "") -> Response:
    # Login CSRF: a double-submit token, since there is no login session yet to bind it to.
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
    response = render(request, "login.html", login_csrf=token, next=_safe_next(next) or "", error=None)
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=settings.secure_cookies, path="/"
    )
    return response


@router.post("/login")
def login_form(request: Request, form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    name, password = form_str(form, "name"), form_str(form, "password")
    next_url = _safe_next(form_str(form, "next"))
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not tokens_match(form_str(form, "csrf_token"), cookie_token):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the login page")
    try:
        user = _log_in(request, session, settings, name, password)
    except TooManyRequests as e:
        page = render(
            request,
            "login.html",
            status_code=429,
            login_csrf=cookie_token,
            next=next_url or "",
            error=f"Too many failed logins. Try again in {e.retry_after} seconds.",
        )
        page.headers["Retry-After"] = str(e.retry_after)
        return page
    if user is None:
        return render(
            request,
            "login.html",
            status_code=401,
            login_csrf=cookie_token,
            next=next_url or "",
            error="Wrong user name or password.",
        )
    token, _ = users.create_login(session=session, user=user, hours=settings.session_hours)
    response = RedirectResponse(next_url or home_for(user), status_code=303)
    _set_session_cookie(response, token, settings)
    return response


@router.post("/logout", dependencies=[Depends(csrf_protect)])
def logout(request: Request, session: SessionDep) -> RedirectResponse:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        users.end_login(session=session, token=token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


api = APIRouter(prefix="/api/v1", tags=["auth"])


@api.post("/login")
def api_login(
    request: Request, body: LoginIn, response: Response, session: SessionDep, settings: SettingsDep
) -> LoginPublic:
    """Log in with JSON; the session cookie is set and the CSRF token returned for the X-CSRF-Token header.
    429 with Retry-After while the name or the client address is locked out after failed logins."""
    user = _log_in(request, session, settings, body.name, body.password)
    if user is None:
        raise HTTPException(status_code=401, detail="wrong user name or password")
    token, auth = users.create_login(session=session, user=user, hours=settings.session_hours)
    _set_session_cookie(response, token, settings)
    return LoginPublic(user=UserPublic.model_validate(user), csrf_token=auth.csrf_token)


@api.post("/logout", dependencies=[Depends(csrf_protect)], status_code=204)
def api_logout(request: Request, session: SessionDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        users.end_login(session=session, token=token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@api.get("/me")
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
