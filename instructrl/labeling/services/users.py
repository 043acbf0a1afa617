"""Accounts and logins."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from instructrl.errors import UserError
from instructrl.labeling.core.db import writes
from instructrl.labeling.core.security import hash_password, new_token, token_hash, verify_password
from instructrl.labeling.models import DEFAULT_GROUP, AuthSession, User, utcnow
from instructrl.labeling.schemas import UserCreate
from instructrl.labeling.services import Conflict


@writes
def create_user(*, session: Session, user_in: UserCreate) -> User:
    # Case-insensitively: 'lab0' and 'Lab0' would be two accounts that people take for one. Names are
    # ASCII (UserCreate), so lower() is the same in Python, SQLite and PostgreSQL.
    same = session.scalar(select(User).where(func.lower(User.name) == user_in.name.lower()))
    if same is not None:
        raise Conflict(f"a user named '{same.name}' already exists (names are compared ignoring case)")
    if user_in.role == "admin" and user_in.group != DEFAULT_GROUP:
        raise UserError("admins have no labeler group; leave --group out for an admin")
    user = User(
        name=user_in.name,
        password_hash=hash_password(user_in.password),
        role=user_in.role,
        group=user_in.group,
    )
    session.add(user)
    session.commit()
    return user


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.role, User.name)))


def authenticate(*, session: Session, name: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.name == name))
    ok = verify_password(password, user.password_hash if user else None)
    return user if ok else None


@writes
def create_login(*, session: Session, user: User, hours: float) -> tuple[str, AuthSession]:
    """A new login for `user`: returns the cookie token (stored only as its hash) and the session row."""
    token = new_token()
    now = utcnow()
    auth = AuthSession(
        token_hash=token_hash(token),
        user_id=user.id,
        csrf_token=new_token(),
        created_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    session.add(auth)
    # Expired logins are dropped as new ones come in.
    session.execute(delete(AuthSession).where(AuthSession.expires_at < now))
    session.commit()
    return token, auth


def get_login(*, session: Session, token: str) -> AuthSession | None:
    auth = session.scalar(select(AuthSession).where(AuthSession.token_hash == token_hash(token)))
    if auth is None or auth.expires_at < utcnow():
        return None
    return auth


@writes
def end_login(*, session: Session, token: str) -> None:
    session.execute(delete(AuthSession).where(AuthSession.token_hash == token_hash(token)))
    session.commit()
