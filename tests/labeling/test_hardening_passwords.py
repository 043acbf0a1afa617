"""Issue 23, finding 11: passwords that are easy to guess are refused, whatever invisible characters pad them."""

from __future__ import annotations

import pytest

from instructrl.errors import UserError
from instructrl.labeling.core.security import PasswordPolicy
from labeling.helpers import add_user, login, make_app

GUESSABLE = [
    "aaaaaaaaaa",
    "1111111111",
    "0000000000",
    "abcdefghij",
    "admin12345",
    "..........",
    "1234567890",
    "qwerty12345",
    "password1234",
    "Summer2024!",
    "aaaaaaaaaa" * 10,
]
INVISIBLE_PADDING = ["\u200b" * 12, "\u200b" * 12 + "abc", "ab\u00adcd\u200bef\u2060gh\ufe0f", "\u3164" * 12]


@pytest.mark.parametrize("password", GUESSABLE)
def test_guessable_passwords_are_refused_saying_why_and_what_to_do(password):
    with pytest.raises(UserError, match="too easy to guess.*longer|among the most common"):
        PasswordPolicy().check(password, name="lab1")


@pytest.mark.parametrize("password", INVISIBLE_PADDING)
def test_invisible_characters_do_not_count_towards_a_password(password):
    with pytest.raises(UserError, match="at least 10 characters"):
        PasswordPolicy().check(password, name="lab1")


@pytest.mark.parametrize(
    "password",
    [
        "correct-horse-battery",
        "a-long-password",
        "xK9#mQ2pL!",
        "lange Wörter über Brücken",
        "a" * 9 + "-Zq8!rT",
    ],
)
def test_passwords_that_are_hard_to_guess_are_accepted(password):
    PasswordPolicy().check(password, name="lab1")


def test_the_api_refuses_a_guessable_password_with_422(sqlite_url):
    app = make_app(sqlite_url)
    add_user(app, "admin", role="admin")
    admin = login(app, "admin")
    for password in ["admin12345", "\u200b" * 12]:
        r = admin.post("/api/v1/admin/users", json={"name": "lab9", "role": "labeler", "password": password})
        assert r.status_code == 422, r.text
        assert "password" in r.json()["detail"]
    app.state.db.dispose()
