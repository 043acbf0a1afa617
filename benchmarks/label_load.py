"""Load benchmark of the labeling app: N simulated labelers submit rankings concurrently on loopback.

    python benchmarks/label_load.py [--clients 50] [--seconds 60] [--db sqlite|postgres|URL ...]
                                    [--import-mb 20 [--import-via web|cli]]

The app runs as `instructrl label serve` in a process of its own (one uvicorn worker); the labelers are
asyncio tasks in this process, each logged in with its own session, looping "next ranking task" ->
"submit" as fast as the server answers. Every `retry_every`-th submission is sent twice with the same
idempotency key, as a double click would. Afterwards the stored submissions are counted against the
acknowledged ones (201s): they must be equal, with no duplicates and no errors. PostgreSQL is a
throwaway cluster of its own (fsync on), unless a URL is given. Results: benchmarks/results/label_load.json.

With --import-mb, an admin imports a prompt file of that size a third of the way in (through the web
upload, in the server's process, or `instructrl label import-prompts` in a process of its own); the labeler
requests that overlap it are timed apart (`import_*`): none may fail or take more than 2 s.

With --ranking-upload N, the database holds --prompts more prompts (100,000 by default) and an admin uploads
a ranking file of N items for them a third of the way in (the Tasks page's upload); the labeler requests
that overlap it are timed apart (`upload_*`): none may take more than 2 s. (2,000 items against 119,445
prompts held SQLite's write lock for 38 s before prompts were found by an indexed hash: issue 23.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

# the throwaway PostgreSQL cluster and app servers the labeling tests use (tests/labeling/servers.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PASSWORD = "load-test-password"


@dataclass
class LoadResult:
    database: str
    clients: int
    seconds: float
    requests: int = 0
    acknowledged: int = 0
    replays: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    stored: int = 0
    duplicate_keys: int = 0
    duplicate_assignments: int = 0
    missing_acknowledged: int = 0
    requests_per_s: float = 0.0
    submissions_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p95_submit_ms: float = 0.0
    max_ms: float = 0.0
    import_mb: float = 0.0
    """Size of the prompt file imported during the load (0: none)."""
    import_via: str = ""
    import_seconds: float = 0.0
    import_outcome: str = ""
    import_requests: int = 0
    """Labeler requests that overlapped the import; their latencies below."""
    import_p99_ms: float = 0.0
    import_max_ms: float = 0.0
    import_slowest: list[tuple[float, float]] = field(default_factory=list)
    """The 5 slowest of them: (seconds after the import started, ms)."""
    upload_items: int = 0
    """Items of the ranking file uploaded during the load (0: none), against `upload_prompts` stored prompts."""
    upload_prompts: int = 0
    upload_seconds: float = 0.0
    upload_outcome: str = ""
    upload_requests: int = 0
    upload_p99_ms: float = 0.0
    upload_max_ms: float = 0.0
    server_log_tail: str = ""


def stored_prompt(i: int) -> str:
    return f"Stored prompt {i}: what would you tell a friend about subject {i}?"


def seed_database(db_url: str, *, clients: int, tasks: int, extra_prompts: int = 0) -> None:
    """Users (one hash, computed once), prompts through the real intake, and ranking tasks that every
    labeler may take (replicas = clients), enough that nobody runs out; then `extra_prompts` more prompts
    (`stored_prompt(i)`), inserted directly (the intake of 100,000 would take minutes)."""
    from sqlalchemy import insert

    from instructrl.datasets.records import PromptRecord
    from instructrl.labeling.core.db import Database
    from instructrl.labeling.core.security import hash_password
    from instructrl.labeling.models import Prompt, Task, User
    from instructrl.labeling.services.prompts import import_prompts
    from instructrl.prompts.intake import IntakeSettings

    db = Database(db_url)
    with db.session() as session:
        password_hash = hash_password(PASSWORD)
        session.add_all(
            User(name=f"lab{i}", password_hash=password_hash, role="labeler") for i in range(clients)
        )
        session.add(User(name="admin", password_hash=password_hash, role="admin"))
        session.commit()
        records = [
            PromptRecord(prompt=f"Prompt {i}: explain topic {i} simply.", user_id=f"user{i % 97}")
            for i in range(tasks)
        ]
        intake = import_prompts(session=session, records=records, settings=IntakeSettings(), filename="load")
        prompt_ids = [p.id for p in intake_prompts(session, intake.id)]
        session.add_all(
            Task(kind="ranking", prompt_id=pid, responses=[f"response {j} to prompt {pid}" for j in range(4)],
                 model="load", replicas=clients, source="load")
            for pid in prompt_ids
        )  # fmt: skip
        session.commit()
        for start in range(0, extra_prompts, 10_000):
            rows = [{"text": stored_prompt(i), "user_id": f"writer{i % 5000}", "split": "train", "pii": []}
                    for i in range(start, min(start + 10_000, extra_prompts))]  # fmt: skip
            session.execute(insert(Prompt), rows)
            session.commit()
    db.dispose()


def intake_prompts(session, intake_id: int):
    from sqlalchemy import select

    from instructrl.labeling.models import Prompt

    return session.scalars(select(Prompt).where(Prompt.intake_id == intake_id).order_by(Prompt.id))


def prompt_file(n_bytes: int) -> bytes:
    """JSONL of distinct prompts (about 190 bytes each) from 5,000 authors, just under `n_bytes`."""
    lines, size, i = [], 0, 0
    while True:
        line = json.dumps({"prompt": f"Imported prompt {i}: please explain, in plain words and with one worked "
                           f"example, how topic number {i} relates to everyday life.", "user_id": f"author{i % 5000}"})  # fmt: skip
        if size + len(line) + 1 > n_bytes:
            return "".join(lines).encode()
        lines.append(line + "\n")
        size += len(line) + 1
        i += 1


async def importer(base: str, db_url: str, data: bytes, via: str, result: LoadResult,
                   window: list[float]) -> None:  # fmt: skip
    """Import `data` as an admin would; `window` gets the import's start and end (monotonic seconds)."""
    import httpx
    from labeling.servers import SERVE

    window.append(time.monotonic())
    if via == "web":
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            r = await client.post("/api/v1/login", json={"name": "admin", "password": PASSWORD})
            r.raise_for_status()
            r = await client.post("/api/v1/admin/prompts", files={"file": ("import.jsonl", data)},
                                  headers={"X-CSRF-Token": r.json()["csrf_token"]})  # fmt: skip
            report = r.json().get("report", {}) if r.status_code == 201 else {}
            result.import_outcome = f"{r.status_code}: kept {report.get('kept')}" if report else r.text[:300]
    else:
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
            f.write(data)
            f.flush()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SERVE, "label", "import-prompts", f.name, "--db", db_url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await proc.communicate()
            result.import_outcome = f"exit {proc.returncode}: {out.decode(errors='replace').strip()[-300:]}"
    window.append(time.monotonic())
    result.import_seconds = window[1] - window[0]


async def ranking_uploader(base: str, items: int, result: LoadResult, window: list[float]) -> None:
    """Upload a ranking file of `items` stored prompts (4 responses each) through the Tasks page."""
    import httpx

    data = "".join(
        json.dumps({"prompt": stored_prompt(i), "responses": [f"answer {j} to {i}" for j in range(4)],
                    "model": "upload"}) + "\n"
        for i in range(items)
    ).encode()  # fmt: skip
    window.append(time.monotonic())
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        r = await client.post("/api/v1/login", json={"name": "admin", "password": PASSWORD})
        r.raise_for_status()
        r = await client.post("/admin/tasks/rankings", data={"overlap_fraction": "0"},
                              files={"file": ("rankings.jsonl", data)},
                              headers={"X-CSRF-Token": r.json()["csrf_token"]})  # fmt: skip
        result.upload_outcome = f"{r.status_code}" + ("" if r.status_code == 200 else f": {r.text[:300]}")
    window.append(time.monotonic())
    result.upload_seconds = window[1] - window[0]


async def labeler(i: int, base: str, deadline_holder: list[float], result: LoadResult,
                  latencies: list[tuple[float, float]], submit_latencies: list[float], acked: list[str],
                  retry_every: int, ready: asyncio.Barrier) -> None:  # fmt: skip
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post("/api/v1/login", json={"name": f"lab{i}", "password": PASSWORD})
        r.raise_for_status()
        headers = {"X-CSRF-Token": r.json()["csrf_token"]}
        await ready.wait()
        n = 0

        async def timed(path: str, body: dict, into: list[float] | None = None) -> httpx.Response | None:
            t = time.perf_counter()
            try:
                resp = await client.post(path, json=body, headers=headers)
            except httpx.HTTPError as e:
                result.errors += 1
                result.error_samples.append(f"{path}: {e!r}"[:300])
                return None
            ms = (time.perf_counter() - t) * 1000
            latencies.append((time.monotonic() - ms / 1000, ms))  # (start, ms)
            if into is not None:
                into.append(ms)
            result.requests += 1
            return resp

        while time.monotonic() < deadline_holder[0]:
            nxt = await timed("/api/v1/assignments/next", {"kind": "ranking"})
            if nxt is None:
                continue
            if nxt.status_code == 204:
                result.errors += 1
                result.error_samples.append("ran out of tasks")
                return
            if nxt.status_code != 200:
                result.errors += 1
                result.error_samples.append(f"next: {nxt.status_code} {nxt.text[:200]}")
                continue
            aid = nxt.json()["id"]
            body = {"submission_key": uuid.uuid4().hex, "ranking": [3, 1, 0, 2],
                    "labels": [{"likert": 4, "flags": []}] * 4}  # fmt: skip
            n += 1
            sends = 2 if retry_every and n % retry_every == 0 else 1
            for attempt in range(sends):
                resp = await timed(f"/api/v1/assignments/{aid}/submission", body, submit_latencies)
                if resp is None:
                    continue
                if resp.status_code == 201 and attempt == 0:
                    result.acknowledged += 1
                    acked.append(body["submission_key"])
                elif resp.status_code == 200 and attempt == 1:
                    result.replays += 1
                else:
                    result.errors += 1
                    result.error_samples.append(
                        f"submit attempt {attempt}: {resp.status_code} {resp.text[:200]}"
                    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_load(db_url: str, *, clients: int = 50, seconds: float = 60.0, retry_every: int = 10, tasks: int | None = None,
             label: str | None = None, import_mb: float = 0.0, import_via: str = "web", ranking_upload: int = 0,
             prompts: int = 100_000) -> LoadResult:  # fmt: skip
    """Seed `db_url` (an empty database), serve it, run the labelers, count what was stored."""
    from labeling.servers import free_port, serve_process
    from sqlalchemy import func, select

    from instructrl.labeling.core.db import Database
    from instructrl.labeling.models import Submission

    tasks = tasks or max(50, int(seconds * 40))
    if ranking_upload > prompts:
        raise SystemExit(f"--ranking-upload {ranking_upload} needs at least as many --prompts")
    seed_database(db_url, clients=clients, tasks=tasks, extra_prompts=prompts if ranking_upload else 0)
    port = free_port()
    result = LoadResult(database=label or db_url.split(":", 1)[0], clients=clients, seconds=seconds)
    if import_mb:
        result.import_mb, result.import_via = import_mb, import_via
        data = prompt_file(int(import_mb * 1_000_000))
    if ranking_upload:
        result.upload_items, result.upload_prompts = ranking_upload, prompts
    window: list[float] = []
    upload_window: list[float] = []
    latencies: list[tuple[float, float]] = []
    submit_latencies: list[float] = []
    acked: list[str] = []
    with tempfile.TemporaryDirectory() as cwd:
        server = serve_process(db_url, port, cwd)
        try:
            deadline = [float("inf")]

            async def main() -> float:
                ready = asyncio.Barrier(clients + 1)
                jobs = [
                    asyncio.create_task(labeler(i, f"http://127.0.0.1:{port}", deadline, result, latencies,
                                                submit_latencies, acked, retry_every, ready))
                    for i in range(clients)
                ]  # fmt: skip
                await ready.wait()  # all logged in: the clock starts now
                start = time.monotonic()
                deadline[0] = start + seconds
                if import_mb or ranking_upload:
                    await asyncio.sleep(seconds / 3)
                if import_mb:
                    jobs.append(asyncio.create_task(
                        importer(f"http://127.0.0.1:{port}", db_url, data, import_via, result, window)))  # fmt: skip
                if ranking_upload:
                    jobs.append(asyncio.create_task(
                        ranking_uploader(f"http://127.0.0.1:{port}", ranking_upload, result, upload_window)))  # fmt: skip
                await asyncio.gather(*jobs)
                return time.monotonic() - start

            elapsed = asyncio.run(main())
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            result.server_log_tail = (Path(cwd) / "server.log").read_text(errors="replace")[-2000:]
    db = Database(db_url, run_migrations=False)
    with db.session() as session:
        keys = list(session.scalars(select(Submission.submission_key)))
        result.stored = len(keys)
        result.duplicate_keys = len(keys) - len(set(keys))
        per_assignment = session.execute(
            select(Submission.assignment_id).group_by(Submission.assignment_id).having(func.count() > 1)
        ).all()
        result.duplicate_assignments = len(per_assignment)
        result.missing_acknowledged = len(set(acked) - set(keys))
    db.dispose()
    result.requests_per_s = result.requests / elapsed
    result.submissions_per_s = result.acknowledged / elapsed
    ms = [m for _, m in latencies]
    result.p50_ms = percentile(ms, 0.50)
    result.p95_ms = percentile(ms, 0.95)
    result.max_ms = max(ms, default=0.0)
    if window:
        during = [m for t, m in latencies if t < window[-1] and t + m / 1000 > window[0]]
        result.import_requests = len(during)
        result.import_p99_ms = percentile(during, 0.99)
        result.import_max_ms = max(during, default=0.0)
        slowest = sorted(
            (m, t - window[0]) for t, m in latencies if t < window[-1] and t + m / 1000 > window[0]
        )
        result.import_slowest = [(round(t, 1), round(m)) for m, t in slowest[-5:]]
    if upload_window:
        during = [m for t, m in latencies if t < upload_window[-1] and t + m / 1000 > upload_window[0]]
        result.upload_requests = len(during)
        result.upload_p99_ms = percentile(during, 0.99)
        result.upload_max_ms = max(during, default=0.0)
    result.p95_submit_ms = percentile(submit_latencies, 0.95)
    result.error_samples = result.error_samples[:10]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--db", nargs="+", default=["postgres", "sqlite"], help="sqlite, postgres, or URLs of empty databases"
    )
    parser.add_argument(
        "--import-mb", type=float, default=0.0, help="import a prompt file this big a third of the way in"
    )
    parser.add_argument("--import-via", choices=["web", "cli"], default="web")
    parser.add_argument(
        "--ranking-upload",
        type=int,
        default=0,
        help="upload a ranking file of this many items a third of the way in",
    )
    parser.add_argument("--prompts", type=int, default=100_000, help="prompts stored for --ranking-upload")
    parser.add_argument(
        "--out", default=None, help="default: results/label_load.json, or label_load_import_{web,cli}.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from labeling.servers import TempPostgres

    results = []
    for which in args.db:
        pg = None
        with tempfile.TemporaryDirectory() as tmp:
            if which == "sqlite":
                url = f"sqlite:///{tmp}/labels.db"
            elif which == "postgres":
                pg = TempPostgres(durable=True)
                pg.start()
                url = pg.create_database("load")
            else:
                url = which
            try:
                r = run_load(url, clients=args.clients, seconds=args.seconds, label=which.split(":", 1)[0],
                             import_mb=args.import_mb, import_via=args.import_via,
                             ranking_upload=args.ranking_upload, prompts=args.prompts)  # fmt: skip
            finally:
                if pg is not None:
                    pg.stop()
        ok = (
            r.errors == 0 and r.stored == r.acknowledged and not (r.duplicate_keys or r.duplicate_assignments)
        )
        if r.import_mb:
            ok = ok and r.import_max_ms <= 2000 and r.import_outcome.startswith(("201", "exit 0"))
        if r.upload_items:
            ok = ok and r.upload_max_ms <= 2000 and r.upload_outcome == "200"
        print(
            f"{r.database:>9}: {r.clients} labelers x {r.seconds:.0f} s: {r.requests_per_s:.0f} requests/s "
            f"({r.submissions_per_s:.0f} submissions/s), p50 {r.p50_ms:.0f} ms, p95 {r.p95_ms:.0f} ms "
            f"(submit p95 {r.p95_submit_ms:.0f} ms); acknowledged {r.acknowledged}, stored {r.stored}, "
            f"replays {r.replays}, errors {r.errors}"
            + (f"; {r.import_mb:g} MB {r.import_via} import in {r.import_seconds:.1f} s ({r.import_outcome}), "
               f"{r.import_requests} labeler requests meanwhile: p99 {r.import_p99_ms:.0f} ms, "
               f"max {r.import_max_ms:.0f} ms" if r.import_mb else "")
            + (f"; {r.upload_items:,}-item ranking upload against {r.upload_prompts:,} prompts in "
               f"{r.upload_seconds:.1f} s ({r.upload_outcome}), {r.upload_requests} labeler requests meanwhile: "
               f"p99 {r.upload_p99_ms:.0f} ms, max {r.upload_max_ms:.0f} ms" if r.upload_items else "")
            + f" -> {'OK' if ok else 'FAILED'}"
        )  # fmt: skip
        results.append(asdict(r))
    results_dir = Path(__file__).parent / "results"
    out = Path(
        args.out
        or results_dir
        / (
            f"label_load_import_{args.import_via}.json"
            if args.import_mb
            else "label_load_ranking_upload.json"
            if args.ranking_upload
            else "label_load.json"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
