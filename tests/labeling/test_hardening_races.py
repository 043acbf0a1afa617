"""Issue 23, races that PostgreSQL let through (SQLite serialises its writers): many requests at one moment,
each in a thread with a session of its own, as the server's thread pool runs them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from instructrl.labeling.core.config import AssignmentLimits
from instructrl.labeling.models import Assignment, Task, User
from instructrl.labeling.services import Conflict, tasks, users
from labeling.helpers import add_user, create_tasks_directly, login, make_app, ranking_rows, upload_prompts


@pytest.fixture
def app(db_url):
    app = make_app(db_url)
    add_user(app, "admin", role="admin")
    yield app
    app.state.db.dispose()


def at_once(app, n: int, call: Callable[[Any, int], Any]) -> list[Any]:
    """`call(session, i)` from `n` threads (i = 0..n-1) released together; what each returned or raised."""
    ready = threading.Barrier(n)

    def one(i: int) -> Any:
        with app.state.db.session() as session:
            ready.wait()
            try:
                return call(session, i)
            except Exception as e:
                return e

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


# --- finding 8: one labeler's parallel `next` requests ------------------------------------------------


def test_40_parallel_next_requests_of_one_labeler_get_one_pending_task_per_kind(app):
    rows = [{"prompt": f"Question {i}?", "user_id": f"u{i}"} for i in range(60)]
    upload_prompts(login(app, "admin"), rows)
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(rows))
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = add_user(app, "lab1")
    limits = AssignmentLimits(max_tasks=0)
    for kind in ("ranking", "demonstration", "ranking"):
        got = at_once(
            app,
            40,
            lambda s, _, kind=kind: tasks.next_assignment(session=s, labeler=lab, kind=kind, limits=limits),
        )
        assert not [g for g in got if isinstance(g, Exception)], got
        assert len({a.id for a in got}) == 1, f"{kind}: {len({a.id for a in got})} pending tasks"
        with app.state.db.session() as session:
            pending = session.scalar(
                select(func.count())
                .select_from(Assignment)
                .join(Task, Assignment.task_id == Task.id)
                .where(Assignment.labeler_id == lab.id, Assignment.status == "pending", Task.kind == kind)
            )
        assert pending == 1
        if kind == "ranking":  # the second ranking round starts from a released one
            with app.state.db.session() as session:
                tasks.release(session=session, assignment_id=got[0].id, labeler=lab)


# --- finding 7: two admins disabling each other -------------------------------------------------------


def test_two_admins_disabling_each_other_at_once_leave_one_enabled_admin(app):
    add_user(app, "admin2", role="admin")
    with app.state.db.session() as session:
        ids = list(session.scalars(select(User.id).where(User.role == "admin").order_by(User.id)))
    for attempt in range(12):
        got = at_once(
            app,
            2,
            lambda s, i: users.set_disabled(session=s, user_id=ids[1 - i], disabled=True),
        )
        with app.state.db.session() as session:
            enabled = session.scalar(
                select(func.count()).select_from(User).where(User.role == "admin", User.disabled.is_(False))
            )
            assert enabled == 1, f"try {attempt + 1}: {enabled} enabled admins ({got})"
            assert sum(isinstance(g, Conflict) for g in got) == 1, got
            for user in session.scalars(select(User).where(User.role == "admin")):
                user.disabled = False
            session.commit()
