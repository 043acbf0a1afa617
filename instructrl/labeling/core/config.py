"""Settings of the labeling app: defaults <- environment (INSTRUCTRL_LABEL_*) <- command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from instructrl.prompts.intake import IntakeSettings

DATA_DIR = "instructrl-data"


def default_database_url() -> str:
    """The embedded default: an SQLite file in ./instructrl-data/ (created on first use)."""
    return f"sqlite:///{(Path.cwd() / DATA_DIR / 'labels.db').as_posix()}"


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
    intake: IntakeSettings = IntakeSettings()
    """Prompt intake: dedup prefix, PII drop/flag, per-user cap, split fractions and seed."""

    @model_validator(mode="after")
    def _k_range(self) -> Settings:
        if self.min_k > self.max_k:
            raise ValueError(f"min_k ({self.min_k}) is more than max_k ({self.max_k})")
        return self
