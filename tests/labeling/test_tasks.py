"""Assignment, submission and export logic, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import pytest

from instructrl.datasets.io import read_records
from instructrl.labeling.services.quality import pair_agreement
from instructrl.labeling.services.tasks import choose_replicas
from labeling.helpers import (
    PROMPTS,
    add_user,
    create_tasks_directly,
    login,
    make_app,
    ranking_rows,
    scores,
    upload_prompts,
)


def test_choose_replicas_overlaps_exactly_the_fraction():
    replicas = choose_replicas(n=20, overlap_fraction=0.25, overlap_labelers=3, seed=0)
    assert sorted(replicas) == [1] * 15 + [3] * 5
    assert replicas == choose_replicas(n=20, overlap_fraction=0.25, overlap_labelers=3, seed=0)
    assert choose_replicas(n=3, overlap_fraction=0.0, overlap_labelers=2, seed=0) == [1, 1, 1]


def test_pair_agreement_counts_pairs_ordered_the_same():
    assert pair_agreement([0, 1, 2, 3], [0, 1, 2, 3]) == (6, 6)
    assert pair_agreement([0, 1, 2, 3], [3, 2, 1, 0]) == (0, 6)
    # swapping the two best flips exactly one of the six pairs
    assert pair_agreement([0, 1, 2, 3], [1, 0, 2, 3]) == (5, 6)
    assert pair_agreement([2, 0, 1], [2, 1, 0]) == (2, 3)


@pytest.fixture
def app(db_url):
    app = make_app(db_url)
    add_user(app, "admin", role="admin")
    for name in ("lab1", "lab2", "lab3"):
        add_user(app, name)
    add_user(app, "held", group="heldout")
    upload_prompts(login(app, "admin"), PROMPTS)
    yield app
    app.state.db.dispose()


def test_each_task_goes_to_replicas_labelers_per_group(app):
    # 2 of the 6 ranking tasks overlap (2 labelers each): 8 assignments for the default group
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(PROMPTS), overlap_fraction=1 / 3)
    labelers = {name: login(app, name) for name in ("lab1", "lab2", "lab3")}
    taken: dict[str, int] = {}
    for _round in range(10):
        for name, client in labelers.items():
            r = client.next("ranking")
            if r.status_code == 204:
                continue
            a = r.json()
            assert client.submit(a["id"], ranking=[0, 1, 2, 3], labels=scores()).status_code == 201
            taken[name] = taken.get(name, 0) + 1
    assert sum(taken.values()) == 8
    # the held-out group has its own quota: it can still label every task once per replica
    held = login(app, "held")
    n = 0
    while (r := held.next("ranking")).status_code == 200:
        assert held.submit(r.json()["id"], ranking=[3, 2, 1, 0], labels=scores()).status_code == 201
        n += 1
    assert n == 6  # a single labeler gets each task at most once


def test_next_returns_the_open_assignment_before_a_new_one(app):
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(PROMPTS[:2]))
    lab = login(app, "lab1")
    first = lab.next("ranking").json()
    assert lab.next("ranking").json()["id"] == first["id"]
    assert lab.submit(first["id"], ranking=[0, 1, 2, 3], labels=scores()).status_code == 201
    assert lab.next("ranking").json()["id"] != first["id"]


def test_a_retried_submission_is_stored_once_and_a_second_answer_conflicts(app):
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = login(app, "lab1")
    a = lab.next("demonstration").json()
    first = lab.submit(a["id"], submission_key="key-0001", response="An answer.")
    again = lab.submit(a["id"], submission_key="key-0001", response="An answer.")
    other = lab.submit(a["id"], submission_key="key-0002", response="Another answer.")
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json()["id"] == first.json()["id"]
    from sqlalchemy import func, select

    from instructrl.labeling.models import Submission

    with app.state.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 1


def test_a_task_form_submitted_again_from_a_second_tab_is_a_409_page_not_a_500(app):
    # The service's rollback expired the login's ORM objects; the error page, rendered after the request's
    # database session had closed, then failed to load the user for the page header (DetachedInstanceError).
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(PROMPTS))
    lab = login(app, "lab1")
    a = lab.next("ranking").json()["id"]
    form = {"submission_key": "first-tab", "ranking": "0,1,2,3"} | {f"likert_{i}": "4" for i in range(4)}
    assert lab.post(f"/assignments/{a}", data=form, follow_redirects=False).status_code == 303
    r = lab.post(f"/assignments/{a}", data=form | {"submission_key": "second-tab"})
    assert r.status_code == 409 and "already submitted" in r.text and "lab1" in r.text


def test_invalid_answers_are_refused_with_the_field_named(app):
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(PROMPTS[:1], k=5))
    lab = login(app, "lab1")
    a = lab.next("ranking").json()
    r = lab.submit(a["id"], ranking=[0, 1, 2, 3])
    assert r.status_code == 422 and "field 'ranking'" in r.json()["detail"]
    r = lab.submit(a["id"], ranking=[0, 1, 2, 3, 4], labels=[{"likert": 9, "flags": []}] * 5)
    assert r.status_code == 422
    r = lab.submit(a["id"], ranking=[0, 1, 2, 3, 4], labels=[{"likert": 4, "flags": ["not_a_flag"]}] * 5)
    assert r.status_code == 422
    assert lab.get(f"/api/v1/assignments/{a['id']}").json()["status"] == "pending"


def test_ab_choice_is_stored_in_task_order_whatever_the_display_order(app):
    rows = [
        {
            "prompt": p["prompt"],
            "response_a": f"A{i}",
            "response_b": f"B{i}",
            "model_a": "sft",
            "model_b": "ppo",
        }
        for i, p in enumerate(PROMPTS)
    ]
    create_tasks_directly(app, kind="ab", rows=rows)
    lab = login(app, "lab1")
    swapped = 0
    while (r := lab.next("ab")).status_code == 200:
        view = r.json()["task"]
        swapped += view["response_left"].startswith("B")
        # always prefer the response from model A, wherever it is shown
        choice = "a" if view["response_left"].startswith("A") else "b"
        assert lab.submit(r.json()["id"], preferred=choice).status_code == 201
    assert 0 < swapped < len(rows)  # the order is randomised
    from sqlalchemy import select

    from instructrl.labeling.models import Submission

    with app.state.db.session() as session:
        assert set(session.scalars(select(Submission.preferred))) == {"a"}


def test_export_writes_trainer_records_per_split_and_keeps_heldout_out(app, tmp_path):
    from instructrl.labeling.services.export import export

    create_tasks_directly(app, kind="ranking", rows=ranking_rows(PROMPTS), overlap_fraction=0.0)
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab, held = login(app, "lab1"), login(app, "held")
    labels = [{"likert": 7 - j, "flags": ["hallucination"] if j == 3 else []} for j in range(4)]
    for client in (lab, held):
        while (r := client.next("ranking")).status_code == 200:
            assert client.submit(r.json()["id"], ranking=[0, 1, 2, 3], labels=labels).status_code == 201
        while (r := client.next("demonstration")).status_code == 200:
            assert client.submit(r.json()["id"], response="A careful answer.").status_code == 201
    with app.state.db.session() as session:
        summary = export(session=session, out_dir=tmp_path / "out")
    files = summary.files
    assert summary.excluded_heldout == 12
    assert files["heldout/comparisons.jsonl"] == 6 and files["heldout/demonstrations.jsonl"] == 6
    assert sum(files[f"{s}/comparisons.jsonl"] for s in ("train", "validation", "test")) == 6
    assert sum(files[f"{s}/demonstrations.jsonl"] for s in ("train", "validation", "test")) == 6
    # the trainers' reader loads them unchanged, and the split follows the prompt's user
    comparisons = read_records(tmp_path / "out" / "train" / "comparisons.jsonl", "comparisons")
    assert all(c.labeler_id == "lab1" and c.split == "train" for c in comparisons)  # type: ignore[attr-defined]
    assert comparisons[0].labels[3].flags == ["hallucination"]  # type: ignore[index]
    demos = read_records(tmp_path / "out" / "train" / "demonstrations.jsonl", "demonstrations")
    assert {d.user_id for d in demos} <= {p["user_id"] for p in PROMPTS}  # type: ignore[attr-defined]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files"] == files
