"""Issue 23, part A: text that is not Unicode, non-ASCII tokens, huge numbers, unbounded admin numbers, bodies
parsed before the login check and stale export files. Every answer is a 4xx naming the field, never a 500,
on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from instructrl import cli
from instructrl.labeling.main import SECURITY_HEADERS
from instructrl.labeling.models import GenerationJob, Prompt, Submission, Task
from instructrl.labeling.services import tasks as task_service
from labeling.helpers import (
    PROMPTS,
    create_tasks_directly,
    jsonl,
    login,
    ranking_app,
    scores,
)
from labeling.test_hardening_web import n_rows, post_chunked

LONE = "\ud800"
"""A lone surrogate: `"\\ud800"` in JSON reads as this, which no UTF-8 encoder (nor PostgreSQL) accepts."""


@pytest.fixture
def app(db_url):
    app = ranking_app(db_url)
    yield app
    app.state.db.dispose()


def raw_json(obj: object) -> dict[str, object]:
    """Request arguments sending `obj` as JSON with \\u escapes (httpx's own encoder refuses lone surrogates)."""
    return {"content": json.dumps(obj).encode(), "headers": {"content-type": "application/json"}}


def has_security_headers(response) -> bool:
    return all(response.headers.get(k) == v for k, v in SECURITY_HEADERS.items())


# --- 1. lone surrogates are refused at the boundary, naming the field ----------------------------------


@pytest.mark.parametrize("field", ["name", "password"])
def test_a_lone_surrogate_in_a_login_is_a_failed_login(app, field):
    """As a NUL is (test_hardening_auth): a name or password no account can have, 401 and counted."""
    body = {"name": "lab1", "password": "whatever-password", field: f"x{LONE}y"}
    r = TestClient(app).post("/api/v1/login", **raw_json(body))
    assert r.status_code == 401
    assert has_security_headers(r)


@pytest.mark.parametrize("field", ["response", "note"])
def test_a_lone_surrogate_in_a_demonstration_or_note_is_refused_422_naming_the_field(app, field):
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = login(app, "lab1")
    assignment = lab.next("demonstration").json()["id"]
    body = {"submission_key": "k" * 10, "response": "a fine answer", "note": "unclear", field: f"a{LONE}"}
    r = lab.post(f"/api/v1/assignments/{assignment}/submission", **raw_json(body))
    assert r.status_code == 422 and field in r.text and "U+D800" in r.text
    assert n_rows(app, Submission) == 0
    assert lab.submit(assignment, response="a fine answer").status_code == 201


@pytest.mark.parametrize(
    ("kind", "row", "field"),
    [
        ("rankings", {"prompt": PROMPTS[0]["prompt"], "responses": ["a", f"b{LONE}"]}, "responses.1"),
        ("rankings", {"prompt": PROMPTS[0]["prompt"], "responses": ["a", "b"], "model": LONE}, "model"),
        ("rankings", {"prompt": f"{LONE}{PROMPTS[0]['prompt']}", "responses": ["a", "b"]}, "prompt"),
        (
            "ab",
            {
                "prompt": PROMPTS[0]["prompt"],
                "response_a": LONE,
                "response_b": "b",
                "model_a": "m",
                "model_b": "n",
            },
            "response_a",
        ),
        (
            "ab",
            {
                "prompt": PROMPTS[0]["prompt"],
                "response_a": "a",
                "response_b": "b",
                "model_a": "m",
                "model_b": LONE,
            },
            "model_b",
        ),
    ],
)
def test_a_lone_surrogate_in_a_task_upload_is_refused_naming_line_and_field(app, kind, row, field):
    admin = login(app, "admin")
    before = n_rows(app, Task)
    good = {"prompt": PROMPTS[1]["prompt"], "responses": ["a", "b"]}
    if kind == "ab":
        good = {
            "prompt": PROMPTS[1]["prompt"],
            "response_a": "a",
            "response_b": "b",
            "model_a": "m",
            "model_b": "n",
        }
    data = jsonl([good, row])
    r = admin.post(f"/admin/tasks/{kind}", data={"overlap_fraction": "0"}, files={"file": ("t.jsonl", data)})
    assert r.status_code == 422 and f"t.jsonl:2: field &#39;{field}&#39;" in r.text and "U+D800" in r.text
    assert has_security_headers(r)
    assert n_rows(app, Task) == before


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"prompt": f"hello {LONE}", "user_id": "u1"}, "prompt"),
        ({"prompt": "hello", "user_id": f"u{LONE}"}, "user_id"),
        ({"messages": [{"role": "user", "content": f"hi {LONE}"}], "user_id": "u1"}, "messages.0.content"),
    ],
)
def test_a_lone_surrogate_in_a_prompt_upload_is_refused_naming_line_and_field(app, row, field):
    admin = login(app, "admin")
    before = n_rows(app, Prompt)
    rows = [{"prompt": "a new prompt entirely", "user_id": "u0"}, row]
    r = admin.post("/api/v1/admin/prompts", files={"file": ("p.jsonl", jsonl(rows))})
    assert r.status_code == 422 and f"p.jsonl:2: field '{field}'" in r.json()["detail"]
    assert n_rows(app, Prompt) == before


def test_an_unknown_field_named_by_a_lone_surrogate_is_refused_without_a_500(app):
    admin = login(app, "admin")
    row = {"prompt": PROMPTS[0]["prompt"], "responses": ["a", "b"], LONE: "x"}
    r = admin.post(
        "/admin/tasks/rankings", data={"overlap_fraction": "0"}, files={"file": ("t.jsonl", jsonl([row]))}
    )
    assert r.status_code == 422 and "t.jsonl:1" in r.text and "U+D800" in r.text
    lab = login(app, "lab1")
    a = lab.next("ranking").json()["id"]
    r = lab.post(f"/api/v1/assignments/{a}/submission", **raw_json({"submission_key": "k" * 10, LONE: 1}))
    assert r.status_code == 422 and "U+D800" in r.text


# --- 2. tokens are compared as bytes; every response carries the security headers --------------------


def test_a_non_ascii_csrf_token_is_refused_403_not_500(app):
    client = TestClient(app)
    client.cookies.set("instructrl_login_csrf", "abc")
    r = client.post("/login", content=b"name=a&password=b&csrf_token=%C3%A9", headers={
        "content-type": "application/x-www-form-urlencoded"
    })  # fmt: skip
    assert r.status_code == 403 and has_security_headers(r)
    lab = login(app, "lab1")
    r = lab.post("/api/v1/assignments/next", json={"kind": "ranking"}, headers={"X-CSRF-Token": "é".encode()})
    assert r.status_code == 403 and has_security_headers(r)


def test_a_500_carries_the_security_headers_and_no_detail(app, monkeypatch):
    def broken(**_: object) -> None:
        raise RuntimeError("a bug with a secret in it")

    monkeypatch.setattr(task_service, "list_assignments", broken)
    client = TestClient(app, raise_server_exceptions=False)
    r = client.post("/api/v1/login", json={"name": "lab1", "password": "correct-horse-battery"})
    assert r.status_code == 200
    for path in ("/api/v1/assignments", "/tasks"):
        r = client.get(path)
        assert r.status_code == 500 and has_security_headers(r), path
        assert "secret" not in r.text


# --- 5. numbers past Python's 4,300-digit limit -------------------------------------------------------


@pytest.mark.parametrize("kind", ["prompts", "rankings"])
def test_a_jsonl_number_of_5000_digits_is_refused_422_naming_line_and_field(app, kind):
    admin = login(app, "admin")
    number = "9" * 5000
    if kind == "prompts":
        data = b'{"prompt": "fine", "user_id": "u1"}\n{"prompt": "x", "user_id": ' + number.encode() + b"}\n"
        r = admin.post("/api/v1/admin/prompts", files={"file": ("n.jsonl", data)})
        assert r.status_code == 422 and "n.jsonl:2" in r.json()["detail"]
    else:
        data = b'{"prompt": "x", "responses": ["a", "b"], "model": ' + number.encode() + b"}\n"
        r = admin.post(
            "/admin/tasks/rankings", data={"overlap_fraction": "0"}, files={"file": ("n.jsonl", data)}
        )
        assert r.status_code == 422 and "n.jsonl:1" in r.text


# --- 6. admins' numbers and paths are bounded -----------------------------------------------------------


@pytest.mark.parametrize("limit", ["-1", "0", "1e20", "1" * 20, "1" * 30, "100001", "ten"])
def test_a_demonstration_task_limit_out_of_bounds_is_refused_422_and_creates_nothing(app, limit):
    admin = login(app, "admin")
    before = n_rows(app, Task)
    r = admin.post("/admin/tasks/demonstrations", data={"limit": limit, "split": "all"})
    assert r.status_code == 422 and "limit" in r.text and has_security_headers(r)
    assert n_rows(app, Task) == before
    r = admin.post("/admin/tasks/demonstrations", data={"limit": "2", "split": "all"})
    assert r.status_code == 200 and n_rows(app, Task) == before + 2


@pytest.fixture
def checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # passes the checkpoint check: the number is what fails
    return str(tmp_path)


@pytest.mark.parametrize("seed", [2**31, 2**63, 10**30, -1])
def test_a_generation_seed_out_of_bounds_is_refused_422_by_the_api(app, checkpoint, seed):
    r = login(app, "admin").post("/api/v1/admin/jobs", json={"checkpoint": checkpoint, "seed": seed})
    assert r.status_code == 422 and "seed" in r.text
    assert n_rows(app, GenerationJob) == 0


def test_a_30_digit_seed_or_a_5000_character_checkpoint_in_the_job_form_is_refused_422(app, checkpoint):
    admin = login(app, "admin")
    r = admin.post("/admin/jobs", data={"checkpoint": checkpoint, "seed": "1" * 30})
    assert r.status_code == 422 and "seed" in r.text
    r = admin.post("/admin/jobs", data={"checkpoint": "/" + "d" * 5000})
    assert r.status_code == 422 and "checkpoint" in r.text
    r = admin.post("/api/v1/admin/jobs", json={"checkpoint": "/" + "d" * 5000})
    assert r.status_code == 422 and "checkpoint" in r.text
    # long but under the bound: a path the file system refuses (a 300-character name) is a 422 too
    r = admin.post("/api/v1/admin/jobs", json={"checkpoint": "/tmp/" + "d" * 300})
    assert r.status_code == 422 and "checkpoint" in r.text
    assert n_rows(app, GenerationJob) == 0


# --- 12. bodies are read only as far as the sender is entitled -----------------------------------------


def test_a_20_mb_login_body_is_refused_413_after_reading_16_kib_at_most(app):
    chunk = b"0," * 8 * 1024
    chunks = [b"[", *[chunk] * 1280]  # 20 MiB of [0,0,...
    headers = {"content-type": "application/json", "transfer-encoding": "chunked"}
    status, body, pulled = asyncio.run(post_chunked(app, "/api/v1/login", chunks, headers))
    assert status == 413 and b"login" in body
    assert pulled <= 16 * 1024 + len(chunk)
    r = TestClient(app).post("/api/v1/login", **raw_json([0] * 7_000_000))  # 21 MB, refused on its length
    assert r.status_code == 413 and "login" in r.json()["detail"] and has_security_headers(r)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/assignments/next", "application/json"),
        ("/api/v1/admin/jobs", "application/json"),
        ("/api/v1/admin/prompts", "multipart/form-data; boundary=xyz"),
        ("/admin/prompts", "multipart/form-data; boundary=xyz"),
    ],
)
@pytest.mark.parametrize("cookie", [None, "instructrl_session=not-a-session"])
def test_a_large_body_from_someone_not_logged_in_is_refused_401_unread(app, path, content_type, cookie):
    headers = {"content-type": content_type, "transfer-encoding": "chunked"}
    if cookie:
        headers["cookie"] = cookie
    chunks = [b"[", *[b"0," * 8 * 1024] * 1280]
    status, _, pulled = asyncio.run(post_chunked(app, path, chunks, headers))
    assert status in (401, 303) and pulled == 0
    r = TestClient(app, follow_redirects=False).post(
        path, content=b"x" * 100_000, headers={"content-type": content_type}
    )
    assert r.status_code == 401 or r.headers.get("location", "").startswith("/login")
    assert has_security_headers(r)


def test_a_logged_in_labelers_longest_demonstration_still_fits(app):
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = login(app, "lab1")
    assignment = lab.next("demonstration").json()["id"]
    response = "\U0001f600" * 100_000  # 1.2 MB as JSON \u escape pairs
    r = lab.post(
        f"/api/v1/assignments/{assignment}/submission",
        **raw_json({"submission_key": "k" * 10, "response": response}),
    )
    assert r.status_code == 201, r.text


# --- 14. an export leaves only the files its manifest lists -----------------------------------------------


def test_a_round_export_into_a_full_exports_folder_leaves_only_the_files_it_lists(
    app, db_url, tmp_path, capsys, monkeypatch
):
    lab = login(app, "lab1")
    a = lab.next("ranking").json()["id"]
    assert lab.submit(a, ranking=[0, 1, 2, 3], labels=scores()).status_code == 201
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])
    out = tmp_path / "export"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "mine.txt").write_text("the admin's own file")
    (out / "README.txt").write_text("the admin's own file")

    def export(*args: str) -> None:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["label", "export", "--db", db_url, "--out", str(out), *args])
        assert not exit_info.value.code, capsys.readouterr()

    def listed() -> set[str]:
        return set(json.loads((out / "manifest.json").read_text())["files"])

    def present() -> set[str]:
        return {p.relative_to(out).as_posix() for p in out.rglob("*.jsonl")}

    export()
    assert "ab.jsonl" in present() and "train/demonstrations.jsonl" in present()
    assert present() == listed()
    export("--round", "1")
    assert present() == listed() and "ab.jsonl" not in present()
    assert not any(name.endswith("demonstrations.jsonl") for name in present())
    assert (out / "notes" / "mine.txt").exists() and (out / "README.txt").exists()  # not the export's files
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left
    export()
    assert present() == listed() and "ab.jsonl" in present()


def test_an_export_refuses_a_folder_that_is_a_file(app, db_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["label", "export", "--db", db_url, "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and "not a folder" in out + err and "Traceback" not in out + err
