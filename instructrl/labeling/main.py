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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instructrl.errors import UserError
from instructrl.labeling.api.deps import render, status_for
from instructrl.labeling.api.routes import admin, auth, labeler
from instructrl.labeling.core import display
from instructrl.labeling.core.config import Settings
from instructrl.labeling.core.db import Database
from instructrl.labeling.services import TooManyRequests
from instructrl.labeling.services.generation import fail_interrupted_jobs

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


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


class BodyLimit:
    """Stops reading a request body once it passes `limit` bytes, and answers 413.

    A chunked body has no Content-Length to check up front; without this, one 200 MB body was read whole
    into memory (RSS 89 MB -> 954 MB) before the login check refused it. The 413 is raised from `receive`,
    inside the route, so it is rendered like any other error (JSON for the API, a page otherwise).
    """

    def __init__(self, app: ASGIApp, limit: int, message: str) -> None:
        self.app = app
        self.limit = limit
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, limited_receive, send)


def over_limit(limit: int, length: int | None = None) -> str:
    size = f"of {length:,} bytes " if length is not None else ""
    return f"request body {size}is over the upload limit of {limit:,} bytes"


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
    body_limit = settings.max_upload_bytes + 64 * 1024  # an upload plus its multipart envelope
    app.add_middleware(BodyLimit, limit=body_limit, message=over_limit(settings.max_upload_bytes))

    @app.middleware("http")
    async def limits_and_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > body_limit:
            message = over_limit(settings.max_upload_bytes, int(length))
            response: Response = (
                JSONResponse({"detail": message}, status_code=413)
                if is_api(request)
                else Response(message, status_code=413, media_type="text/plain")
            )
        else:
            response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
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
            errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
            return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(request, 422, problems)

    return app


def _error(request: Request, status: int, message: str) -> Response:
    if is_api(request):
        return JSONResponse({"detail": message}, status_code=status)
    return render(request, "error.html", status_code=status, status=status, message=message)
