"""Issue 13, finding 5: a long prompt import must not lock labelers out, on SQLite and PostgreSQL.

The intake commits in short batches, so labelers' writes interleave with it; a failed import leaves
nothing behind; a lock that is busy anyway answers 503 with Retry-After, never 500.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from instructrl.datasets.records import PromptRecord
from instructrl.labeling.core.db import Database
from instructrl.labeling.models import Intake, Prompt
from instructrl.labeling.services import Conflict, prompts
from instructrl.prompts.intake import IntakeSettings, run_intake
from labeling.helpers import (
    PROMPTS,
    add_user,
    create_tasks_directly,
    jsonl,
    login,
    make_app,
    ranking_rows,
    scores,
)


@pytest.fixture
def app(db_url):
    app = make_app(db_url)
    add_user(app, "admin", role="admin")
    add_user(app, "lab")
    yield app
    app.state.db.dispose()


def big_prompt_file(n_bytes: int, tag: str = "big") -> bytes:
    """JSONL of distinct prompts from 2,000 authors, `n_bytes` long."""
    lines, size, i = [], 0, 0
    while size < n_bytes:
        line = json.dumps(
            {
                "prompt": f"{tag} prompt {i}: please explain, in plain words and with one worked example, "
                f"how topic number {i} relates to everyday life and why it matters.",
                "user_id": f"{tag}-author-{i % 2000}",
            }
        )
        lines.append(line + "\n")
        size += len(line) + 1
        i += 1
    return "".join(lines).encode()


def import_file(app, data: bytes, filename: str = "big.jsonl", **kw):
    records = prompts.parse_prompt_file(data=data, filename=filename, limit=len(data) + 1)
    with app.state.db.session() as session:
        return prompts.import_prompts(
            session=session, records=records, settings=IntakeSettings(), filename=filename, **kw
        )


def count(app, query) -> int:
    with app.state.db.session() as session:
        return session.scalar(query) or 0


def test_a_labeler_is_answered_within_2_s_while_a_4_mb_import_runs(app):
    asked = [{"prompt": f"Question {i}: how do tides work?", "user_id": f"u{i}"} for i in range(40)]
    import_file(app, jsonl(asked), filename="asked.jsonl")
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(asked))
    labeler = login(app, "lab")
    data = big_prompt_file(4_000_000)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            import_file(app, data)
        except BaseException as e:  # noqa: BLE001 (asserted below, in the test's thread)
            errors.append(e)

    importer = threading.Thread(target=run)
    importer.start()
    waits: list[float] = []
    while importer.is_alive():
        t = time.perf_counter()
        nxt = labeler.next("ranking")
        if nxt.status_code == 204:  # all 40 done: keep timing `next` alone
            waits.append(time.perf_counter() - t)
            continue
        assert nxt.status_code == 200, nxt.text
        sub = labeler.submit(nxt.json()["id"], ranking=[0, 1, 2, 3], labels=scores())
        assert sub.status_code == 201, sub.text
        waits.append(time.perf_counter() - t)
    importer.join()
    assert not errors, errors
    assert count(app, select(func.count()).select_from(Prompt)) > 20_000
    assert max(waits) < 2.0, f"slowest next+submit {max(waits):.1f} s during the import"
    assert len(waits) >= 3, waits


def test_an_import_commits_in_batches_and_its_report_counts_every_row_exactly(app):
    n = 2 * prompts.IMPORT_BATCH + 10
    records = [
        PromptRecord(prompt=f"question {i} about subject {i}", user_id=f"author{i % 50}") for i in range(n)
    ]
    records += [PromptRecord(prompt="question 3 about subject 3", user_id="other")]  # duplicate
    records += [PromptRecord(prompt="mail me at ann@example.com", user_id="ann")]  # personal information
    records += [PromptRecord(prompt=f"capped question {i}", user_id="heavy") for i in range(205)]
    expected = run_intake(records, IntakeSettings()).report
    commits = []

    def count_commit(conn) -> None:
        commits.append(conn)

    event.listen(app.state.db.engine, "commit", count_commit)
    try:
        with app.state.db.session() as session:
            intake = prompts.import_prompts(
                session=session, records=records, settings=IntakeSettings(), filename="b.jsonl"
            )
    finally:
        event.remove(app.state.db.engine, "commit", count_commit)
    assert intake.report == expected.model_dump(mode="json")
    stored = count(app, select(func.count()).select_from(Prompt).where(Prompt.intake_id == intake.id))
    assert stored == expected.kept == n + 200
    assert (expected.dropped_duplicate, expected.dropped_pii, expected.dropped_user_cap) == (1, 1, 5)
    assert len(commits) >= 3  # short transactions, one per batch, not one for the whole file


def test_a_failing_import_leaves_no_prompt_and_no_intake_behind(app):
    import_file(app, big_prompt_file(3_000, tag="kept"), filename="first.jsonl")
    before = count(app, select(func.count()).select_from(Prompt))
    inserts = []

    def fail_on_third_batch(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO PROMPTS"):
            inserts.append(statement)
            if len(inserts) == 3:
                raise RuntimeError("disk full (simulated)")

    event.listen(app.state.db.engine, "before_cursor_execute", fail_on_third_batch)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            import_file(
                app, big_prompt_file(4 * prompts.IMPORT_BATCH * 200, tag="lost"), filename="second.jsonl"
            )
    finally:
        event.remove(app.state.db.engine, "before_cursor_execute", fail_on_third_batch)
    assert len(inserts) == 3
    assert count(app, select(func.count()).select_from(Prompt)) == before
    assert count(app, select(func.count()).select_from(Intake).where(Intake.filename == "second.jsonl")) == 0


@pytest.mark.parametrize("page", [False, True], ids=["api", "page"])
def test_a_busy_database_lock_answers_503_with_retry_after_not_500(app, page):
    labeler = login(app, "lab")

    def locked(conn, cursor, statement, parameters, context, executemany):
        sqlite = conn.dialect.name == "sqlite"
        message = "database is locked" if sqlite else "canceling statement due to lock timeout"
        raise OperationalError(statement, parameters, Exception(message))

    event.listen(app.state.db.engine, "before_cursor_execute", locked)
    try:
        r = labeler.get("/tasks") if page else labeler.next("ranking")
    finally:
        event.remove(app.state.db.engine, "before_cursor_execute", locked)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert "busy" in r.text


def test_a_large_upload_is_checked_in_a_process_of_its_own_with_the_same_report_and_errors(app):
    admin = login(app, "admin")
    data = big_prompt_file(prompts.IN_A_PROCESS_BYTES + 1000)
    expected = run_intake(
        prompts.parse_prompt_file(data=data, filename="p", limit=len(data)), IntakeSettings()
    )
    r = admin.post("/api/v1/admin/prompts", files={"file": ("big.jsonl", data)})
    assert r.status_code == 201, r.text
    assert r.json()["report"] == expected.report.model_dump(mode="json")
    n = data.count(b"\n")
    r = admin.post("/api/v1/admin/prompts", files={"file": ("bad.jsonl", data + b'{"prompt": 3}\n')})
    assert r.status_code == 422
    assert f"bad.jsonl:{n + 1}: field 'prompt'" in r.json()["detail"]


def test_an_import_that_meets_another_processs_import_is_refused_and_keeps_nothing(app, monkeypatch):
    other = Database(app.state.db.engine.url.render_as_string(hide_password=False), run_migrations=False)
    checked_without = prompts.run_intake

    def meanwhile_another_process_imports(*args, **kwargs):
        monkeypatch.setattr(prompts, "run_intake", checked_without)  # once
        with other.session() as session:  # its own engine: no lock shared with this process's import
            prompts.import_prompts(
                session=session,
                records=[PromptRecord(prompt="theirs", user_id="x")],
                settings=IntakeSettings(),
                filename="theirs.jsonl",
            )
        return checked_without(*args, **kwargs)

    monkeypatch.setattr(prompts, "run_intake", meanwhile_another_process_imports)
    try:
        with pytest.raises(Conflict, match="another import ran at the same time"):
            import_file(app, jsonl([*PROMPTS, {"prompt": "theirs", "user_id": "y"}]), filename="mine.jsonl")
    finally:
        other.dispose()
    with app.state.db.session() as session:
        assert list(session.scalars(select(Prompt.text))) == ["theirs"]
        assert list(session.scalars(select(Intake.filename))) == ["theirs.jsonl"]
