"""Throwaway servers for the labeling app's tests and benchmarks: a PostgreSQL cluster and the app itself.

`TempPostgres` runs Debian's initdb/pg_ctl on a free loopback port in a temporary directory (as the
`postgres` user when run as root: PostgreSQL refuses to run as root). `LiveServer` runs the app under
uvicorn in a thread on a free loopback port. Test helpers, not in the package; benchmarks/label_load.py
uses them too.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are (PATH first, then Debian's /usr/lib/postgresql/VERSION/bin), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


class TempPostgres:
    """A PostgreSQL cluster of its own: `start()` returns the server's URL; `create_database()` a fresh DB."""

    def __init__(self, *, durable: bool = False):
        bindir = postgres_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
        self.bindir = bindir
        self.durable = durable
        """fsync on (for benchmarks); off makes tests faster and loses nothing unless the machine crashes."""
        self.root = Path(tempfile.mkdtemp(prefix="instructrl-pg-"))
        self.port = free_port()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._n = 0

    def _run(self, *cmd: str) -> None:
        result = subprocess.run([*self._as_postgres, *cmd], capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> str:
        data = self.root / "data"
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"), "-w", "-t", "60",
            "-o", " ".join(options), "start",
        )  # fmt: skip
        return self.url

    def create_database(self, name: str | None = None) -> str:
        import psycopg

        self._n += 1
        name = name or f"test_{self._n}"
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        data = self.root / "data"
        if data.exists():
            subprocess.run(
                [*self._as_postgres, str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)


def create_database_on(server_url: str, name: str) -> str:
    """A fresh database on an existing server (INSTRUCTRL_TEST_POSTGRES_URL); returns its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    with psycopg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


SERVE = (
    "import argparse, sys; from instructrl.labeling import cli; "
    "p = argparse.ArgumentParser(); cli.register(p.add_subparsers()); a = p.parse_args(); sys.exit(a.func(a))"
)
"""`instructrl label serve` with only the `label` subcommand registered (no other stage's modules imported)."""


def serve_process(db_url: str, port: int, cwd: str | Path) -> subprocess.Popen:
    """`instructrl label serve` in a process of its own, output in CWD/server.log; returns once it answers."""
    import sys

    import httpx

    log_path = Path(cwd) / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed with the process)
    # The simulated labelers of the load and crash tests work far faster than people: no task rate limit.
    env = {**os.environ, "INSTRUCTRL_LABEL_ASSIGNMENTS__MAX_TASKS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "label", "serve", "--db", db_url, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-3000:]}")
    proc.kill()
    raise RuntimeError("server did not start in 60 s")


class LiveServer:
    """The app under uvicorn in a background thread, on a free loopback port: `with LiveServer(app) as url:`."""

    def __init__(self, app: Any, *, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="live-server")

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
