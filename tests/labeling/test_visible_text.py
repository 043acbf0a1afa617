"""Bidi controls and other invisible characters in outside text are shown, not obeyed (issue 13, finding 10):
a file name 'gnp.exe' inside RIGHT-TO-LEFT OVERRIDE marks displayed as 'exe.png'."""

from __future__ import annotations

import pytest

from instructrl.labeling.core.display import visible
from labeling.helpers import add_user, create_tasks_directly, login, make_app, upload_prompts

RLO, PDF, ZWSP, LRI, PDI = "\u202e", "\u202c", "\u200b", "\u2066", "\u2069"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"{RLO}gnp.exe{PDF}", "⟦U+202E⟧gnp.exe⟦U+202C⟧"),
        (f"cap{ZWSP}user", "cap⟦U+200B⟧user"),
        (f"{LRI}x{PDI}", "⟦U+2066⟧x⟦U+2069⟧"),
        ("bell\x07 and BOM\ufeff", "bell⟦U+0007⟧ and BOM⟦U+FEFF⟧"),
        ("soft\u00adhyphen, tag \U000e0041", "soft⟦U+00AD⟧hyphen, tag ⟦U+E0041⟧"),
        ("tabs\tand\nnew lines\r\n stay", "tabs\tand\nnew lines\r\n stay"),
        ("العربية and 中文 and café", "العربية and 中文 and café"),  # right-to-left *letters* are fine
    ],
)
def test_invisible_characters_are_shown_as_their_code_points(text, shown):
    assert visible(text) == shown


@pytest.fixture
def app(sqlite_url):
    app = make_app(sqlite_url)
    add_user(app, "admin", role="admin")
    add_user(app, "lab1")
    yield app
    app.state.db.dispose()


def test_file_names_prompts_and_notes_show_their_bidi_marks_on_every_page(app):
    admin = login(app, "admin")
    prompt = f"Rename {RLO}gnp.exe{PDF} for me"
    intake = upload_prompts(admin, [{"prompt": prompt, "user_id": "ann"}], filename=f"{RLO}gnp.jsonl")
    create_tasks_directly(app, kind="demonstration", rows=[])
    shown_prompt = "Rename ⟦U+202E⟧gnp.exe⟦U+202C⟧ for me"

    page = admin.get(f"/admin/intakes/{intake['id']}").text
    assert "⟦U+202E⟧gnp.jsonl" in page and RLO not in page
    page = admin.get("/admin/prompts").text
    assert "⟦U+202E⟧gnp.jsonl" in page and shown_prompt in page and RLO not in page

    lab = login(app, "lab1")
    a = lab.next("demonstration").json()["id"]
    page = lab.get(f"/assignments/{a}").text
    assert shown_prompt in page and RLO not in page
    assert shown_prompt in lab.get("/tasks").text
    assert lab.submit(a, response="Done.", note=f"odd {ZWSP}mark").status_code == 201
    page = admin.get("/admin/quality").text
    assert "odd ⟦U+200B⟧mark" in page and ZWSP not in page


def test_a_form_shown_again_after_an_error_keeps_what_the_labeler_typed(app):
    admin = login(app, "admin")
    upload_prompts(admin, [{"prompt": "Say hi.", "user_id": "ann"}])
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = login(app, "lab1")
    a = lab.next("demonstration").json()["id"]
    typed = f"family: 👨{chr(0x200D)}👩{chr(0x200D)}👧"  # joined by ZERO WIDTH JOINERs
    r = lab.post(f"/assignments/{a}", data={"submission_key": "k" * 10, "response": " ", "note": typed})
    assert r.status_code == 422 and typed in r.text
