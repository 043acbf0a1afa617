"""Accounts under attack (issue 13, finding 3): login throttling with backoff, and the password policy."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from instructrl import cli
from instructrl.labeling.models import utcnow
from instructrl.labeling.services import users as users_service
from labeling.helpers import PASSWORD, add_user, login, make_app, page_csrf

THROTTLE = {"max_failures": 5, "max_failures_per_address": 20, "lockout_seconds": 30}


@pytest.fixture
def app(db_url):
    app = make_app(db_url, login=THROTTLE)
    add_user(app, "admin", role="admin")
    add_user(app, "lab1")
    yield app
    app.state.db.dispose()


def api_login(client: TestClient, name: str, password: str):
    return client.post("/api/v1/login", json={"name": name, "password": password})


def later(monkeypatch, seconds: float) -> None:
    """Move the throttle's clock `seconds` ahead of now."""
    at = utcnow() + timedelta(seconds=seconds)
    monkeypatch.setattr(users_service, "utcnow", lambda: at)


# --- 3. login throttling -----------------------------------------------------------------------------


def test_wrong_passwords_lock_the_account_even_for_the_right_one_with_a_growing_backoff(app, monkeypatch):
    client = TestClient(app)
    codes = [api_login(client, "lab1", f"wrong-{i}").status_code for i in range(30)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    r = api_login(client, "lab1", PASSWORD)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 30
    assert "too many failed logins" in r.json()["detail"]

    later(monkeypatch, 31)  # the first lockout is over: five more tries, then twice as long
    codes = [api_login(client, "lab1", "wrong").status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    assert 31 <= int(api_login(client, "lab1", PASSWORD).headers["Retry-After"]) <= 60

    later(monkeypatch, 31 + 61)  # a success resets the account: five failures allowed again
    assert api_login(client, "lab1", PASSWORD).status_code == 200
    assert [api_login(client, "lab1", "wrong").status_code for _ in range(5)] == [401] * 5


def test_the_lockout_is_shared_by_every_worker_and_survives_a_restart(app, db_url):
    client = TestClient(app)
    for _ in range(6):
        api_login(client, "lab1", "wrong")
    other_worker = make_app(db_url, login=THROTTLE)  # another process on the same database
    assert api_login(TestClient(other_worker), "lab1", PASSWORD).status_code == 429
    other_worker.state.db.dispose()


def test_parallel_guessers_get_no_more_tries_than_one(app):
    codes: list[int] = []

    def guess(i: int) -> None:
        client = TestClient(app)
        codes.extend(api_login(client, "lab1", f"guess-{i}-{j}").status_code for j in range(3))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(codes) == 30 and codes.count(401) == 5 and codes.count(429) == 25


def test_one_address_guessing_many_names_is_locked_out(app):
    client = TestClient(app)
    codes = [api_login(client, f"user{i}", "wrong").status_code for i in range(21)]
    assert codes == [401] * 20 + [429]
    assert api_login(client, "admin", PASSWORD).status_code == 429  # this address, whatever the name


def test_the_login_form_says_when_to_try_again(app):
    client = TestClient(app)
    token = page_csrf(client.get("/login").text)
    for _ in range(5):
        form = {"name": "lab1", "password": "wrong", "csrf_token": token}
        assert client.post("/login", data=form).status_code == 401
    r = client.post("/login", data={"name": "LAB1", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429 and "Try again in" in r.text and int(r.headers["Retry-After"]) >= 1


def test_a_name_no_account_can_have_is_a_failed_login_on_both_databases(app):
    """A NUL in the name gave 500 on PostgreSQL (which cannot compare text with NUL) and 401 on SQLite."""
    client = TestClient(app)
    for name in ("lab\x001", "\x00", "x" * 10_000):
        r = api_login(client, name, PASSWORD)
        assert r.status_code == 401, (name[:8], r.status_code, r.text[:200])
    token = page_csrf(client.get("/login").text)
    r = client.post("/login", data={"name": "lab\x001", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 401
    assert api_login(client, "lab1", PASSWORD).status_code == 200  # and the real account is unharmed


# --- 3. the password policy --------------------------------------------------------------------------

WEAK = [
    ("password", "at least 10 characters"),
    (" " * 12, "all spaces"),
    ("password123", "most common"),
    ("Qwertyuiop", "most common"),
    ("newlabeler", "user name"),
]


@pytest.mark.parametrize(("password", "message"), WEAK)
def test_weak_passwords_are_refused_by_the_admin_api_and_page(app, password, message):
    admin = login(app, "admin")
    r = admin.post(
        "/api/v1/admin/users", json={"name": "newlabeler", "password": password, "role": "labeler"}
    )
    assert r.status_code == 422 and message in r.json()["detail"]
    page = admin.get("/admin/users").text
    form = {"name": "newlabeler", "password": password, "role": "labeler", "csrf_token": page_csrf(page)}
    r = admin.post("/admin/users", data=form)
    assert r.status_code == 422 and message in r.text
    ok = {"name": "newlabeler", "password": "a-long-password", "role": "labeler"}
    assert admin.post("/api/v1/admin/users", json=ok).status_code == 201


@pytest.mark.parametrize(("password", "message"), WEAK)
def test_weak_passwords_are_refused_by_the_cli(tmp_path, monkeypatch, capsys, password, message):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])
    pw = tmp_path / "pw"
    pw.write_text(password + "\n")
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            ["label", "add-user", "newlabeler", "--role", "labeler", "--password-file", str(pw), "--db", db]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_the_policy_is_a_setting(sqlite_url):
    app = make_app(sqlite_url, password={"min_length": 12, "refuse_common": False})
    add_user(app, "admin", role="admin")
    admin = login(app, "admin")
    body = {"name": "lab9", "role": "labeler"}
    r = admin.post("/api/v1/admin/users", json={**body, "password": "eleven-char"})
    assert r.status_code == 422 and "at least 12" in r.json()["detail"]
    assert admin.post("/api/v1/admin/users", json={**body, "password": "password1234"}).status_code == 201
    app.state.db.dispose()
