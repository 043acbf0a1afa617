"""Typed, keyword-only service functions: the app's logic, called by the routes, the CLI and the tests.

Each function that writes commits its own transaction, so every acknowledged change is stored whole.
"""

from __future__ import annotations

import math

from instructrl.errors import UserError


class NotFound(UserError):
    """The thing does not exist, or is not the caller's to see (HTTP 404)."""


class Conflict(UserError):
    """The request clashes with stored state, e.g. a second, different submission (HTTP 409)."""


class TooLarge(UserError):
    """An upload over the size limit (HTTP 413)."""


class TooManyRequests(UserError):
    """Too many attempts or tasks in a while: HTTP 429 with Retry-After (whole seconds)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))
