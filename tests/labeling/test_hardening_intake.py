"""Issue 13, prompt intake: the same answer on SQLite and PostgreSQL for odd input, on every entry point."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from instructrl.labeling.models import Prompt
from instructrl.prompts.intake import IntakeSettings
from labeling.helpers import add_user, login, make_app, upload_prompts


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
