"""Prompts that are conversations: stored with their turns, shown to labelers turn by turn, exported as
`messages` for the trainers; prompts stored as text keep their one block."""

from __future__ import annotations

import pytest

from labeling.helpers import add_user, create_tasks_directly, login, make_app, upload_prompts

TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "<b>Hi</b>"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Which & why?"},
]


@pytest.fixture
def app(sqlite_url):
    app = make_app(sqlite_url)
    add_user(app, "admin", role="admin")
    add_user(app, "lab1")
    yield app
    app.state.db.dispose()


def test_a_conversation_is_shown_turn_by_turn_and_exported_as_messages(app, tmp_path):
    from instructrl.datasets.io import read_records
    from instructrl.labeling.services.export import export

    admin = login(app, "admin")
    rows = [{"messages": TURNS, "user_id": "ann"}, {"prompt": "A plain <prompt>", "user_id": "bob"}]
    assert upload_prompts(admin, rows)["report"]["kept"] == 2
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = login(app, "lab1")
    pages = {}
    while (r := lab.next("demonstration")).status_code == 200:
        a = r.json()
        pages["turns" if a["task"]["messages"] else "text"] = lab.get(f"/assignments/{a['id']}").text
        assert lab.submit(a["id"], response="Because.").status_code == 201

    shown = [
        '<li class="turn turn-system"><div class="role">System</div><div class="text">Be brief.</div></li>',
        '<li class="turn turn-user"><div class="role">User</div><div class="text">&lt;b&gt;Hi&lt;/b&gt;</div></li>',
        '<li class="turn turn-assistant"><div class="role">Assistant</div><div class="text">Hello.</div></li>',
        '<li class="turn turn-user"><div class="role">User</div><div class="text">Which &amp; why?</div></li>',
    ]
    at = [pages["turns"].index(li) for li in shown]
    assert at == sorted(at) and "<b>Hi</b>" not in pages["turns"]
    assert '<div class="text" id="prompt-text">A plain &lt;prompt&gt;</div>' in pages["text"]
    assert 'class="turns"' not in pages["text"]

    with app.state.db.session() as session:
        export(session=session, out_dir=tmp_path / "out")
    demos = {
        d.user_id: d
        for split in ("train", "validation", "test")
        if (tmp_path / "out" / split / "demonstrations.jsonl").read_text()
        for d in read_records(tmp_path / "out" / split / "demonstrations.jsonl", "demonstrations")
    }
    ann, bob = demos["ann"], demos["bob"]
    assert [m.model_dump() for m in ann.messages] == TURNS and ann.response == "Because."  # type: ignore[union-attr]
    assert ann.prompt == "System: Be brief.\n\nUser: <b>Hi</b>\n\nAssistant: Hello.\n\nUser: Which & why?"
    assert bob.messages is None and bob.prompt == "A plain <prompt>"
