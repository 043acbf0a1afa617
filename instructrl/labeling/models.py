"""The database tables. Every submission is one row written in the transaction that marks its assignment done.

A task's content (prompt, responses) is immutable once created; labelers' work lives in `submissions`,
one per assignment, found again by its client-generated `submission_key` when a request is retried.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

ROLES = ("admin", "labeler")
TASK_KINDS = ("demonstration", "ranking", "ab")
DEFAULT_GROUP = "default"
HELDOUT_GROUP = "heldout"
GROUPS = (DEFAULT_GROUP, HELDOUT_GROUP)
"""Labeler groups are a fixed set: a misspelt held-out group would send evaluation work into training."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(
            "labeler_group IN (" + ", ".join(f"'{g}'" for g in GROUPS) + ")", name="ck_users_labeler_group"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    """'admin' or 'labeler'."""
    group: Mapped[str] = mapped_column("labeler_group", String(32), default=DEFAULT_GROUP)
    """'default', or 'heldout': work kept for evaluation only (not exported for training)."""
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    """Set by an admin: the user cannot log in and their sessions stop working."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuthSession(Base):
    """A login. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

    user: Mapped[User] = relationship(lazy="joined")


class LoginThrottle(Base):
    """Failed logins of one account name or one client address, for throttling with backoff. Kept in the
    database so that every worker sees the same counts and a restart forgets nothing."""

    __tablename__ = "login_throttles"
    __table_args__ = (UniqueConstraint("scope", "subject", name="uq_login_throttle_scope_subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    """'account' (subject: the name tried, lower-cased) or 'address' (subject: the client address)."""
    subject: Mapped[str] = mapped_column(String(128))
    failures: Mapped[int] = mapped_column(default=0)
    """Attempts in the current window that did not succeed (an attempt counts as failed until it succeeds)."""
    window_start: Mapped[datetime]
    lockouts: Mapped[int] = mapped_column(default=0)
    """Lockouts in a row: the next lasts twice as long as the last."""
    locked_until: Mapped[datetime | None]


class Intake(Base):
    """One prompt upload and its report (what was kept, what was dropped and why)."""

    __tablename__ = "intakes"

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    report: Mapped[dict[str, Any]]
    dropped: Mapped[dict[str, Any]]
    """Dropped prompts by reason, as `IntakeResult.dropped`, at most `MAX_DROPPED_LISTED` per reason (the
    report has the counts)."""
    status: Mapped[str] = mapped_column(String(16), default="importing")
    """'importing' until the transaction that stores its last prompt sets 'complete': an import killed
    midway stays 'importing', its report counting prompts that were never stored."""
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


MAX_DROPPED_LISTED = 100
"""Dropped prompts an intake keeps per reason. Re-importing a file answered with all of them (4.7 MB, and
27.7 MB for a duplicate file: issue 23); the report counts every one."""


def text_hash(text: str) -> str:
    """SHA-256 (hex) of a prompt's text: the indexed key by which uploads find their prompts (an index on
    the text itself would not take prompts of any length)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text_hash_default(context: DefaultExecutionContext) -> str:
    return text_hash(context.get_current_parameters()["text"])


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64), index=True, nullable=True, default=_text_hash_default)
    """`text_hash(text)`, set on insert (and by migration 0007; nullable in the schema only because SQLite
    cannot add NOT NULL in place). Ranking and A/B uploads scanned `text` without it: 2,000 items against
    119,445 prompts took 38 s."""
    messages: Mapped[list[Any] | None]
    """A conversation's turns (`{"role", "content"}`, ending with a user turn) when the prompt is one; `text`
    is then its transcript (records.transcript)."""
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    """Who wrote the prompt (a customer / API user id, not a labeler): the unit of the split and the cap."""
    split: Mapped[str] = mapped_column(String(16), index=True)
    pii: Mapped[list[Any]] = mapped_column(default=list)
    """Kinds of personal information found when intake keeps them flagged."""
    intake_id: Mapped[int | None] = mapped_column(ForeignKey("intakes.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Task(Base):
    """Something to label: write a demonstration, rank K responses, or compare two responses (A/B)."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    responses: Mapped[list[Any] | None]
    """Ranking: the K candidate responses."""
    model: Mapped[str | None] = mapped_column(String(255))
    """Ranking: the model that wrote all K responses, when one did (never shown to labelers)."""
    response_models: Mapped[list[Any] | None]
    """Ranking: the model that wrote each response, in `responses` order (a round may mix the current
    policy and the previous one); None where unknown."""
    round: Mapped[int | None] = mapped_column(Integer)
    """Ranking: the labeling round (1, 2, ...): a prompt gets at most one ranking task per round from
    generation, so each round ranks a newer policy's answers to the same prompts."""
    response_a: Mapped[str | None] = mapped_column(Text)
    response_b: Mapped[str | None] = mapped_column(Text)
    model_a: Mapped[str | None] = mapped_column(String(255))
    model_b: Mapped[str | None] = mapped_column(String(255))
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    """Labelers wanted per labeler group (more than 1 for the overlap that measures agreement)."""
    source: Mapped[str] = mapped_column(String(255))
    """Where the task came from: 'prompts', 'upload:FILE', 'generation:JOB_ID'."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prompt: Mapped[Prompt] = relationship(lazy="joined")


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "labeler_id", name="uq_assignment_task_labeler"),
        Index("ix_assignments_labeler_status", "labeler_id", "status"),
        # The expiry sweep before each reservation: 11.7 ms over 200,000 assignments without it (SQLite,
        # holding the write lock), 0.01 ms with it.
        Index("ix_assignments_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    group: Mapped[str] = mapped_column("labeler_group", String(32))
    """The labeler's group when assigned (the per-group quota counts it)."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """'pending', 'done', 'released' (given back by the labeler or an admin) or 'expired' (not submitted in
    time). Released and expired assignments no longer hold a place on the task."""
    swap: Mapped[bool] = mapped_column(Boolean, default=False)
    """A/B: show response_b on the left (display order randomised per assignment)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]

    task: Mapped[Task] = relationship(lazy="joined")
    labeler: Mapped[User] = relationship(lazy="joined")


class Submission(Base):
    """A labeler's answer to one assignment. `submission_key` is the client's idempotency key."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_key: Mapped[str] = mapped_column(String(64), unique=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    response: Mapped[str | None] = mapped_column(Text)
    """Demonstration: the labeler's response."""
    ranking: Mapped[list[Any] | None]
    """Ranking: indices into the task's responses, best first."""
    labels: Mapped[list[Any] | None]
    """Ranking: per response (task order) {"likert": 1..7, "flags": [...]}."""
    preferred: Mapped[str | None] = mapped_column(String(8))
    """A/B: 'a', 'b' or 'tie', in the task's (not the display's) order."""
    note: Mapped[str | None] = mapped_column(Text)
    """The labeler's flag for review (unclear prompt, personal information left in, ...)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    assignment: Mapped[Assignment] = relationship(lazy="joined")


class GenerationJob(Base):
    """Sampling K responses per prompt from one or more checkpoints, in the background, then queueing a
    ranking task per prompt in the job's round."""

    __tablename__ = "generation_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    checkpoint: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str] = mapped_column(String(255))
    """The first checkpoint and its name (every one: `checkpoints`)."""
    checkpoints: Mapped[list[Any]]
    """Per checkpoint {"checkpoint": dir, "model_name": str, "k": candidates it writes}; the k sum to `k`."""
    round: Mapped[int] = mapped_column(Integer, default=1)
    prompt_ids: Mapped[list[Any]]
    k: Mapped[int]
    max_new_tokens: Mapped[int]
    temperature: Mapped[float]
    seed: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="queued")
    """'queued', 'running', 'done' or 'failed'."""
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    """Samples drawn so far / to draw (prompts x K)."""
    tasks_created: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
