"""Access control, CSRF, injection, and bad uploads: refused with a clear message, changing nothing."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from instructrl.labeling.models import Intake, Prompt, Submission, Task
from labeling.helpers import (
    PASSWORD,
    PROMPTS,
    create_tasks_directly,
    jsonl,
    login,
    page_csrf,
    ranking_app,
    scores,
    upload_prompts,
)


@pytest.fixture
def app(sqlite_url):
    app = ranking_app(sqlite_url, max_upload_bytes=64 * 1024)
    yield app
    app.state.db.dispose()


def counts(app) -> tuple[int, ...]:
    with app.state.db.session() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(t)) or 0 for t in (Prompt, Intake, Task, Submission)
        )


def browser_login(app, name: str) -> tuple[TestClient, str]:
    """Log in through the HTML form, as a browser does; returns the client and its page CSRF token."""
    client = TestClient(app)
    token = page_csrf(client.get("/login").text)
    r = client.post(
        "/login", data={"name": name, "password": PASSWORD, "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303
    home = client.get(r.headers["location"])
    return client, page_csrf(home.text)


def test_a_labeler_cannot_see_or_submit_another_labelers_assignment(app):
    lab1, lab2 = login(app, "lab1"), login(app, "lab2")
    mine = lab1.next("ranking").json()["id"]
    assert lab2.get(f"/api/v1/assignments/{mine}").status_code == 404
    assert lab2.get(f"/assignments/{mine}").status_code == 404
    r = lab2.submit(mine, ranking=[0, 1, 2, 3])
    assert r.status_code == 404
    assert (
        lab2.post(f"/assignments/{mine}", data={"submission_key": "k" * 10, "ranking": "0,1,2,3"}).status_code
        == 404
    )
    assert [a["id"] for a in lab2.get("/api/v1/assignments").json()] == []
    assert counts(app)[3] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/admin"),
        ("get", "/admin/prompts"),
        ("get", "/admin/quality"),
        ("get", "/admin/export.zip"),
        ("get", "/api/v1/admin/quality"),
        ("get", "/api/v1/admin/users"),
        ("get", "/api/v1/admin/export.zip"),
        ("post", "/api/v1/admin/users"),
        ("post", "/admin/tasks/demonstrations"),
    ],
)
def test_admin_pages_and_apis_refuse_labelers_403_and_anonymous_401(app, method, path):
    lab = login(app, "lab1")
    assert getattr(lab, method)(path).status_code == 403
    anon = getattr(TestClient(app), method)(path, follow_redirects=False)
    if path.startswith("/api/"):
        assert anon.status_code == 401
    else:
        assert anon.status_code == 303 and anon.headers["location"].startswith("/login?next=")


def test_labeler_pages_redirect_anonymous_users_to_login(app):
    r = TestClient(app).get("/tasks", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/tasks"


def test_forms_and_api_calls_without_the_csrf_token_are_refused(app):
    admin, token = browser_login(app, "admin")
    before = counts(app)
    r = admin.post(
        "/admin/prompts", files={"file": ("p.jsonl", jsonl([{"prompt": "new one", "user_id": "x"}]))}
    )
    assert r.status_code == 403 and "CSRF" in r.text
    r = admin.post(
        "/admin/prompts",
        data={"csrf_token": "forged"},
        files={"file": ("p.jsonl", jsonl([{"prompt": "new", "user_id": "x"}]))},
    )
    assert r.status_code == 403
    lab = login(app, "lab1")
    a = lab.next("ranking").json()["id"]
    r = lab.client.post(
        f"/api/v1/assignments/{a}/submission", json={"submission_key": "k" * 10, "ranking": [0, 1, 2, 3]}
    )
    assert r.status_code == 403
    assert counts(app)[:2] == before[:2] and counts(app)[3] == 0
    # with the token, the same form works
    r = admin.post(
        "/admin/prompts",
        data={"csrf_token": token},
        files={"file": ("p.jsonl", jsonl([{"prompt": "new one", "user_id": "x"}]))},
    )
    assert r.status_code == 200 and counts(app)[0] == before[0] + 1


def test_login_csrf_and_cookie_flags(app):
    client = TestClient(app)
    r = client.post(
        "/login", data={"name": "admin", "password": PASSWORD, "csrf_token": "nope"}, follow_redirects=False
    )
    assert r.status_code == 403
    token = page_csrf(client.get("/login").text)
    r = client.post("/login", data={"name": "admin", "password": "wrong-password", "csrf_token": token})
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    r = client.post(
        "/login",
        data={"name": "admin", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin"  # no open redirect
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "script-src 'self'" in client.get("/admin").headers["content-security-policy"]


INJECTIONS = [
    "Robert'); DROP TABLE prompts;-- <script>alert('x')</script>",
    '"><img src=x onerror=alert(1)> 1 OR 1=1; --',
]


def test_injection_strings_are_stored_verbatim_and_shown_escaped(app):
    admin = login(app, "admin")
    rows = [{"prompt": p, "user_id": f"evil{i}"} for i, p in enumerate(INJECTIONS)]
    report = upload_prompts(admin, rows)["report"]
    assert report["kept"] == 2
    hostile = [
        {
            "prompt": INJECTIONS[0],
            "responses": [INJECTIONS[1], "<b>bold</b>", "x' OR '1'='1", "</textarea><script>1</script>"],
            "model": "<i>m</i>",
        }
    ]
    create_tasks_directly(app, kind="ranking", rows=hostile)
    with app.state.db.session() as s:
        assert set(INJECTIONS) <= set(s.scalars(select(Prompt.text)))
        task = s.scalar(select(Task).where(Task.model == "<i>m</i>"))
        assert task is not None and task.responses == hostile[0]["responses"]
    lab = login(app, "lab1")
    while (r := lab.next("ranking")).status_code == 200 and r.json()["task"]["prompt"] != INJECTIONS[0]:
        lab.submit(r.json()["id"], ranking=[0, 1, 2, 3], labels=scores())
    page = lab.get(f"/assignments/{r.json()['id']}").text
    assert "<script>alert" not in page and "<img src=x" not in page and "</textarea><script>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    prompts_page = admin.get("/admin/prompts").text
    assert "<script>alert" not in prompts_page and "&lt;script&gt;" in prompts_page


def test_oversized_upload_is_refused_and_changes_nothing(app):
    admin, token = browser_login(app, "admin")
    before = counts(app)
    big = jsonl([{"prompt": f"prompt number {i} " + "x" * 200, "user_id": f"u{i}"} for i in range(400)])
    assert len(big) > 64 * 1024
    r = admin.post("/admin/prompts", data={"csrf_token": token}, files={"file": ("big.jsonl", big)})
    assert r.status_code == 413 and "over the upload limit" in r.text
    api = login(app, "admin")
    r = api.post("/api/v1/admin/prompts", files={"file": ("big.jsonl", big)})
    assert r.status_code == 413 and "upload limit" in r.json()["detail"]
    assert counts(app) == before


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("p.csv", b"prompt,user\nhello,u1\n", "the CSV header must name the columns prompt, user_id"),
        ("p.csv", b'prompt,user_id\n"unterminated,u1\n', "p.csv:"),
        ("p.csv", b"prompt,user_id\nhello,u1,extra\n", "p.csv:2: 3 columns, the header has 2"),
        ("p.jsonl", b'{"prompt": "ok", "user_id": "u1"}\n{"prompt": "broken"\n', "p.jsonl:2: not valid JSON"),
        (
            "p.jsonl",
            b'{"prompt": "ok", "user_id": "u1"}\n{"prompt": "no user"}\n',
            "p.jsonl:2: field 'user_id': missing",
        ),
        ("p.jsonl", b"[1, 2]\n", "p.jsonl:1: expected a JSON object"),
        ("p.jsonl", b"", "no records found"),
        ("p.csv", b"\xff\xfe\x00bad", "not UTF-8"),
    ],
)
def test_malformed_prompt_files_get_a_clear_error_and_change_nothing(app, filename, content, message):
    admin = login(app, "admin")
    before = counts(app)
    r = admin.post("/api/v1/admin/prompts", files={"file": (filename, content)})
    assert r.status_code == 422
    assert message in r.json()["detail"]
    assert counts(app) == before


def test_malformed_response_uploads_change_nothing(app):
    admin, token = browser_login(app, "admin")
    before = counts(app)
    bad_k = jsonl([{"prompt": PROMPTS[0]["prompt"], "responses": ["a", "b"], "model": "m"}])
    r = admin.post("/admin/tasks/rankings", data={"csrf_token": token}, files={"file": ("r.jsonl", bad_k)})
    assert r.status_code == 422 and "a ranking task needs 4 to 9" in r.text
    unknown = jsonl(
        [{"prompt": "never imported", "response_a": "a", "response_b": "b", "model_a": "x", "model_b": "y"}]
    )
    r = admin.post("/admin/tasks/ab", data={"csrf_token": token}, files={"file": ("ab.jsonl", unknown)})
    assert r.status_code == 422 and "prompt not among the imported prompts" in r.text
    assert counts(app) == before


def test_a_labeler_cannot_take_admin_actions_through_the_api(app):
    lab = login(app, "lab1")
    assert (
        lab.post("/api/v1/admin/users", json={"name": "x", "password": "p" * 10, "role": "admin"}).status_code
        == 403
    )
    assert lab.post("/api/v1/admin/prompts", files={"file": ("p.jsonl", jsonl(PROMPTS))}).status_code == 403


def test_logout_ends_the_session(app):
    lab = login(app, "lab1")
    assert lab.get("/api/v1/me").status_code == 200
    cookie = lab.client.cookies.get("instructrl_session")
    assert lab.post("/api/v1/logout").status_code == 204
    stale = TestClient(app)
    stale.cookies.set("instructrl_session", cookie)
    assert stale.get("/api/v1/me").status_code == 401


def test_page_csrf_token_is_bound_to_the_login(app):
    _, token1 = browser_login(app, "lab1")
    _, token2 = browser_login(app, "lab2")
    assert token1 != token2 and re.fullmatch(r"[A-Za-z0-9_-]{40,}", token1)
