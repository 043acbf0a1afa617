"""Helpers for the labeling tests: the app on a database, users, logged-in API clients, uploads."""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any


def make_app(url: str, **settings: Any):
    from instructrl.labeling.core.config import Settings
    from instructrl.labeling.main import create_app

    return create_app(Settings(database_url=url, **settings))


PASSWORD = "correct-horse-battery"


@functools.cache
def _password_hash() -> str:
    from instructrl.labeling.core.security import hash_password

    return hash_password(PASSWORD)


def add_user(app, name: str, role: str = "labeler", group: str = "default"):
    """A user whose password is PASSWORD. The argon2 hash is computed once per test run (0.15 s each);
    `create_user` itself is exercised by the CLI and admin-page tests."""
    from instructrl.labeling.models import User

    with app.state.db.session() as session:
        user = User(name=name, password_hash=_password_hash(), role=role, group=group)
        session.add(user)
        session.commit()
        return user


@dataclass
class ApiClient:
    """A TestClient logged in through the JSON API, sending its CSRF token on every POST."""

    client: Any
    csrf: str

    def get(self, url: str, **kw: Any):
        return self.client.get(url, **kw)

    def post(self, url: str, **kw: Any):
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        return self.client.post(url, headers=headers, **kw)

    def next(self, kind: str):
        return self.post("/api/v1/assignments/next", json={"kind": kind})

    def submit(self, assignment_id: int, **body: Any):
        body.setdefault("submission_key", uuid.uuid4().hex)
        return self.post(f"/api/v1/assignments/{assignment_id}/submission", json=body)


def login(app, name: str, password: str | None = None) -> ApiClient:
    from fastapi.testclient import TestClient

    client = TestClient(app)
    r = client.post("/api/v1/login", json={"name": name, "password": password or PASSWORD})
    assert r.status_code == 200, r.text
    return ApiClient(client, r.json()["csrf_token"])


def page_csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no csrf_token in the page"
    return m.group(1)


PROMPTS = [
    {"prompt": "Write a short poem about the sea.", "user_id": "alice"},
    {"prompt": "Explain how vaccines work to a child.", "user_id": "bob"},
    {"prompt": "List three uses of baking soda.", "user_id": "carol"},
    {"prompt": "What is the capital of Australia?", "user_id": "dave"},
    {"prompt": "Translate 'good morning' into French.", "user_id": "erin"},
    {"prompt": "Give me tips for a job interview.", "user_id": "frank"},
]


def scores(k: int = 4) -> list[dict[str, Any]]:
    """The `labels` of a ranking of k responses: a Likert score of 4 each, no flags."""
    return [{"likert": 4, "flags": []} for _ in range(k)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload_prompts(
    admin: ApiClient, rows: list[dict[str, Any]] | None = None, filename: str = "prompts.jsonl"
):
    r = admin.post("/api/v1/admin/prompts", files={"file": (filename, jsonl(rows or PROMPTS))})
    assert r.status_code == 201, r.text
    return r.json()


def ranking_rows(prompts: list[dict[str, Any]], k: int = 4, model: str = "m") -> list[dict[str, Any]]:
    return [
        {
            "prompt": p["prompt"],
            "responses": [f"{model} answer {j} to: {p['prompt']}" for j in range(k)],
            "model": model,
        }
        for p in prompts
    ]


def create_tasks_directly(
    app, *, kind: str, rows: list[dict[str, Any]], overlap_fraction: float = 0.0, overlap_labelers: int = 2
):
    """Ranking / A/B tasks through the service layer (the web upload is tested on its own)."""
    from instructrl.labeling.schemas import ABUploadItem, RankingUploadItem
    from instructrl.labeling.services import tasks

    with app.state.db.session() as session:
        if kind == "ranking":
            return tasks.create_ranking_tasks(
                session=session,
                items=[RankingUploadItem.model_validate(r) for r in rows],
                source="test",
                min_k=4,
                max_k=9,
                overlap_fraction=overlap_fraction,
                overlap_labelers=overlap_labelers,
                seed=0,
            )
        if kind == "ab":
            return tasks.create_ab_tasks(
                session=session,
                items=[ABUploadItem.model_validate(r) for r in rows],
                source="test",
                overlap_fraction=overlap_fraction,
                overlap_labelers=overlap_labelers,
                seed=0,
            )
        return tasks.create_demonstration_tasks(
            session=session,
            split="all",
            limit=1000,
            overlap_fraction=overlap_fraction,
            overlap_labelers=overlap_labelers,
            seed=0,
        )


def ranking_app(url: str, **settings: Any):
    """An app with an admin, labelers lab1 and lab2, PROMPTS imported and a ranking task for each."""
    app = make_app(url, **settings)
    add_user(app, "admin", role="admin")
    add_user(app, "lab1")
    add_user(app, "lab2")
    upload_prompts(login(app, "admin"), PROMPTS)
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(PROMPTS))
    return app
