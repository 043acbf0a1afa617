"""Passwords (argon2id), session tokens and CSRF tokens."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field

from instructrl.datasets.text import strip_invisible
from instructrl.errors import UserError

_hasher = PasswordHasher()  # argon2id with the RFC 9106 low-memory parameters

# Verifying against this keeps the login time the same for unknown user names (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class PasswordPolicy(BaseModel):
    """What a password must be wherever one is set. `password` and eight spaces were accepted before."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    min_length: int = Field(default=10, ge=8, le=128)
    """Fewest characters (NIST SP 800-63B asks for 8 at least; length matters more than character classes)."""
    refuse_common: bool = True
    """Refuse guessable passwords: the 30,000 most common of zxcvbn's list (from leaked password dumps), and
    any that zxcvbn scores below 3 (fewer than 10^8 guesses: repeats, sequences, keyboard rows, a word and
    digits; `aaaaaaaaaa` and `admin12345` were accepted before)."""

    def check(self, password: str, *, name: str = "") -> None:
        """A UserError saying what is wrong with `password`; None when it will do. Judged without the
        characters that show nothing (12 zero-width spaces were accepted before)."""
        shown = strip_invisible(password)
        if len(shown) < self.min_length:
            raise UserError(
                f"the password must have at least {self.min_length} characters (invisible ones do not count)"
            )
        if not shown.strip():
            raise UserError("the password must not be all spaces")
        folded = shown.strip().casefold()
        if name and folded == name.casefold():
            raise UserError("the password must not be the user name")
        if self.refuse_common and folded in common_passwords():
            raise UserError("that password is among the most common ones; choose another")
        if self.refuse_common and _guessable(shown):
            raise UserError(
                "that password is too easy to guess (a repeat, a sequence, a keyboard row or a common word "
                "with digits); choose a longer one, e.g. three or four unrelated words"
            )


def _guessable(password: str) -> bool:
    from zxcvbn import zxcvbn

    return int(zxcvbn(password[:72])["score"]) < 3  # zxcvbn refuses longer ones; 72 is plenty to judge


@functools.cache
def common_passwords() -> frozenset[str]:
    """zxcvbn's list of 30,000 passwords most common in leaked dumps (lower-case), loaded once on first use."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """256 random bits, URL-safe: session cookies and CSRF tokens."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Sessions are stored by the hash of their cookie, so a database leak does not leak live sessions."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens as sent. Compared as bytes: `compare_digest` refuses a str with
    any non-ASCII character, and a client's 'é' was a 500."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))
