"""Issue 23: arbitrary Unicode (lone surrogates, controls, bidi marks, look-alikes), huge numbers and odd
shapes sent to every route as someone not logged in, a labeler and an admin: never a 500, every answer with
the security headers, and the export of what was stored still loads in the trainers' readers."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instructrl.datasets.io import read_comparisons, read_demonstrations
from instructrl.labeling.api.routes import admin, auth, labeler
from instructrl.labeling.main import SECURITY_HEADERS
from instructrl.labeling.services.export import export
from labeling.helpers import PASSWORD, add_user, create_tasks_directly, ranking_app

ODD = [
    "\ud800",
    "\udfff",
    "\x00",
    "\x1b",
    "\u202e",
    "\u2028",
    "\u0085",
    "\ufeff",
    "\u200b",
    "\u3164",
    "а",
    "ᴀ",
]
"""Lone surrogates, NUL and controls, bidi and line separators, invisible and look-alike letters."""
FIELDS = [
    *("name", "password", "csrf_token", "next", "role", "group", "kind", "submission_key", "response"),
    *("note", "ranking", "labels", "likert_0", "likert_1", "flags_0", "preferred", "limit", "split"),
    *("overlap_fraction", "overlap_labelers", "checkpoint", "model_name", "checkpoints", "round", "k"),
    *("max_new_tokens", "temperature", "seed", "prompt", "responses", "response_a", "model_a", "user_id"),
]
EXAMPLES = 50
"""Requests per kind of sender (each is 10-30 ms): enough to reach every route with odd values in a few
seconds; the `ODD` characters are drawn often, not left to chance."""


@dataclass(frozen=True)
class Huge:
    """A JSON number of `digits` digits (Python's json refuses to write one past 4,300)."""

    digits: int


text = st.text(st.one_of(st.characters(), st.sampled_from(ODD)), max_size=30)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.integers(4_000, 6_000).map(Huge),
)
scalars = st.one_of(text, numbers, st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=8,
)
bodies = st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), values, max_size=6)
form_values = st.one_of(text, st.integers(-(2**70), 2**70).map(str), st.just("9" * 5000))
forms = st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), form_values, max_size=6)


def to_json(value: Any) -> str:
    """JSON with \\u escapes, huge numbers included (`Huge`)."""
    if isinstance(value, Huge):
        return "9" * value.digits
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(to_json, value)) + "]"
    return json.dumps(value)


def form_encode(form: dict[str, str]) -> bytes:
    """URL-encoded as a hostile client may: a lone surrogate as its (invalid) UTF-8 bytes."""

    def quote(s: str) -> str:
        return urllib.parse.quote_plus(s.encode("utf-8", "surrogatepass"))

    return "&".join(f"{quote(k)}={quote(v)}" for k, v in form.items()).encode()


def latin1(s: str) -> str:
    """`s` as its UTF-8 bytes (a lone surrogate's included) read back as Latin-1: what httpx sends as those
    bytes in a multipart header, which it writes only from text it can encode."""
    return s.encode("utf-8", "surrogatepass").decode("latin-1")


UPLOADS = ("/admin/prompts", "/api/v1/admin/prompts", "/admin/tasks/rankings", "/admin/tasks/ab")
UPLOAD_LINE = {
    "prompt": text,
    "user_id": text,
    "responses": st.lists(text, max_size=3),
    "response_a": text,
    "response_b": text,
    "model": text,
    "model_a": text,
    "model_b": st.integers(-(2**70), 2**70),
    "messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": text}), max_size=2),
}
upload_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=8,
)
upload_lines = st.lists(
    st.one_of(
        st.fixed_dictionaries({}, optional=UPLOAD_LINE),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), upload_values, max_size=6),
    ),
    min_size=1,
    max_size=4,
).map(lambda rows: "\n".join(map(to_json, rows)).encode())


@dataclass
class Sender:
    client: TestClient
    csrf: str


def sender(app, role: str) -> Sender:
    client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    if role == "anonymous":
        client.cookies.set("instructrl_login_csrf", "login-token")
        return Sender(client, "login-token")
    r = client.post("/api/v1/login", json={"name": role, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return Sender(client, r.json()["csrf_token"])


def routes(method: str) -> list[str]:
    """Every path of the app taking `method`, but logging out (which would end the fuzzing)."""
    routers = (auth.router, auth.api, labeler.pages, labeler.api, admin.pages, admin.api)
    paths = {
        r.path for router in routers for r in router.routes if isinstance(r, APIRoute) and method in r.methods
    }
    return sorted(p for p in paths if not p.endswith("/logout"))


def fill(path: str, ids: list[int]) -> st.SearchStrategy[str]:
    """`path` with its {parameters} drawn: ids that exist, ids that do not, and text."""
    parts = path.split("/")
    choices = [
        st.one_of(
            st.sampled_from([*map(str, ids), "0", str(10**20), "9" * 5000]), text.map(urllib.parse.quote)
        )
        if p.startswith("{")
        else st.just(p)
        for p in parts
    ]
    return st.tuples(*choices).map("/".join)


def check(response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text[:300])
    missing = {k for k, v in SECURITY_HEADERS.items() if response.headers.get(k) != v}
    assert not missing, (response.status_code, response.request.url, missing)


@pytest.fixture
def app(sqlite_url):
    app = ranking_app(sqlite_url)
    create_tasks_directly(app, kind="demonstration", rows=[])
    add_user(app, "victim")  # the admin's user actions land on this account, not on the admin's own
    yield app
    app.state.db.dispose()


@pytest.mark.parametrize("role", ["anonymous", "lab1", "admin"])
def test_no_route_answers_500_to_odd_text_or_numbers_and_every_answer_has_the_security_headers(
    app, role, tmp_path
):
    who = sender(app, role)
    own_id = {"anonymous": -1, "lab1": 2, "admin": 1}[role]
    ids = [i for i in range(1, 7) if i != own_id]
    posts = [(path, fill(path, ids)) for path in routes("POST")]
    gets = [(path, fill(path, ids)) for path in routes("GET")]

    @st.composite
    def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
        method = draw(st.sampled_from(["POST"] * 4 + ["GET"]))
        template, path_strategy = draw(st.sampled_from(posts if method == "POST" else gets))
        path = draw(path_strategy)
        headers = {"X-CSRF-Token": draw(st.sampled_from([who.csrf] * 4 + ["é", "\u202e"])).encode()}
        if method == "GET":
            query = draw(st.dictionaries(st.sampled_from(FIELDS), form_values, max_size=3))
            return method, path + "?" + form_encode(query).decode(), {"headers": headers}
        if template in UPLOADS:
            form = {latin1(k): v.encode("utf-8", "surrogatepass") for k, v in draw(forms).items()}
            name = draw(st.sampled_from(["p.jsonl", "p.csv", "\u202egnp.jsonl", "x" * 300]))
            files = {"file": (latin1(name), draw(upload_lines))}
            return method, path, {"headers": headers, "data": form, "files": files}
        if template.startswith("/api/"):
            body = to_json(draw(st.one_of(bodies, values))).encode()
            headers["content-type"] = b"application/json"
            return method, path, {"headers": headers, "content": body}
        form = draw(forms)
        form.setdefault("csrf_token", draw(st.sampled_from([who.csrf, "é"])))
        headers["content-type"] = b"application/x-www-form-urlencoded"
        return method, path, {"headers": headers, "content": form_encode(form)}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(request=requests())
    def odd_requests_get_4xx_with_headers(request: tuple[str, str, dict[str, Any]]) -> None:
        method, path, kw = request
        check(who.client.request(method, path, **kw))

    odd_requests_get_4xx_with_headers()

    if role == "lab1":
        # what a labeler can store (odd but valid Unicode) exports into files the trainers read
        @settings(max_examples=10, deadline=None, database=None)
        @given(response=text.filter(str.strip), note=text)
        def odd_answers_are_stored_or_refused(response: str, note: str) -> None:
            r = who.client.post(
                "/api/v1/assignments/next", json={"kind": "demonstration"}, headers={"X-CSRF-Token": who.csrf}
            )
            check(r)
            if r.status_code != 200:
                return
            body = {"submission_key": uuid.uuid4().hex, "response": response, "note": note}
            check(
                who.client.post(
                    f"/api/v1/assignments/{r.json()['id']}/submission",
                    content=to_json(body).encode(),
                    headers={"X-CSRF-Token": who.csrf, "content-type": "application/json"},
                )
            )

        odd_answers_are_stored_or_refused()
        with app.state.db.session() as session:
            summary = export(session=session, out_dir=tmp_path / "export")
        readers = {"demonstrations.jsonl": read_demonstrations, "comparisons.jsonl": read_comparisons}
        for path, n in summary.files.items():
            name = path.rsplit("/", 1)[-1]
            if n and name in readers:
                assert len(readers[name](tmp_path / "export" / path)) == n
