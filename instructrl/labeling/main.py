"""The FastAPI application: routers, error pages, security headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instructrl.errors import UserError
from instructrl.labeling.api.deps import SESSION_COOKIE, render, status_for
from instructrl.labeling.api.routes import admin, auth, labeler
from instructrl.labeling.core import display
from instructrl.labeling.core.config import Settings
from instructrl.labeling.core.db import Database
from instructrl.labeling.services import TooManyRequests
from instructrl.labeling.services.generation import fail_interrupted_jobs
from instructrl.labeling.services.users import get_login

HERE = Path(__file__).resolve().parent
DATABASE_BUSY = "the database is busy or unavailable; try again in a moment"
log = logging.getLogger("instructrl.labeling")
SECURITY_HEADERS = {
    # No inline scripts or styles anywhere: injected markup could not run even if it escaped escaping.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def is_api(request: HTTPConnection) -> bool:
    return request.url.path.startswith("/api/")


LOGIN_PATHS = ("/login", "/api/v1/login")
SMALL_BODY = 16 * 1024
"""Bytes read of a login, and of any body from someone not logged in: a name and a password fit many times
over. A 20 MB JSON body to /api/v1/login was parsed whole before it was refused (2.0 s, while a labeler's
request waited 1.7 s; two senders: 368 MB)."""
FORM_BODY = 2 * 1024 * 1024
"""A JSON or form body that is not a file upload: the longest, a 100,000-character demonstration, is 1.2 MB
when every character is sent as a JSON escape pair or as 4 percent-encoded bytes."""


class BodyLimit:
    """Reads a request body only as far as the sender is entitled to, answering 413 past that.

    The limit: `SMALL_BODY` for a login, the upload limit for a file upload, `FORM_BODY` for anything else.
    A body that may be over `SMALL_BODY` is read only from a logged-in user (401 otherwise, the body unread):
    FastAPI parses a JSON body or a file upload before the route's login check runs.

    A chunked body has no Content-Length to check up front; without the streaming check, one 200 MB body was
    read whole into memory (RSS 89 MB -> 954 MB) before the login check refused it. That 413 is raised from
    `receive`, inside the route, so it is rendered like any other error (JSON for the API, a page otherwise).
    """

    def __init__(self, app: ASGIApp, *, upload_limit: int, db: Database) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.db = db

    def limit_for(self, request: HTTPConnection) -> tuple[int, str]:
        """The most bytes of body this route reads, and the message past it."""
        if request.url.path in LOGIN_PATHS:
            return SMALL_BODY, f"request body is over the limit of {SMALL_BODY:,} bytes for a login"
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            message = f"request body is over the upload limit of {self.upload_limit:,} bytes"
            return self.upload_limit + 64 * 1024, message  # plus the multipart envelope
        return FORM_BODY, f"request body is over the limit of {FORM_BODY:,} bytes for a form or JSON body"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = HTTPConnection(scope)
        limit, message = self.limit_for(request)
        length = request.headers.get("content-length", "")
        declared = int(length) if length.isascii() and length.isdigit() else None
        if declared is not None and declared > limit:
            await _refuse(request, 413, message)(scope, receive, send)
            return
        may_be_large = "chunked" in request.headers.get("transfer-encoding", "").lower() or (
            declared is not None and declared > SMALL_BODY
        )
        if may_be_large and limit > SMALL_BODY:
            try:
                logged_in = await run_in_threadpool(self._logged_in, request.cookies.get(SESSION_COOKIE))
            except OperationalError:
                response = _refuse(request, 503, DATABASE_BUSY)
                response.headers["Retry-After"] = "1"
                await response(scope, receive, send)
                return
            if not logged_in:
                await _refuse(request, 401, "log in first")(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message_in = await receive()
            received += len(message_in.get("body", b""))
            if received > limit:
                raise HTTPException(status_code=413, detail=message)
            return message_in

        await self.app(scope, limited_receive, send)

    def _logged_in(self, token: str | None) -> bool:
        if not token:
            return False
        with self.db.session() as session:
            return get_login(session=session, token=token) is not None


def _refuse(request: HTTPConnection, status: int, message: str) -> Response:
    """An answer given before the app has read the request (outside its exception handlers)."""
    if is_api(request):
        return JSONResponse({"detail": message}, status_code=status)
    if status == 401:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    return Response(message, status_code=status, media_type="text/plain")


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> FastAPI:
    """The app on `settings.database_url`, migrated to the newest schema."""
    settings = settings or Settings()
    db = db or Database(settings.database_url)
    with db.session() as session:
        fail_interrupted_jobs(session=session)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        db.dispose()

    # No docs pages: Swagger UI runs inline and CDN scripts, which the CSP refuses (and should). The schema
    # is served to admins only, at /api/v1/admin/openapi.json.
    app = FastAPI(
        title="instructrl labeling", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.db = db
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, finalize=display.finalize
    )
    env.filters["editable"] = display.editable
    app.state.templates = Jinja2Templates(env=env)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in (auth.router, auth.api, labeler.pages, labeler.api, admin.pages, admin.api):
        app.include_router(router)
    app.add_middleware(BodyLimit, upload_limit=settings.max_upload_bytes, db=db)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette answers an unhandled error outside every middleware, so this 500 sets its own headers.
        # The error itself is logged by the server (Starlette raises it again after this answer).
        response = (
            JSONResponse({"detail": "internal server error"}, status_code=500)
            if is_api(request)
            else Response("internal server error", status_code=500, media_type="text/plain")
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401 and not is_api(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> Response:
        response = _error(request, status_for(exc), str(exc))
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(OperationalError)
    async def database_busy(request: Request, exc: OperationalError) -> Response:
        # A lock held too long (SQLite's busy timeout, PostgreSQL's lock_timeout) or a database that is
        # down: the request may well succeed in a moment, so 503 and Retry-After, never a 500.
        log.warning("%s %s: %s", request.method, request.url.path, exc.orig)
        response = _error(request, 503, DATABASE_BUSY)
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if is_api(request):
            # Without the input: a login body missing its name was echoed whole, password included.
            # Names and messages made printable: an unknown key may be a lone surrogate, which no JSON
            # encoder writes as UTF-8.
            errors = [
                {
                    **{k: v for k, v in e.items() if k != "input"},
                    "loc": [display.visible(x) if isinstance(x, str) else x for x in e["loc"]],
                    "msg": display.visible(e["msg"]),
                }
                for e in exc.errors()
            ]
            return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(request, 422, problems)

    return app


def _error(request: Request, status: int, message: str) -> Response:
    if is_api(request):
        return JSONResponse({"detail": display.visible(message)}, status_code=status)
    return render(request, "error.html", status_code=status, status=status, message=message)
