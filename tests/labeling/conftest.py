"""Fixtures for the labeling app: databases (SQLite file and a real PostgreSQL), the app, logged-in clients.

PostgreSQL comes from INSTRUCTRL_TEST_POSTGRES_URL, else a throwaway cluster started here with Debian's
initdb/pg_ctl. Without either, PostgreSQL tests are skipped, except in CI (CI set), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from labeling.servers import TempPostgres, create_database_on, postgres_bin_dir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TempPostgres | str]:
    if os.environ.get("INSTRUCTRL_TEST_POSTGRES_URL"):
        yield os.environ["INSTRUCTRL_TEST_POSTGRES_URL"]
        return
    if postgres_bin_dir() is None:
        message = "PostgreSQL not found: apt-get install postgresql, or set INSTRUCTRL_TEST_POSTGRES_URL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = TempPostgres()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.db'}"
    return postgres_url(request.getfixturevalue("postgres_server"))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'labels.db'}"


@pytest.fixture
def pg_url(postgres_server) -> str:
    return postgres_url(postgres_server)


def postgres_url(server: TempPostgres | str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    return create_database_on(server, name) if isinstance(server, str) else server.create_database(name)
