"""Issue 23, uploads: line separators inside JSON strings, indexed prompt lookups outside the write lock,
intake records that say when an import did not finish, and re-import answers of bounded size."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event, select, text

from instructrl.datasets.io import read_records
from instructrl.datasets.records import PromptRecord
from instructrl.labeling.core.db import Database, _write_lock, make_engine, migrate
from instructrl.labeling.models import Intake, Prompt
from instructrl.labeling.services import prompts
from instructrl.labeling.services.export import export
from instructrl.prompts.intake import IntakeSettings
from labeling.helpers import (
    add_user,
    create_tasks_directly,
    jsonl,
    login,
    make_app,
    ranking_rows,
    upload_prompts,
)


@pytest.fixture
def app(db_url):
    app = make_app(db_url)
    add_user(app, "admin", role="admin")
    add_user(app, "lab1")
    yield app
    app.state.db.dispose()


# --- JSONL lines end at "\n" only (finding 13) --------------------------------------------------------

ODD_BREAKS = "one\u2028two\u2029three\x85four"
"""Characters that str.splitlines() takes for line ends, but JSON strings may hold as they are."""


def test_jsonl_with_unicode_line_separators_inside_strings_is_read_and_its_export_loads_back(app, tmp_path):
    admin = login(app, "admin")
    rows = [
        {"prompt": f"Explain {ODD_BREAKS} please.", "user_id": "ann"},
        {"prompt": "Plain.", "user_id": "bob"},
    ]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode()
    r = admin.post("/api/v1/admin/prompts", files={"file": ("odd.jsonl", data)})
    assert r.status_code == 201, r.text
    assert r.json()["report"]["kept"] == 2
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = login(app, "lab1")
    while (r := lab.next("demonstration")).status_code == 200:
        assert lab.submit(r.json()["id"], response=f"Answer {ODD_BREAKS}.").status_code == 201

    with app.state.db.session() as session:
        export(session=session, out_dir=tmp_path / "out")
    demos = [
        d
        for path in (tmp_path / "out").glob("*/demonstrations.jsonl")
        if path.stat().st_size
        for d in read_records(path, "demonstrations")
    ]
    assert sorted(d.prompt for d in demos) == ["Explain " + ODD_BREAKS + " please.", "Plain."]
    assert {d.response for d in demos} == {f"Answer {ODD_BREAKS}."}


# --- ranking and A/B uploads: an indexed lookup, before the write lock (finding 4) --------------------


def test_an_uploads_prompts_are_found_by_an_indexed_hash_in_a_few_queries_without_the_write_lock(app):
    admin = login(app, "admin")
    rows = [{"prompt": f"Question number {i}?", "user_id": f"u{i % 7}"} for i in range(300)]
    upload_prompts(admin, rows)
    lookups: list[tuple[str, bool]] = []
    engine = app.state.db.engine

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "FROM prompts" in statement:
            lock = _write_lock(engine)  # SQLite's; PostgreSQL has none
            lookups.append((statement, getattr(lock, "locked", lambda: False)()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert create_tasks_directly(app, kind="ranking", rows=ranking_rows(rows)) == (300, 0)
        ab = [
            {"prompt": r["prompt"], "response_a": "a", "response_b": "b", "model_a": "m", "model_b": "n"}
            for r in rows
        ]
        assert create_tasks_directly(app, kind="ab", rows=ab) == (300, 0)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert 2 <= len(lookups) <= 4, [s for s, _ in lookups]  # one batched query per upload, not one per item
    assert all("text_hash IN" in s for s, _ in lookups)
    if engine.dialect.name == "sqlite":
        assert not any(locked for _, locked in lookups), "the prompts were looked up holding the write lock"
        with engine.connect() as conn:
            plan = conn.execute(
                text("EXPLAIN QUERY PLAN SELECT id FROM prompts WHERE text_hash IN ('a', 'b')")
            ).all()
        assert "ix_prompts_text_hash" in str(plan)


def test_an_upload_naming_unknown_prompts_lists_their_lines(app):
    admin = login(app, "admin")
    upload_prompts(admin, [{"prompt": "Known?", "user_id": "ann"}])
    rows = ranking_rows([{"prompt": "Known?"}, {"prompt": "Unknown?"}, {"prompt": "known?"}])
    with pytest.raises(Exception, match=r"line\(s\) 2, 3: prompt not among the imported prompts"):
        create_tasks_directly(app, kind="ranking", rows=rows)


def test_upgrading_fills_in_the_text_hash_of_every_stored_prompt(db_url):
    engine = make_engine(db_url)
    migrate(engine, "0006")
    with engine.begin() as conn:
        for i, prompt in enumerate(["Old prompt?", "Другой?", "Old prompt?"]):
            conn.execute(
                text(
                    "INSERT INTO prompts (text, user_id, split, pii, created_at) "
                    "VALUES (:t, :u, 'train', '[]', CURRENT_TIMESTAMP)"
                ),
                {"t": prompt, "u": f"u{i}"},
            )
        conn.execute(
            text(
                "INSERT INTO intakes (filename, report, dropped, created_at) VALUES ('old', '{}', '{}', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    app = make_app(db_url)
    try:
        rows = ranking_rows([{"prompt": "Old prompt?"}, {"prompt": "Другой?"}])
        assert create_tasks_directly(app, kind="ranking", rows=rows) == (2, 0)
        with app.state.db.session() as session:
            assert session.scalar(select(Intake.status)) == "complete"
    finally:
        app.state.db.dispose()


# --- intake records: incomplete until the import commits; bounded answers (finding 15) ----------------


def test_an_intake_is_marked_importing_until_its_last_batch_commits(app):
    rows = [
        PromptRecord(prompt=f"q {i} about {i}", user_id=f"a{i % 40}")
        for i in range(2 * prompts.IMPORT_BATCH + 5)
    ]
    seen: list[str | None] = []
    other = Database(app.state.db.engine.url.render_as_string(hide_password=False), run_migrations=False)
    inserts = 0

    def status_seen_by_another_connection() -> str | None:
        with other.session() as s:
            return s.scalar(select(Intake.status))

    def look_from_outside(conn, cursor, statement, parameters, context, executemany):
        nonlocal inserts
        if statement.lstrip().upper().startswith("INSERT INTO PROMPTS"):
            inserts += 1
            if inserts > 1:  # the intake row and the first batch are committed by now
                # Another thread: this one's context would make SQLite's reader wait for the write lock.
                with ThreadPoolExecutor(1) as pool:
                    seen.append(pool.submit(status_seen_by_another_connection).result())

    event.listen(app.state.db.engine, "before_cursor_execute", look_from_outside)
    try:
        with app.state.db.session() as session:
            intake = prompts.import_prompts(
                session=session, records=rows, settings=IntakeSettings(), filename="big.jsonl"
            )
    finally:
        event.remove(app.state.db.engine, "before_cursor_execute", look_from_outside)
    with other.session() as s:
        assert s.scalar(select(Intake.status).where(Intake.id == intake.id)) == "complete"
    other.dispose()
    assert seen == ["importing", "importing"]


def test_a_re_import_answers_with_counts_and_at_most_100_dropped_prompts_per_reason(app):
    admin = login(app, "admin")
    rows = [{"prompt": f"Question number {i}?", "user_id": f"u{i % 7}"} for i in range(250)]
    upload_prompts(admin, rows)
    r = admin.post("/api/v1/admin/prompts", files={"file": ("again.jsonl", jsonl(rows))})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["report"]["dropped_duplicate"] == 250 and body["report"]["kept"] == 0
    assert len(body["dropped"]["duplicate"]) == prompts.MAX_DROPPED_LISTED == 100
    assert body["status"] == "complete"
    page = admin.get(f"/admin/intakes/{body['id']}").text
    assert "the first 100 of 250" in page
    with app.state.db.session() as session:
        assert session.scalar(select(Prompt.text_hash).limit(1))


# --- the intake's child processes die with the server (finding 9) -------------------------------------


def children(pid: int) -> set[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found.update(int(c) for c in (task / "children").read_text().split())
    return {c for c in found if alive(c)}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its entry waits to be reaped


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux /proc")
def test_the_intakes_child_processes_exit_soon_after_the_server_is_killed(sqlite_url, tmp_path):
    import httpx

    from instructrl.labeling.core.db import Database
    from instructrl.labeling.core.security import hash_password
    from instructrl.labeling.models import User
    from labeling.servers import free_port, serve_process

    db = Database(sqlite_url)
    with db.session() as session:
        session.add(User(name="admin", password_hash=hash_password("correct-horse-battery"), role="admin"))
        session.commit()
    db.dispose()
    rows = [
        {"prompt": f"Question {i}: how does topic {i} work, in a few words?", "user_id": f"u{i}"}
        for i in range(60_000)
    ]
    data = jsonl(rows)
    assert len(data) > 4 * prompts.IN_A_PROCESS_BYTES
    port = free_port()
    server = serve_process(sqlite_url, port, tmp_path)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        token = client.post(
            "/api/v1/login", json={"name": "admin", "password": "correct-horse-battery"}
        ).json()
        upload = threading.Thread(
            target=lambda: _ignore_errors(
                client.post,
                "/api/v1/admin/prompts",
                files={"file": ("big.jsonl", data)},
                headers={"X-CSRF-Token": token["csrf_token"]},
            )
        )
        upload.start()
        deadline = time.monotonic() + 20
        while not (kids := children(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kids, "the import started no process"
        time.sleep(0.3)
        server.kill()
        server.wait()
        deadline = time.monotonic() + 5
        while any(alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [k for k in kids if alive(k)]
        for k in left:
            os.kill(k, signal.SIGKILL)
        assert not left, f"{len(left)} child processes outlived the server by 5 s"
        upload.join()
    finally:
        if server.poll() is None:
            server.kill()


def _ignore_errors(call, *args, **kwargs) -> None:
    with contextlib.suppress(Exception):
        call(*args, **kwargs)
