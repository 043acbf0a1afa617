"""The web layer under hostile or careless input (issue 13): bounded bodies, 4xx for odd input, no reserving
GETs, strict and honest submissions, closed API docs, quiet errors, unique user names."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from instructrl import cli
from instructrl.labeling.models import Assignment, Submission
from labeling.helpers import (
    add_user,
    login,
    make_app,
    ranking_app,
    scores,
)


@pytest.fixture
def app(db_url):
    app = ranking_app(db_url)
    yield app
    app.state.db.dispose()


def n_rows(app, model) -> int:
    with app.state.db.session() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


# --- 1. request bodies are limited as they stream in --------------------------------------------------


async def post_chunked(app, path: str, chunks, headers: dict[str, str]) -> tuple[int, bytes, int]:
    """POST `chunks` to the ASGI app one message each, as a server streams a chunked body (TestClient
    would join them first); returns the status, the response body and how many bytes the app pulled."""
    pulled, status, body = 0, 0, b""
    chunks = iter(chunks)

    async def receive():
        nonlocal pulled
        chunk = next(chunks, None)
        pulled += len(chunk or b"")
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message):
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return status, body, pulled


@pytest.mark.parametrize(
    ("path", "who", "content_type"),
    [
        ("/api/v1/login", None, "application/json"),
        ("/admin/prompts", "admin", "multipart/form-data; boundary=xyz"),
        ("/api/v1/admin/prompts", "admin", "multipart/form-data; boundary=xyz"),
    ],
)
def test_a_chunked_body_over_the_limit_is_refused_413_without_being_read_whole(
    sqlite_url, path, who, content_type
):
    limit = 64 * 1024
    app = make_app(sqlite_url, max_upload_bytes=limit)
    add_user(app, "admin", role="admin")
    headers = {"content-type": content_type, "transfer-encoding": "chunked"}
    if who:
        auth = login(app, who)
        headers["cookie"] = f"instructrl_session={auth.client.cookies['instructrl_session']}"
        headers["x-csrf-token"] = auth.csrf
    chunk = b"x" * 16 * 1024
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    chunks = [part, *[chunk] * 640]  # 10 MiB
    status, body, pulled = asyncio.run(post_chunked(app, path, chunks, headers))
    assert status == 413 and b"is over the" in body  # the upload limit; for a login, 16 KiB
    assert pulled <= limit + 64 * 1024 + len(chunk)  # the app stopped reading at the limit
    app.state.db.dispose()


# --- 8. odd input is a 4xx with a message, never a 500 -------------------------------------------------


def test_a_likert_score_that_is_not_a_plain_number_is_refused_422(app):
    lab = login(app, "lab1")
    a = lab.next("ranking").json()["id"]
    form = {"submission_key": "k" * 10, "ranking": "0,1,2,3", "likert_0": "²"}
    form |= {f"likert_{i}": "4" for i in (1, 2, 3)}
    r = lab.post(f"/assignments/{a}", data=form)
    assert r.status_code == 422 and "score from 1 to 7" in r.text
    assert n_rows(app, Submission) == 0


@pytest.mark.parametrize(
    ("method", "path", "who"),
    [
        ("get", "/api/v1/assignments/{n}", "lab1"),
        ("get", "/assignments/{n}", "lab1"),
        ("post", "/api/v1/assignments/{n}/submission", "lab1"),
        ("get", "/admin/intakes/{n}", "admin"),
        ("get", "/admin/jobs/{n}", "admin"),
        ("get", "/api/v1/admin/jobs/{n}", "admin"),
    ],
)
def test_an_id_too_large_for_the_database_is_refused_422(app, method, path, who):
    client = login(app, who)
    body = {"json": {"submission_key": "k" * 10, "response": "x"}} if method == "post" else {}
    r = getattr(client, method)(path.format(n=10**20), **body)
    assert r.status_code == 422 and "less than or equal to" in r.text


def test_a_jsonl_line_nested_too_deep_is_refused_422_naming_the_line(app):
    admin = login(app, "admin")
    deep = b'{"prompt": "ok", "user_id": "u1"}\n{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    r = admin.post("/api/v1/admin/prompts", files={"file": ("p.jsonl", deep)})
    assert r.status_code == 422 and "p.jsonl:2: nested too deeply" in r.json()["detail"]


# --- 10. smaller ones --------------------------------------------------------------------------------


def test_get_tasks_next_reserves_nothing_and_post_does(app):
    lab = login(app, "lab1")
    r = lab.get("/tasks/next?kind=ranking", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/tasks"
    assert n_rows(app, Assignment) == 0
    assert 'action="/tasks/next"' in lab.get("/tasks").text  # the start buttons are forms
    r = lab.post("/tasks/next", data={"kind": "ranking"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/assignments/")
    assert n_rows(app, Assignment) == 1
    # GET now shows the open assignment, still reserving nothing more
    again = lab.get("/tasks/next?kind=ranking", follow_redirects=False)
    assert again.headers["location"] == r.headers["location"] and n_rows(app, Assignment) == 1


def test_submitting_a_task_form_goes_straight_on_to_the_next_task(app):
    lab = login(app, "lab1")
    first = lab.next("ranking").json()["id"]
    form = {"submission_key": "k" * 10, "ranking": "0,1,2,3"} | {f"likert_{i}": "4" for i in range(4)}
    r = lab.post(f"/assignments/{first}", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/assignments/")
    assert r.headers["location"] != f"/assignments/{first}"


def test_a_replayed_submission_key_with_a_different_answer_conflicts_and_keeps_the_first(app):
    lab = login(app, "lab1")
    a = lab.next("ranking").json()["id"]
    first = lab.submit(a, submission_key="key-0001", ranking=[0, 1, 2, 3], labels=scores())
    same = lab.submit(a, submission_key="key-0001", ranking=[0, 1, 2, 3], labels=scores())
    different = lab.submit(a, submission_key="key-0001", ranking=[3, 2, 1, 0], labels=scores())
    assert (first.status_code, same.status_code, different.status_code) == (201, 200, 409)
    assert "different answer" in different.json()["detail"]
    with app.state.db.session() as s:
        assert list(s.scalars(select(Submission.ranking))) == [[0, 1, 2, 3]]


def test_another_labelers_submission_key_is_404_not_409(app):
    lab1, lab2 = login(app, "lab1"), login(app, "lab2")
    a1, a2 = lab1.next("ranking").json()["id"], lab2.next("ranking").json()["id"]
    assert (
        lab1.submit(a1, submission_key="key-0001", ranking=[0, 1, 2, 3], labels=scores()).status_code == 201
    )
    r = lab2.submit(a2, submission_key="key-0001", ranking=[0, 1, 2, 3], labels=scores())
    assert r.status_code == 404
    assert n_rows(app, Submission) == 1


@pytest.mark.parametrize(
    "answer",
    [
        {"ranking": [0, 1, 2, 3]},  # no Likert scores
        {"ranking": [0, 1, 2, 3], "labels": [{"flags": []}] * 4},
        {"ranking": ["0", "1", "2", "3"], "labels": scores()},
        {"ranking": [0, True, 2, 3], "labels": scores()},
        {"ranking": [0, 1, 2, 3], "labels": [{"likert": "4", "flags": []}] * 4},
        {"ranking": [0, 1, 2, 3], "labels": [{"likert": True, "flags": []}] * 4},
    ],
)
def test_api_rankings_are_validated_as_strictly_as_the_form(app, answer):
    lab = login(app, "lab1")
    a = lab.next("ranking").json()["id"]
    r = lab.submit(a, **answer)
    assert r.status_code == 422, r.text
    assert lab.get(f"/api/v1/assignments/{a}").json()["status"] == "pending"


def test_api_docs_are_closed_and_the_schema_is_for_admins_only(app):
    anon = TestClient(app)
    assert anon.get("/api/docs").status_code == 404
    assert anon.get("/openapi.json").status_code == 404
    assert anon.get("/api/v1/admin/openapi.json").status_code == 401
    assert login(app, "lab1").get("/api/v1/admin/openapi.json").status_code == 403
    schema = login(app, "admin").get("/api/v1/admin/openapi.json")
    assert schema.status_code == 200 and "/api/v1/assignments/next" in schema.json()["paths"]


def test_validation_errors_do_not_echo_the_input(app):
    r = TestClient(app).post("/api/v1/login", json={"password": "hunter2-secret"})
    assert r.status_code == 422 and "hunter2" not in r.text
    assert r.json()["detail"][0]["loc"] == ["body", "name"]
    admin = login(app, "admin")
    r = admin.post(
        "/api/v1/admin/users", json={"name": "bad name", "password": "hunter2-secret", "role": "x"}
    )
    assert r.status_code == 422 and "hunter2" not in r.text


def test_user_names_are_unique_whatever_their_case(app):
    admin = login(app, "admin")
    body = {"password": "a-long-password", "role": "labeler"}
    assert admin.post("/api/v1/admin/users", json={"name": "lab0", **body}).status_code == 201
    r = admin.post("/api/v1/admin/users", json={"name": "Lab0", **body})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


# --- 10. the command line ----------------------------------------------------------------------------


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    return int(exit_info.value.code or 0), capsys.readouterr().err


def test_an_unsupported_database_url_is_shown_without_its_password(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(monkeypatch, capsys, "label", "export", "--out", "x", "--db", "mysql://u:s3cret@h/db")
    assert code == 2 and "unsupported database 'mysql'" in err and "s3cret" not in err
    code, err = run_cli(
        monkeypatch, capsys, "label", "export", "--out", "x", "--db", "postgresql://u:s3cret@h:port/db"
    )
    assert code == 2 and "s3cret" not in err


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_malformed_port_exits_2_with_a_message(tmp_path, monkeypatch, capsys, port):
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    code, err = run_cli(monkeypatch, capsys, "label", "serve", "--db", db, f"--port={port}")
    assert code == 2 and "--port" in err and "1 to 65535" in err and "Traceback" not in err
