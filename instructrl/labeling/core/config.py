"""Settings of the labeling app: defaults <- environment (INSTRUCTRL_LABEL_*) <- command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from instructrl.labeling.core.security import PasswordPolicy
from instructrl.prompts.intake import IntakeSettings

DATA_DIR = "instructrl-data"


def default_database_url() -> str:
    """The embedded default: an SQLite file in ./instructrl-data/ (created on first use)."""
    return f"sqlite:///{(Path.cwd() / DATA_DIR / 'labels.db').as_posix()}"


class LoginThrottle(BaseModel):
    """Failed logins are counted per account name and per client address, in the database (so every worker
    shares the counts and they survive a restart). Past the limit in a window, further attempts, the right
    password included, get 429 with Retry-After; each lockout in a row is twice as long as the one before."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_failures: int = Field(default=5, ge=1)
    """Failed logins to one account name within `window_minutes` before it is locked."""
    max_failures_per_address: int = Field(default=30, ge=1)
    """Failed logins from one client address (any names) within `window_minutes` before it is locked."""
    window_minutes: float = Field(default=15.0, gt=0)
    """Failures older than this are forgotten; so is the backoff, a window after the last lockout ended."""
    lockout_seconds: float = Field(default=30.0, gt=0)
    """The first lockout; the n-th in a row lasts lockout_seconds * 2**(n-1)."""
    max_lockout_seconds: float = Field(default=3600.0, gt=0)
    """No lockout lasts longer than this."""


class AssignmentLimits(BaseModel):
    """How long a reserved task stays a labeler's, and how fast a labeler may take tasks (in the spirit of
    OpenAssistant's per-user task rate limit)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    expire_minutes: float = Field(default=120.0, gt=0)
    """A pending assignment not submitted within this goes back to the pool for other labelers. A late
    submission is still stored if nobody has taken the place; otherwise it is refused with 409."""
    max_tasks: int = Field(default=120, ge=0)
    """Tasks a labeler may reserve per `window_minutes`; more get 429 with Retry-After. 0: no limit."""
    window_minutes: float = Field(default=60.0, gt=0)
    """The window of `max_tasks`."""


class Settings(BaseSettings):
    """One labeling deployment. Every field can be set by env var, e.g. INSTRUCTRL_LABEL_DATABASE_URL,
    INSTRUCTRL_LABEL_INTAKE__PII=flag."""

    model_config = SettingsConfigDict(
        env_prefix="INSTRUCTRL_LABEL_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
    )

    database_url: str = Field(default_factory=default_database_url)
    """SQLAlchemy URL: sqlite:///path/labels.db or postgresql://user:password@host:5432/dbname."""
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    """Largest accepted upload (prompts, responses, A/B pairs); bigger ones are refused with 413."""
    session_hours: float = Field(default=12.0, gt=0)
    """A login lasts this long."""
    secure_cookies: bool = False
    """Mark cookies Secure (set this when the app is served over HTTPS, e.g. behind a proxy)."""
    overlap_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    """Share of new tasks given to `overlap_labelers` labelers (for the agreement report) instead of one."""
    overlap_labelers: int = Field(default=2, ge=2, le=20)
    """Labelers per overlapping task (per labeler group)."""
    min_k: int = Field(default=4, ge=2, le=9)
    """Fewest responses in a ranking task (InstructGPT ranked 4 to 9)."""
    max_k: int = Field(default=9, ge=2, le=9)
    """Most responses in a ranking task."""
    seed: int = 0
    """Seed for choosing overlapping tasks and the A/B display order."""
    login: LoginThrottle = LoginThrottle()
    """Login throttling with backoff, per account and per client address."""
    password: PasswordPolicy = PasswordPolicy()
    """What a new password must be: applied wherever one is set (CLI, admin page and API, reset)."""
    assignments: AssignmentLimits = AssignmentLimits()
    """Assignment expiry and the per-labeler task rate limit."""
    intake: IntakeSettings = IntakeSettings()
    """Prompt intake: dedup prefix, PII drop/flag, per-user cap, split fractions and seed."""

    @model_validator(mode="after")
    def _k_range(self) -> Settings:
        if self.min_k > self.max_k:
            raise ValueError(f"min_k ({self.min_k}) is more than max_k ({self.max_k})")
        return self
