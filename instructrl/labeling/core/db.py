"""Engines for SQLite (the embedded default) and PostgreSQL, and migrations run at start.

SQLite runs in WAL mode with synchronous=FULL (an acknowledged commit survives a crash). Reads run in
deferred transactions (no lock); every write runs inside `write_transaction`, which on SQLite begins
IMMEDIATE: writers queue on the busy timeout for the one write lock instead of failing with "database is
locked" when two of them read then write. The lock is taken and released within one service call, never
held while a request waits for a worker thread.
"""

from __future__ import annotations

import contextvars
import functools
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from instructrl.errors import UserError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise UserError(
            f"--db {_hide_password(url)!r}: not a database URL. Use sqlite:///path/labels.db or "
            f"postgresql://user:password@host:5432/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(
                drivername="postgresql+psycopg"
            )  # psycopg 3, not SQLAlchemy's default psycopg2
        return create_engine(parsed, pool_size=20, max_overflow=30, pool_pre_ping=True)
    shown = parsed.render_as_string(hide_password=True)
    raise UserError(f"--db {shown!r}: unsupported database '{backend}'; use sqlite:/// or postgresql://")


def _hide_password(url: str) -> str:
    """The URL with anything between 'user:' and '@' starred, for messages (error output ends up in logs)."""
    return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


P = ParamSpec("P")
T = TypeVar("T")

_IMMEDIATE = contextvars.ContextVar("sqlite_begin_immediate", default=False)


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if _IMMEDIATE.get() else "BEGIN")


_SQLITE_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _write_lock(engine: Engine) -> AbstractContextManager[Any]:
    """SQLite has one write lock per file; waiting for it on a Python lock is fair and wakes at once,
    where SQLite's busy handler polls and can starve a writer under load. Other processes (the CLI)
    still meet the busy timeout."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    with _LOCKS_GUARD:
        return _SQLITE_WRITE_LOCKS.setdefault(engine, threading.Lock())


@contextmanager
def write_transaction(session: Session) -> Iterator[None]:
    """Run a read-then-write unit in a transaction of its own that holds the write lock from its start
    (SQLite: BEGIN IMMEDIATE; PostgreSQL: an ordinary transaction), and always ends it inside the block:
    committed when the block returns, rolled back when it raises."""
    if session.in_transaction():
        session.commit()  # end the read snapshot this request may hold (nothing is pending in it)
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with _write_lock(engine):
        token = _IMMEDIATE.set(True)
        try:
            yield
            if session.in_transaction():
                session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            _IMMEDIATE.reset(token)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest migration (alembic upgrade head), or to `revision`; a no-op when it is
    there already."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except Exception as e:
        if type(e).__module__.startswith(("sqlalchemy", "psycopg", "sqlite3")):
            raise UserError(
                f"database {engine.url.render_as_string()}: {e.__class__.__name__}: {e}"
            ) from None
        raise


def writes(fn: Callable[P, T]) -> Callable[P, T]:
    """Run a service function (called with session=...) inside `write_transaction`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        session = kwargs["session"]
        assert isinstance(session, Session), "service functions take session= as a keyword"
        with write_transaction(session):
            return fn(*args, **kwargs)

    return wrapper


class Database:
    """An engine with its migrations applied, and a session factory."""

    def __init__(self, url: str, *, run_migrations: bool = True):
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessionmaker() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
