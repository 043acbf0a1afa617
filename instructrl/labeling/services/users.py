"""Accounts and logins."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from instructrl.errors import UserError
from instructrl.labeling.core.config import LoginThrottle as ThrottleSettings
from instructrl.labeling.core.db import writes
from instructrl.labeling.core.security import (
    PasswordPolicy,
    hash_password,
    new_token,
    token_hash,
    verify_password,
)
from instructrl.labeling.models import DEFAULT_GROUP, Assignment, AuthSession, LoginThrottle, User, utcnow
from instructrl.labeling.schemas import UserCreate, valid_text
from instructrl.labeling.services import Conflict, NotFound, TooManyRequests


@writes
def create_user(*, session: Session, user_in: UserCreate, policy: PasswordPolicy) -> User:
    # Case-insensitively: 'lab0' and 'Lab0' would be two accounts that people take for one. Names are
    # ASCII (UserCreate), so lower() is the same in Python, SQLite and PostgreSQL.
    same = session.scalar(select(User).where(func.lower(User.name) == user_in.name.lower()))
    if same is not None:
        raise Conflict(f"a user named '{same.name}' already exists (names are compared ignoring case)")
    if user_in.role == "admin" and user_in.group != DEFAULT_GROUP:
        raise UserError("admins have no labeler group; leave --group out for an admin")
    policy.check(user_in.password, name=user_in.name)
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


def _storable(text: str) -> bool:
    """Whether `text` could be a stored name or password (`schemas.valid_text`: no NUL, which PostgreSQL
    cannot compare, and no lone surrogate, which no UTF-8 encoder writes)."""
    try:
        valid_text(text)
    except ValueError:
        return False
    return True


def authenticate(*, session: Session, name: str, password: str) -> User | None:
    # A name or password no account can have fails as a wrong one does (500 before on PostgreSQL, and for
    # lone surrogates on both databases), after the same password check: it takes as long
    valid = _storable(name) and _storable(password)
    user = session.scalar(select(User).where(User.name == name)) if valid else None
    ok = verify_password(password if valid else "", user.password_hash if user else None)
    return user if ok and user is not None and not user.disabled else None


# --- login throttling --------------------------------------------------------------------------------
# An attempt on an account is counted as failed before the password is checked, and taken back when it
# succeeds: ten parallel guessers cannot all pass the check before any of their failures is stored. An
# address's count grows only with failures, so fifty labelers behind one NAT can log in at the same moment.


def log_in(
    *, session: Session, name: str, password: str, address: str, throttle: ThrottleSettings
) -> User | None:
    """The user when the name and password match; None when they do not. TooManyRequests, without
    checking the password, while the account name or the client address is locked out."""
    # storable on PostgreSQL (no NUL, no lone surrogate), and still counted
    subject = name.replace("\x00", "\ufffd").encode("utf-8", "replace").decode().casefold()[:128]
    account, client = ("account", subject), ("address", address[:128])
    wait = _take_attempt(session=session, account=account, client=client, throttle=throttle)
    if wait is not None:
        raise TooManyRequests(
            f"too many failed logins; try again in {max(1, round(wait))} s", retry_after=wait
        )
    user = authenticate(session=session, name=name, password=password)
    _attempt_done(session=session, account=account, client=client, succeeded=user is not None)
    return user


def _throttle_row(*, session: Session, key: tuple[str, str], now: datetime) -> LoginThrottle:
    scope, subject = key
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(LoginThrottle)
        .values(scope=scope, subject=subject, failures=0, lockouts=0, window_start=now)
        .on_conflict_do_nothing(index_elements=["scope", "subject"])
    )
    row = session.scalar(
        select(LoginThrottle)
        .where(LoginThrottle.scope == scope, LoginThrottle.subject == subject)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


@writes
def _take_attempt(
    *, session: Session, account: tuple[str, str], client: tuple[str, str], throttle: ThrottleSettings
) -> float | None:
    """Count one attempt against the account; the seconds to wait instead when it or the address is (now)
    locked."""
    now = utcnow()
    window = timedelta(minutes=throttle.window_minutes)
    limits = {"account": throttle.max_failures, "address": throttle.max_failures_per_address}
    # Rows always in this order ('account' < 'address'), so two attempts never deadlock (PostgreSQL).
    rows = [_throttle_row(session=session, key=key, now=now) for key in (account, client)]
    locked = [(r.locked_until - now).total_seconds() for r in rows if r.locked_until and r.locked_until > now]
    if locked:
        session.commit()
        return max(locked)
    waits = []
    for row in rows:
        if row.window_start + window <= now:  # a quiet window: start counting again
            row.failures, row.window_start = 0, now
            if row.locked_until is None or row.locked_until + window <= now:
                row.lockouts = 0
        if row.failures >= limits[row.scope]:
            row.lockouts += 1
            wait = min(throttle.lockout_seconds * 2 ** (row.lockouts - 1), throttle.max_lockout_seconds)
            row.locked_until = now + timedelta(seconds=wait)
            row.failures, row.window_start = 0, row.locked_until
            waits.append(wait)
    if not waits:
        rows[0].failures += 1
    # Forget rows that no longer hold anything back (unknown names tried once would pile up otherwise).
    stale = now - window - timedelta(seconds=throttle.max_lockout_seconds)
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.window_start < stale,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < stale),
        )
    )
    session.commit()
    return max(waits) if waits else None


@writes
def _attempt_done(
    *, session: Session, account: tuple[str, str], client: tuple[str, str], succeeded: bool
) -> None:
    """A success resets its account's count and backoff (not the address's: one good login must not wash
    out a guessing spree from the same place); a failure adds to the address's count."""
    if succeeded:
        scope, subject = account
        session.execute(
            delete(LoginThrottle).where(LoginThrottle.scope == scope, LoginThrottle.subject == subject)
        )
    else:
        row = _throttle_row(session=session, key=client, now=utcnow())
        row.failures += 1
    session.commit()


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
    if auth is None or auth.expires_at < utcnow() or auth.user.disabled:
        return None
    return auth


@writes
def end_login(*, session: Session, token: str) -> None:
    session.execute(delete(AuthSession).where(AuthSession.token_hash == token_hash(token)))
    session.commit()


# --- what an admin can do about an account -----------------------------------------------------------


def find_user(*, session: Session, name: str) -> User:
    """The user named `name` (ignoring case, as names are unique that way)."""
    user = session.scalar(select(User).where(func.lower(User.name) == name.lower()))
    if user is None:
        raise NotFound(f"no user named '{name}'")
    return user


def get_user(*, session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def live_sessions(*, session: Session) -> dict[int, int]:
    """Unexpired logins per user id."""
    rows = session.execute(
        select(AuthSession.user_id, func.count())
        .where(AuthSession.expires_at >= utcnow())
        .group_by(AuthSession.user_id)
    )
    return {user_id: n for user_id, n in rows}


def _end_sessions(session: Session, user_id: int) -> int:
    result = session.execute(delete(AuthSession).where(AuthSession.user_id == user_id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@writes
def end_sessions(*, session: Session, user_id: int) -> int:
    """Log the user out everywhere; returns how many sessions ended."""
    n = _end_sessions(session, get_user(session=session, user_id=user_id).id)
    session.commit()
    return n


@writes
def set_disabled(*, session: Session, user_id: int, disabled: bool) -> User:
    """Disable (or enable again) an account. Disabling ends its sessions at once and gives its pending
    assignments back to the pool; its submitted work stays."""
    user = get_user(session=session, user_id=user_id)
    if disabled and user.role == "admin":
        # Lock every admin row (PostgreSQL; in id order, so two of these never deadlock) and read them anew:
        # two admins disabling each other at one moment each saw the other enabled, and left none (issue 23).
        admins = session.scalars(
            select(User)
            .where(User.role == "admin")
            .order_by(User.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
        others = [a for a in admins if a.id != user.id and not a.disabled]
        if not user.disabled and not others:
            raise Conflict(f"'{user.name}' is the last admin that can log in; enable or add another first")
    user.disabled = disabled
    if disabled:
        _end_sessions(session, user.id)
        session.execute(
            update(Assignment)
            .where(Assignment.labeler_id == user.id, Assignment.status == "pending")
            .values(status="released")
        )
    session.commit()
    return user


@writes
def reset_password(*, session: Session, user_id: int, password: str, policy: PasswordPolicy) -> int:
    """Set a new password (checked against the policy) and end all the user's sessions; returns how many."""
    user = get_user(session=session, user_id=user_id)
    policy.check(password, name=user.name)
    user.password_hash = hash_password(password)
    n = _end_sessions(session, user.id)
    session.commit()
    return n
