"""Issue 13, prompt intake: the same answer on SQLite and PostgreSQL for odd input, on every entry point."""

from __future__ import annotations

import html
from typing import get_args

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from instructrl import cli
from instructrl.errors import UserError
from instructrl.labeling.core.db import Database, make_engine, migrate
from instructrl.labeling.models import GROUPS, GenerationJob, Intake, Prompt, Submission, Task, User
from instructrl.labeling.schemas import MAX_PROMPT, Group
from instructrl.prompts.intake import IntakeSettings
from labeling.helpers import (
    PROMPTS,
    add_user,
    create_tasks_directly,
    jsonl,
    login,
    make_app,
    page_csrf,
    upload_prompts,
)


@pytest.fixture
def app(db_url):
    app = make_app(db_url, intake=IntakeSettings(max_per_user=2))
    add_user(app, "admin", role="admin")
    yield app
    app.state.db.dispose()


def stored_prompts(app) -> list[tuple[str, str, str]]:
    with app.state.db.session() as s:
        return [tuple(row) for row in s.execute(select(Prompt.text, Prompt.user_id, Prompt.split))]


# --- author ids and duplicates are compared normalised (finding 7) ------------------------------------


def test_respelled_author_ids_share_one_cap_and_one_split_across_uploads(app):
    admin = login(app, "admin")
    upload_prompts(admin, [{"prompt": "first question", "user_id": "capuser"}])
    spellings = ["capuser ", " capuser", "CAPUSER", "capuser\u200b", "ｃａｐｕｓｅｒ"]
    report = upload_prompts(
        admin, [{"prompt": f"question number {i}", "user_id": u} for i, u in enumerate(spellings)]
    )["report"]
    assert (report["kept"], report["dropped_user_cap"]) == (1, 4)
    stored = stored_prompts(app)
    assert {split for _, _, split in stored} == {stored[0][2]}  # one user, one split
    assert sorted(user for _, user, _ in stored) == ["capuser", "capuser "]  # as written


def test_duplicates_hidden_by_invisible_characters_or_look_alikes_are_dropped(app):
    admin = login(app, "admin")
    upload_prompts(admin, [{"prompt": "Write a poem about cats", "user_id": "u0"}])
    variants = [
        "Write a poem about\u200b cats",
        "Write a po\u00adem about cats",
        "Ｗｒｉｔｅ ａ ｐｏｅｍ ａｂｏｕｔ ｃａｔｓ",
    ]
    report = upload_prompts(admin, [{"prompt": v, "user_id": f"u{i}"} for i, v in enumerate(variants, 1)])
    assert (report["report"]["kept"], report["report"]["dropped_duplicate"]) == (0, 3)


# --- labeler groups are a fixed set (finding 4) -------------------------------------------------------


def test_an_unknown_labeler_group_is_refused_by_the_api_the_form_and_the_database(app):
    admin = login(app, "admin")
    body = {"name": "ann", "password": "a-long-password", "role": "labeler", "group": "heldOut"}
    r = admin.post("/api/v1/admin/users", json=body)
    assert r.status_code == 422 and "'default' or 'heldout'" in r.text
    token = page_csrf(admin.get("/admin/users").text)
    r = admin.post("/admin/users", data={**body, "csrf_token": token})
    assert r.status_code == 422 and "&#39;default&#39; or &#39;heldout&#39;" in r.text
    with app.state.db.session() as s, pytest.raises(IntegrityError):
        s.add(User(name="bob", password_hash="x", role="labeler", group="heldOut"))
        s.commit()
    with app.state.db.session() as s:
        assert s.scalars(select(User.name)).all() == ["admin"]


def test_the_cli_refuses_an_unknown_group_with_exit_2_and_the_allowed_values(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])
    pw = tmp_path / "pw"
    pw.write_text("a-long-password\n")
    argv = ["label", "add-user", "ann", "--role", "labeler", "--group", "heldOut", "--password-file", str(pw)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--db", f"sqlite:///{tmp_path / 'labels.db'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "'heldOut'" in err and "'default'" in err and "'heldout'" in err


def test_upgrading_a_database_with_a_misspelt_group_stops_and_names_the_users(db_url):
    engine = make_engine(db_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (name, password_hash, role, labeler_group, created_at) "
                "VALUES ('ann', 'x', 'labeler', 'heldOut', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    with pytest.raises(UserError, match=r"ann \(heldOut\); set each one's labeler_group to 'default' or"):
        Database(db_url)


def test_the_group_type_of_the_api_is_the_databases_set():
    assert get_args(Group) == GROUPS


# --- what PostgreSQL cannot store is refused on both databases, naming the line (finding 6) -----------

LONG = "x" * 256


def table_counts(app) -> tuple[int, ...]:
    with app.state.db.session() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(t)) or 0 for t in (Prompt, Intake, Task, Submission)
        )


def ranking(prompt: str = PROMPTS[0]["prompt"], **changes):
    return {"prompt": prompt, "responses": [f"answer {i}" for i in range(4)], "model": "m", **changes}


def ab(prompt: str = PROMPTS[0]["prompt"], **changes):
    return {"prompt": prompt, "response_a": "a", "response_b": "b", "model_a": "x", "model_b": "y", **changes}


@pytest.mark.parametrize(
    ("url", "rows", "message"),
    [
        (
            "/api/v1/admin/prompts",
            [{"prompt": "fine", "user_id": "u"}, {"prompt": "a\x00b", "user_id": "u"}],
            "up.jsonl:2: field 'prompt': contains a NUL character",
        ),
        (
            "/api/v1/admin/prompts",
            [{"prompt": "fine", "user_id": "u\x00"}],
            "up.jsonl:1: field 'user_id': contains a NUL",
        ),
        (
            "/api/v1/admin/prompts",
            [{"prompt": "fine", "user_id": "u"}, {"prompt": "long id", "user_id": LONG}],
            "up.jsonl:2: field 'user_id': String should have at most 255 characters",
        ),
        (
            "/admin/tasks/rankings",
            [ranking(), ranking(responses=["a", "b\x00", "c", "d"])],
            "up.jsonl:2: field 'responses': contains a NUL character",
        ),
        (
            "/admin/tasks/rankings",
            [ranking(model=LONG)],
            "up.jsonl:1: field 'model': String should have at most 255",
        ),
        ("/admin/tasks/rankings", [ranking(prompt="a\x00b")], "up.jsonl:1: field 'prompt': contains a NUL"),
        ("/admin/tasks/ab", [ab(response_b="\x00")], "up.jsonl:1: field 'response_b': contains a NUL"),
        (
            "/admin/tasks/ab",
            [ab(model_a=LONG)],
            "up.jsonl:1: field 'model_a': String should have at most 255",
        ),
    ],
)
def test_nul_characters_and_overlong_names_in_uploads_are_refused_naming_line_and_field(
    app, url, rows, message
):
    admin = login(app, "admin")
    upload_prompts(admin, PROMPTS)
    before = table_counts(app)
    r = admin.post(url, files={"file": ("up.jsonl", jsonl(rows))})
    assert r.status_code == 422
    assert message in html.unescape(r.text)
    assert table_counts(app) == before


@pytest.mark.parametrize("url", ["/api/v1/admin/prompts", "/admin/tasks/rankings"])
def test_an_overlong_or_nul_file_name_is_refused(app, url):
    admin = login(app, "admin")
    upload_prompts(admin, PROMPTS)
    before = table_counts(app)
    rows = [ranking()] if "rankings" in url else PROMPTS
    for name in ("p" * 300 + ".jsonl", "p\x00.jsonl"):
        # by hand: httpx would percent-encode the NUL
        body = (
            f'--b\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
            + jsonl(rows)
            + b"\r\n--b--\r\n"
        )
        r = admin.post(url, content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 422 and "file name" in html.unescape(r.text)
    assert table_counts(app) == before


@pytest.mark.parametrize("field", ["response", "note"])
def test_nul_in_a_submitted_response_or_note_is_refused_on_both_databases(app, field):
    upload_prompts(login(app, "admin"), PROMPTS)
    create_tasks_directly(app, kind="demonstration", rows=[])
    add_user(app, "lab")
    lab = login(app, "lab")
    assignment = lab.next("demonstration").json()["id"]
    body = {"response": "a fine answer", "note": "unclear prompt", field: "bad \x00 text"}
    r = lab.submit(assignment, **body)
    assert r.status_code == 422 and "NUL" in r.text and field in r.text
    assert lab.submit(assignment, response="a fine answer").status_code == 201


def test_a_generation_job_with_an_overlong_model_name_is_refused(app, tmp_path):
    upload_prompts(login(app, "admin"), PROMPTS)
    (tmp_path / "config.json").write_text("{}")  # passes the checkpoint check: the name is what fails
    body = {"checkpoint": str(tmp_path), "model_name": LONG}
    r = login(app, "admin").post("/api/v1/admin/jobs", json=body)
    assert r.status_code == 422 and "model_name" in r.text
    with app.state.db.session() as s:
        assert s.scalars(select(GenerationJob)).all() == []


def test_the_cli_import_refuses_nul_naming_the_line_on_both_databases(db_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])
    path = tmp_path / "p.csv"
    path.write_text('prompt,user_id\nfine,u1\n"bad \x00 prompt",u2\n')
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["label", "import-prompts", str(path), "--db", db_url])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "p.csv:3: field 'prompt': contains a NUL character" in err


# --- one prompt cannot stall the server (finding 2) ---------------------------------------------------


def test_a_prompt_over_the_length_limit_is_refused_naming_the_line(app):
    admin = login(app, "admin")
    before = table_counts(app)
    rows = [PROMPTS[0], {"prompt": "b." * (MAX_PROMPT // 2 + 1), "user_id": "u"}]
    r = admin.post("/api/v1/admin/prompts", files={"file": ("up.jsonl", jsonl(rows))})
    assert r.status_code == 422
    assert f"up.jsonl:2: field 'prompt': String should have at most {MAX_PROMPT} characters" in r.text
    assert table_counts(app) == before
