"""Nothing acknowledged is lost: a server killed mid-session (SIGKILL) and restarted still has every
acknowledged submission, the labeler stays logged in, and a retried request is not stored twice."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import func, select

from instructrl.labeling.core.db import Database
from instructrl.labeling.models import Submission
from labeling.helpers import (
    PASSWORD,
    PROMPTS,
    add_user,
    create_tasks_directly,
    login,
    make_app,
    ranking_rows,
    scores,
    upload_prompts,
)
from labeling.servers import free_port, serve_process


def test_kill_and_restart_loses_no_acknowledged_submission(db_url, tmp_path):
    app = make_app(db_url)
    add_user(app, "admin", role="admin")
    add_user(app, "lab1")
    upload_prompts(login(app, "admin"), PROMPTS)
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(PROMPTS), overlap_fraction=0.0)
    create_tasks_directly(app, kind="demonstration", rows=[])
    app.state.db.dispose()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = serve_process(db_url, port, str(tmp_path))
    acked: list[str] = []
    try:
        client = httpx.Client(base_url=base, timeout=10)
        csrf = client.post("/api/v1/login", json={"name": "lab1", "password": PASSWORD}).json()["csrf_token"]
        headers = {"X-CSRF-Token": csrf}
        for kind, body in (
            ("ranking", {"ranking": [3, 1, 0, 2], "labels": scores()}),
            ("demonstration", {"response": "Stored."}),
        ):
            while (
                r := client.post("/api/v1/assignments/next", json={"kind": kind}, headers=headers)
            ).status_code == 200:
                key = uuid.uuid4().hex
                s = client.post(
                    f"/api/v1/assignments/{r.json()['id']}/submission",
                    json={"submission_key": key, **body},
                    headers=headers,
                )
                assert s.status_code == 201
                acked.append(key)
                last = (r.json()["id"], {"submission_key": key, **body})
    finally:
        server.kill()  # SIGKILL: no shutdown handler runs
        server.wait()
    assert len(acked) == 12

    server = serve_process(db_url, port, str(tmp_path))
    try:
        # the login survived the restart, and a retry of an acknowledged request is answered, not re-stored
        assert client.get("/api/v1/me").json()["name"] == "lab1"
        assignments = client.get("/api/v1/assignments").json()
        assert len(assignments) == 12 and all(a["status"] == "done" for a in assignments)
        retry = client.post(f"/api/v1/assignments/{last[0]}/submission", json=last[1], headers=headers)
        assert retry.status_code == 200 and retry.json()["submission_key"] == last[1]["submission_key"]
    finally:
        server.kill()
        server.wait()
    db = Database(db_url)
    with db.session() as session:
        stored = set(session.scalars(select(Submission.submission_key)))
        assert stored == set(acked)
        assert session.scalar(select(func.count()).select_from(Submission)) == len(acked)
    db.dispose()
