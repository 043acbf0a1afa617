"""Assignments and accounts over time (issue 13, finding 9): expiry, giving a task back, the per-labeler task
rate limit, and an admin disabling a user, resetting a password or ending a user's sessions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from instructrl import cli
from instructrl.labeling.models import utcnow
from instructrl.labeling.services import tasks as tasks_service
from labeling.helpers import (
    PASSWORD,
    PROMPTS,
    add_user,
    create_tasks_directly,
    login,
    make_app,
    page_csrf,
    ranking_rows,
    scores,
    upload_prompts,
)


def app_with_tasks(db_url, n_tasks: int = 1, **settings):
    app = make_app(db_url, **settings)
    add_user(app, "admin", role="admin")
    add_user(app, "lab1")
    add_user(app, "lab2")
    upload_prompts(login(app, "admin"), PROMPTS)
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(PROMPTS[:n_tasks]))
    return app


@pytest.fixture
def app(db_url):
    app = app_with_tasks(db_url, assignments={"expire_minutes": 30})
    yield app
    app.state.db.dispose()


def later(monkeypatch, minutes: float) -> None:
    """Move the task service's clock `minutes` ahead of now."""
    at = utcnow() + timedelta(minutes=minutes)
    monkeypatch.setattr(tasks_service, "utcnow", lambda: at)


def answer():
    return {"ranking": [0, 1, 2, 3], "labels": scores()}


# --- expiry ------------------------------------------------------------------------------------------


def test_an_expired_assignment_goes_back_to_the_pool_and_a_late_answer_then_conflicts(app, monkeypatch):
    lab1, lab2 = login(app, "lab1"), login(app, "lab2")
    first = lab1.next("ranking").json()
    assert first["status"] == "pending" and first["expires_at"] is not None
    assert lab2.next("ranking").status_code == 204  # the one task is lab1's

    later(monkeypatch, 31)
    assert lab1.get(f"/api/v1/assignments/{first['id']}").json()["status"] == "expired"
    taken = lab2.next("ranking")
    assert taken.status_code == 200 and taken.json()["task"] == first["task"]
    r = lab1.submit(first["id"], **answer())
    assert r.status_code == 409 and "expired" in r.json()["detail"] and "not stored" in r.json()["detail"]
    assert lab2.submit(taken.json()["id"], **answer()).status_code == 201


def test_a_late_answer_is_stored_when_nobody_has_taken_the_place(app, monkeypatch):
    lab1, lab2 = login(app, "lab1"), login(app, "lab2")
    a = lab1.next("ranking").json()["id"]
    later(monkeypatch, 31)
    assert lab1.next("demonstration").status_code == 204  # a request that sweeps the expired ones
    assert lab1.get(f"/api/v1/assignments/{a}").json()["status"] == "expired"
    assert lab1.submit(a, **answer()).status_code == 201
    assert lab1.get(f"/api/v1/assignments/{a}").json()["status"] == "done"
    assert lab2.next("ranking").status_code == 204  # the task has its answer


def test_the_task_page_says_until_when_it_is_reserved(app):
    lab1 = login(app, "lab1")
    a = lab1.next("ranking").json()["id"]
    assert "Reserved for you until" in lab1.get(f"/assignments/{a}").text


# --- giving a task back ------------------------------------------------------------------------------


def test_a_labeler_can_give_a_task_back_and_another_gets_it(app):
    lab1, lab2 = login(app, "lab1"), login(app, "lab2")
    a = lab1.next("ranking").json()
    r = lab1.post(f"/api/v1/assignments/{a['id']}/release")
    assert r.status_code == 200 and r.json()["status"] == "released"
    assert lab1.next("ranking").status_code == 204  # never offered to them again
    assert lab2.next("ranking").json()["task"] == a["task"]
    r = lab1.submit(a["id"], **answer())
    assert r.status_code == 409 and "given back" in r.json()["detail"]


def test_a_submitted_task_cannot_be_given_back(app):
    lab1 = login(app, "lab1")
    a = lab1.next("ranking").json()["id"]
    assert lab1.submit(a, **answer()).status_code == 201
    assert lab1.post(f"/api/v1/assignments/{a}/release").status_code == 409


def test_the_task_page_has_a_give_back_button(app):
    lab1 = login(app, "lab1")
    a = lab1.next("ranking").json()["id"]
    page = lab1.get(f"/assignments/{a}").text
    assert f'formaction="/assignments/{a}/release"' in page
    r = lab1.post(f"/assignments/{a}/release", data={"csrf_token": page_csrf(page)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/tasks?msg=released"
    assert lab1.get(f"/api/v1/assignments/{a}").json()["status"] == "released"


# --- the task rate limit -----------------------------------------------------------------------------


def test_a_labeler_taking_tasks_too_fast_gets_429_with_retry_after(db_url, monkeypatch):
    app = app_with_tasks(db_url, n_tasks=6, assignments={"max_tasks": 3, "window_minutes": 10})
    lab1, lab2 = login(app, "lab1"), login(app, "lab2")
    for _ in range(3):
        assert lab1.submit(lab1.next("ranking").json()["id"], **answer()).status_code == 201
    r = lab1.next("ranking")
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 600
    assert "3 tasks in 10 minutes" in r.json()["detail"]
    r = lab1.post("/tasks/next", data={"kind": "ranking"})
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert lab2.next("ranking").status_code == 200  # per labeler
    later(monkeypatch, 10.1)
    assert lab1.next("ranking").status_code == 200
    app.state.db.dispose()


# --- accounts: disable, reset, end sessions ----------------------------------------------------------


def user_id(app, name: str) -> int:
    users = login(app, "admin").get("/api/v1/admin/users").json()
    return next(u["id"] for u in users if u["name"] == name)


def test_a_disabled_user_is_logged_out_at_once_and_their_pending_task_goes_back(app):
    lab1_a, lab1_b, lab2 = login(app, "lab1"), login(app, "lab1"), login(app, "lab2")
    assert lab1_a.next("ranking").status_code == 200
    admin = login(app, "admin")
    r = admin.post(f"/api/v1/admin/users/{user_id(app, 'lab1')}/disable")
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert lab1_a.get("/api/v1/me").status_code == 401 and lab1_b.get("/api/v1/me").status_code == 401
    anon = TestClient(app)
    assert anon.post("/api/v1/login", json={"name": "lab1", "password": PASSWORD}).status_code == 401
    assert lab2.next("ranking").status_code == 200  # lab1's task went back to the pool

    r = admin.post(f"/api/v1/admin/users/{user_id(app, 'lab1')}/enable")
    assert r.status_code == 200 and r.json()["disabled"] is False
    assert login(app, "lab1").get("/api/v1/me").status_code == 200


def test_an_admin_cannot_disable_themselves(app):
    admin = login(app, "admin")
    r = admin.post(f"/api/v1/admin/users/{user_id(app, 'admin')}/disable")
    assert r.status_code == 409 and admin.get("/api/v1/me").status_code == 200


def test_a_password_reset_obeys_the_policy_and_ends_the_users_sessions(app):
    sessions = [login(app, "lab1") for _ in range(3)]
    admin = login(app, "admin")
    url = f"/api/v1/admin/users/{user_id(app, 'lab1')}/password"
    r = admin.post(url, json={"password": "password"})
    assert r.status_code == 422 and "at least 10" in r.json()["detail"]
    assert all(s.get("/api/v1/me").status_code == 200 for s in sessions)
    r = admin.post(url, json={"password": "a-new-long-password"})
    assert r.status_code == 200 and r.json() == {"sessions_ended": 3}
    assert all(s.get("/api/v1/me").status_code == 401 for s in sessions)
    anon = TestClient(app)
    assert anon.post("/api/v1/login", json={"name": "lab1", "password": PASSWORD}).status_code == 401
    assert login(app, "lab1", "a-new-long-password").get("/api/v1/me").status_code == 200


def test_an_admin_can_end_all_of_a_users_sessions(app):
    sessions = [login(app, "lab1") for _ in range(22)]
    admin = login(app, "admin")
    assert '<td class="num">22</td>' in admin.get("/admin/users").text
    r = admin.post(f"/api/v1/admin/users/{user_id(app, 'lab1')}/sessions/end")
    assert r.status_code == 200 and r.json() == {"sessions_ended": 22}
    assert all(s.get("/api/v1/me").status_code == 401 for s in sessions)


def test_the_users_page_disables_resets_and_ends_sessions(app):
    lab1 = login(app, "lab1")
    admin = login(app, "admin")
    uid = user_id(app, "lab1")
    token = page_csrf(admin.get("/admin/users").text)
    r = admin.post(f"/admin/users/{uid}/password", data={"csrf_token": token, "password": " " * 12})
    assert r.status_code == 422 and "all spaces" in r.text
    r = admin.post(f"/admin/users/{uid}/end-sessions", data={"csrf_token": token})
    assert r.status_code == 200 and "Ended 1 session(s) of &#39;lab1&#39;" in r.text
    assert lab1.get("/api/v1/me").status_code == 401
    r = admin.post(f"/admin/users/{uid}/disable", data={"csrf_token": token})
    assert r.status_code == 200 and "disabled" in r.text and f'action="/admin/users/{uid}/enable"' in r.text
    assert admin.post(f"/admin/users/{uid}/explode", data={"csrf_token": token}).status_code == 404


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_the_cli_disables_enables_resets_and_ends_sessions(app, db_url, tmp_path, monkeypatch, capsys):
    sessions = [login(app, "lab1") for _ in range(2)]
    code, out, _ = run_cli(monkeypatch, capsys, "label", "end-sessions", "LAB1", "--db", db_url)
    assert code == 0 and out.strip() == "ended 2 session(s) of 'lab1'"
    assert all(s.get("/api/v1/me").status_code == 401 for s in sessions)

    code, out, _ = run_cli(monkeypatch, capsys, "label", "disable-user", "lab1", "--db", db_url)
    assert code == 0 and "disabled 'lab1'" in out
    anon = TestClient(app)
    assert anon.post("/api/v1/login", json={"name": "lab1", "password": PASSWORD}).status_code == 401
    code, out, _ = run_cli(monkeypatch, capsys, "label", "enable-user", "lab1", "--db", db_url)
    assert code == 0 and login(app, "lab1")

    pw = tmp_path / "pw"
    pw.write_text("password\n")
    args = ("label", "reset-password", "lab1", "--password-file", str(pw), "--db", db_url)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "at least 10" in err and "Traceback" not in err
    pw.write_text("a-new-long-password\n")
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0 and "ended 1 session(s)" in out
    assert login(app, "lab1", "a-new-long-password")

    code, _, err = run_cli(monkeypatch, capsys, "label", "disable-user", "nobody", "--db", db_url)
    assert code == 2 and "no user named 'nobody'" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "label", "disable-user", "admin", "--db", db_url)
    assert code == 2 and "last admin" in err


def test_giving_back_a_submitted_task_from_its_page_is_a_409_page(app):
    lab1 = login(app, "lab1")
    a = lab1.next("ranking").json()["id"]
    token = page_csrf(lab1.get(f"/assignments/{a}").text)
    assert lab1.submit(a, **answer()).status_code == 201
    r = lab1.post(f"/assignments/{a}/release", data={"csrf_token": token})
    assert r.status_code == 409 and "already submitted" in r.text
