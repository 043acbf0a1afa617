"""Issue 12, item 1: labeling rounds. A new round ranks already-ranked prompts again with candidates from
one or more checkpoints; each task and response records its round and model; the agreement report and the
export work per round and for all rounds; old databases are migrated and old exports still load."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from instructrl import cli
from instructrl.datasets.io import read_comparisons
from instructrl.errors import UserError
from instructrl.labeling.core.db import MIGRATIONS_DIR, Database, make_engine
from instructrl.labeling.models import GenerationJob, Task
from instructrl.labeling.schemas import GenerationJobCreate
from instructrl.labeling.services.generation import create_generation_job, run_generation_job, split_k
from labeling.helpers import PROMPTS, login, page_csrf, ranking_app, scores


def test_k_candidates_are_split_between_checkpoints_as_evenly_as_can_be():
    assert split_k(4, 1) == [4]
    assert split_k(4, 2) == [2, 2]
    assert split_k(5, 2) == [3, 2]
    assert split_k(9, 4) == [3, 2, 2, 2]


def _rank_all(client, order: list[int]) -> int:
    n = 0
    while (r := client.next("ranking")).status_code == 200:
        assert client.submit(r.json()["id"], ranking=order, labels=scores(4)).status_code == 201
        n += 1
    return n


def _read_zip(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name).decode() for name in zf.namelist()}


def test_a_second_round_ranks_ranked_prompts_again_and_exports_per_round_and_for_all_rounds(
    sqlite_url, tmp_path, tiny_model_dir, rm_dir, capsys, monkeypatch
):
    app = ranking_app(sqlite_url, overlap_fraction=1.0, overlap_labelers=2)  # round 1: 6 uploaded tasks
    db, settings = app.state.db, app.state.settings
    lab1, lab2 = login(app, "lab1"), login(app, "lab2")
    assert _rank_all(lab1, [0, 1, 2, 3]) == 6  # every prompt is ranked in round 1

    # round 2 (the default: one more than the latest), mixing two checkpoints, on the first two prompts
    job_in = GenerationJobCreate(
        checkpoints=[
            {"checkpoint": str(tiny_model_dir), "model_name": "ppo-2"},
            {"checkpoint": str(tiny_model_dir), "model_name": "ppo-1"},
        ],
        k=4,
        limit=2,
        max_new_tokens=4,
    )
    with db.session() as s:
        job = create_generation_job(session=s, job_in=job_in, settings=settings)
    assert job.round == 2 and [c["k"] for c in job.checkpoints] == [2, 2]
    run_generation_job(db=db, job_id=job.id, settings=settings)
    with db.session() as s:
        job = s.get(GenerationJob, job.id)
        assert (job.status, job.done, job.total, job.tasks_created) == ("done", 8, 8, 2)
        round2 = s.scalars(sa.select(Task).where(Task.round == 2).order_by(Task.id)).all()
        assert [t.prompt.text for t in round2] == [p["prompt"] for p in PROMPTS[:2]]
        for task in round2:
            assert len(task.responses) == 4 and task.model is None and task.replicas == 2
            assert sorted(task.response_models) == ["ppo-1", "ppo-1", "ppo-2", "ppo-2"]
        round1 = s.scalars(sa.select(Task).where(Task.round == 1).order_by(Task.id)).all()
        assert len(round1) == 6 and all(t.response_models == ["m"] * 4 for t in round1)

        # within round 2 a prompt still gets one ranking task: the other four are left for a second job
        more = create_generation_job(
            session=s,
            job_in=GenerationJobCreate(checkpoint=str(tiny_model_dir), k=4, limit=10, round=2),
            settings=settings,
        )
        others = sorted({t.prompt_id for t in round1} - {t.prompt_id for t in round2})
        assert more.round == 2 and more.prompt_ids == others and len(others) == 4
        with pytest.raises(
            UserError, match="round 4: the latest round is 2; add to round 2 or start round 3"
        ):
            create_generation_job(
                session=s,
                job_in=GenerationJobCreate(checkpoint=str(tiny_model_dir), k=4, round=4),
                settings=settings,
            )

    assert _rank_all(lab1, [0, 1, 2, 3]) == 2
    assert _rank_all(lab2, [1, 0, 2, 3]) == 2  # 5 of the 6 pairs agree with lab1, on each task

    # agreement per round and for all rounds
    admin = login(app, "admin")
    report = admin.get("/api/v1/admin/quality").json()
    assert [(r["round"], r["ranking_tasks"], r["rankings"]) for r in report["rounds"]] == [
        (1, 6, 6),
        (2, 2, 4),
    ]
    assert report["rounds"][0]["overall"] is None
    assert report["rounds"][1]["pairs_compared"] == 12 and report["rounds"][1]["overall"] == pytest.approx(
        10 / 12
    )
    assert report["agreement"]["pairs_compared"] == 12  # round 1 had no overlap
    quality_page = admin.get("/admin/quality").text
    assert 'id="round-agreement"' in quality_page and "83.3%" in quality_page
    assert "<td>ppo-2, ppo-1</td>" in admin.get("/admin/tasks").text  # the jobs list names both models

    # the export: one round (CLI and web), then all rounds
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["instructrl.labeling.cli"])

    def export(*args: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["label", "export", "--db", sqlite_url, *args])
        out, err = capsys.readouterr()
        return int(exit_info.value.code or 0), out + err

    code, out = export("--out", str(tmp_path / "r2"), "--round", "2")
    assert code == 0 and "comparisons per round: round 2: 4" in out
    files = sorted(p.relative_to(tmp_path / "r2").as_posix() for p in (tmp_path / "r2").rglob("*.jsonl"))
    assert files == [f"{d}/comparisons.jsonl" for d in ("heldout", "test", "train", "validation")]
    records = read_comparisons(sorted((tmp_path / "r2").rglob("comparisons.jsonl")))
    assert len(records) == 4 and {r.round for r in records} == {2}
    assert all(
        sorted(r.models or []) == ["ppo-1", "ppo-1", "ppo-2", "ppo-2"] and r.model is None for r in records
    )
    assert json.loads((tmp_path / "r2" / "manifest.json").read_text())["round"] == 2

    code, out = export("--out", str(tmp_path / "all"))
    assert code == 0 and "round 1: 6, round 2: 4" in out
    records = read_comparisons(sorted((tmp_path / "all").rglob("comparisons.jsonl")))
    assert sorted(r.round for r in records) == [1] * 6 + [2] * 4
    assert all(r.models == ["m"] * 4 and r.model == "m" for r in records if r.round == 1)

    # the export of both rounds trains a reward model continued from round 1's (`instructrl rm --init`)
    from instructrl.config import load_config
    from instructrl.reward.config import RMConfig
    from instructrl.reward.train import run_rm

    files = sorted((tmp_path / "all").rglob("comparisons.jsonl"))
    rm = run_rm(
        init_dir=rm_dir, data=files, val_data=files, out=tmp_path / "rm2",
        config=load_config(RMConfig, None, ["epochs=1", "batch_size=4", "mixed_precision=no"]),
    )  # fmt: skip
    meta = json.loads((tmp_path / "rm2" / "final" / "instructrl.json").read_text())
    assert rm["train_prompts"] == 10 and rm["round"] == 2 and meta["round"] == 2
    assert meta["lineage"][-1] == {"stage": "rm", "round": 2, "init": str(rm_dir), "comparisons": 10}
    with app.state.db.session() as s:
        models_by_task = {t.id: t.response_models for t in s.scalars(sa.select(Task).where(Task.round == 2))}
    assert all(r.models == models_by_task[r.task_id] for r in records if r.round == 2)  # type: ignore[attr-defined]

    for args, message in (
        (["--round", "3"], "round 3: no ranking tasks in it; the rounds so far: 1, 2"),
        (["--round", "0"], "'0' is not a round"),
    ):
        code, out = export("--out", str(tmp_path / "bad"), *args)
        assert code == 2 and message in out and "Traceback" not in out

    r2 = admin.get("/admin/export.zip?round=2")
    assert r2.status_code == 200 and "round-2" in r2.headers["content-disposition"]
    shipped = _read_zip(r2.content)
    assert sum(len(v.splitlines()) for k, v in shipped.items() if k.endswith("comparisons.jsonl")) == 4
    assert "ab.jsonl" not in shipped
    assert admin.get("/api/v1/admin/export.zip?round=0").status_code == 422
    assert admin.get("/admin/export.zip?round=9").status_code == 404
    page = admin.get("/admin/export").text
    assert 'href="/admin/export.zip?round=1"' in page and 'href="/admin/export.zip?round=2"' in page


def test_a_round_2_job_on_postgresql_records_the_models_and_leaves_the_round_1_prompts_to_another(
    pg_url, tiny_model_dir
):
    app = ranking_app(pg_url)
    db, settings = app.state.db, app.state.settings
    two = [
        {"checkpoint": str(tiny_model_dir), "model_name": "ppo-2"},
        {"checkpoint": str(tiny_model_dir), "model_name": "ppo-1"},
    ]
    with db.session() as s:
        job = create_generation_job(
            session=s,
            job_in=GenerationJobCreate(checkpoints=two, k=5, limit=1, max_new_tokens=3),
            settings=settings,
        )
        # the same round while the first job is queued: the first job's prompt is not taken twice
        second = create_generation_job(
            session=s,
            job_in=GenerationJobCreate(checkpoint=str(tiny_model_dir), limit=10, round=2),
            settings=settings,
        )
    assert (job.round, second.round) == (2, 2) and len(second.prompt_ids) == 5
    assert job.prompt_ids[0] not in second.prompt_ids
    run_generation_job(db=db, job_id=job.id, settings=settings)
    with db.session() as s:
        (task,) = s.scalars(sa.select(Task).where(Task.round == 2)).all()
        assert task.prompt_id == job.prompt_ids[0] and len(task.responses) == 5
        assert sorted(task.response_models) == ["ppo-1", "ppo-1", "ppo-2", "ppo-2", "ppo-2"]
        assert s.get(GenerationJob, job.id).tasks_created == 1
    db.dispose()


def test_a_job_refuses_checkpoints_it_could_not_tell_apart_or_give_a_candidate(sqlite_url, tiny_model_dir):
    app = ranking_app(sqlite_url)
    admin = login(app, "admin")
    ckpt = str(tiny_model_dir)
    for body, message in (
        ({"checkpoints": [{"checkpoint": ckpt}, {"checkpoint": ckpt}], "k": 4}, "more than once"),
        (
            {"checkpoints": [{"checkpoint": ckpt, "model_name": f"m{i}"} for i in range(5)], "k": 4},
            "5 checkpoints",
        ),
        ({"checkpoint": ckpt, "checkpoints": [{"checkpoint": ckpt}]}, "not both"),
        ({"checkpoint": ckpt, "round": 3}, "round 3: the latest round is 1"),
        ({"checkpoint": ckpt, "round": 0}, "round"),
    ):
        r = admin.post("/api/v1/admin/jobs", json=body)
        assert r.status_code == 422 and message in r.text, (body, r.text)
    csrf = page_csrf(admin.get("/admin/tasks").text)
    for form, message in (
        ({"checkpoint": ckpt, "model_name_2": "ppo-1"}, "give the second checkpoint&#39;s directory too"),
        ({"checkpoint": ckpt, "checkpoint_2": ckpt}, "more than once"),
        ({"checkpoint": ckpt, "round": "two"}, "round: Input should be a valid integer"),
    ):
        r = admin.post("/admin/jobs", data={"csrf_token": csrf, "k": "4", **form})
        assert r.status_code == 422 and message in r.text, (form, r.text[-2000:])
    with app.state.db.session() as s:
        assert s.scalars(sa.select(GenerationJob)).all() == []


def test_old_and_new_comparison_records_load_and_a_models_list_must_match_the_responses(tmp_path):
    old = {"prompt": "p", "responses": ["a", "b"], "ranking": [1, 0], "model": "sft"}
    new = {**old, "round": 2, "models": ["ppo-2", "ppo-1"]}
    path = tmp_path / "comparisons.jsonl"
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    first, second = read_comparisons(path)
    assert (first.round, first.models, first.pairs()) == (None, None, [(1, 0)])
    assert (second.round, second.models, second.pairs()) == (2, ["ppo-2", "ppo-1"], [(1, 0)])
    path.write_text(json.dumps({**new, "models": ["ppo-2"]}) + "\n")
    with pytest.raises(UserError, match="field 'models': has 1 entries for 2 responses"):
        read_comparisons(path)


# --- the migration: existing tasks become round 1, their responses' model the job's where known --------

T = {
    name: sa.table(name, *(sa.column(c, t) for c, t in cols.items()))
    for name, cols in {
        "prompts": {"id": sa.Integer, "text": sa.Text, "user_id": sa.String, "split": sa.String, "pii": sa.JSON,
                    "created_at": sa.DateTime(timezone=True)},
        "generation_jobs": {"id": sa.Integer, "checkpoint": sa.Text, "model_name": sa.String, "prompt_ids": sa.JSON,
                            "k": sa.Integer, "max_new_tokens": sa.Integer, "temperature": sa.Float,
                            "seed": sa.Integer, "status": sa.String, "done": sa.Integer, "total": sa.Integer,
                            "tasks_created": sa.Integer, "created_at": sa.DateTime(timezone=True)},
        "tasks": {"id": sa.Integer, "kind": sa.String, "prompt_id": sa.Integer, "responses": sa.JSON,
                  "model": sa.String, "replicas": sa.Integer, "source": sa.String,
                  "created_at": sa.DateTime(timezone=True)},
    }.items()
}  # fmt: skip


def test_the_rounds_migration_makes_existing_tasks_round_1_with_the_jobs_model(db_url):
    engine = make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(T["prompts"].insert(), [{"id": 1, "text": "p", "user_id": "u", "split": "train", "pii": [],
                                               "created_at": now}])  # fmt: skip
        conn.execute(
            T["generation_jobs"].insert(),
            [{"id": 1, "checkpoint": "/runs/sft/final", "model_name": "sft-v1", "prompt_ids": [1], "k": 2,
              "max_new_tokens": 8, "temperature": 1.0, "seed": 0, "status": "done", "done": 2, "total": 2,
              "tasks_created": 1, "created_at": now}],
        )  # fmt: skip
        task = {"prompt_id": 1, "replicas": 1, "created_at": now, "responses": ["a", "b"]}
        conn.execute(
            T["tasks"].insert(),
            [
                {**task, "id": 1, "kind": "ranking", "model": None, "source": "generation:1"},
                {**task, "id": 2, "kind": "ranking", "model": "uploaded-m", "source": "upload:r.jsonl"},
                {**task, "id": 3, "kind": "ranking", "model": None, "source": "generation:99"},
                {
                    **task,
                    "id": 4,
                    "kind": "demonstration",
                    "model": None,
                    "source": "prompts",
                    "responses": None,
                },
            ],
        )
    engine.dispose()

    db = Database(db_url)  # upgrades to the newest revision
    with db.session() as s:
        head = ScriptDirectory.from_config(cfg).get_current_head()  # 0005 or a later migration
        assert s.scalar(sa.text("SELECT version_num FROM alembic_version")) == head
        tasks = {t.id: (t.round, t.response_models) for t in s.scalars(sa.select(Task))}
        assert tasks == {1: (1, ["sft-v1"] * 2), 2: (1, ["uploaded-m"] * 2), 3: (1, None), 4: (None, None)}
        job = s.get(GenerationJob, 1)
        assert job.round == 1
        assert job.checkpoints == [{"checkpoint": "/runs/sft/final", "model_name": "sft-v1", "k": 2}]
    db.dispose()


def test_a_generation_job_takes_a_hub_id_from_the_cache_and_names_a_missing_one(sqlite_url, hub_cache):
    app = ranking_app(sqlite_url)
    db, settings = app.state.db, app.state.settings
    with db.session() as s:
        job = create_generation_job(
            session=s,
            job_in=GenerationJobCreate(checkpoint="org/tiny-gpt2@v1", k=4, limit=1, max_new_tokens=3),
            settings=settings,
        )
        with pytest.raises(UserError, match="org/missing: no such checkpoint directory"):
            create_generation_job(
                session=s, job_in=GenerationJobCreate(checkpoint="org/missing", limit=1), settings=settings
            )
    assert job.checkpoints == [{"checkpoint": "org/tiny-gpt2@v1", "model_name": "tiny-gpt2", "k": 4}]
    run_generation_job(db=db, job_id=job.id, settings=settings)
    with db.session() as s:
        done = s.get(GenerationJob, job.id)
        assert done is not None and done.status == "done", done.error if done else None
        task = s.scalars(sa.select(Task).where(Task.round == 2)).one()
        assert task.response_models == ["tiny-gpt2"] * 4


def test_a_round_ends_by_starting_the_next_rounds_generation_job(sqlite_url, sft_dir, data_dir, tmp_path):
    """`instructrl round --db URL`: label in the app -> one command -> label again."""
    from conftest import make_comparisons, write_jsonl

    from instructrl.config import load_config
    from instructrl.pipeline.config import RoundConfig
    from instructrl.pipeline.round import run_round
    from instructrl.ppo.config import PPOConfig
    from instructrl.reward.config import RMConfig

    app = ranking_app(sqlite_url)  # round 1: the uploaded ranking tasks
    quick = ["mixed_precision=no", "batch_size=8"]
    config = RoundConfig(
        rm=load_config(RMConfig, None, [*quick, "epochs=1"]),
        ppo=load_config(PPOConfig, None, [*quick, "iterations=1", "rollout_batch_size=8", "max_new_tokens=4", "eval_prompts=8"]),
    )  # fmt: skip
    record = run_round(
        out=tmp_path / "r1", sft=sft_dir, data=write_jsonl(tmp_path / "c.jsonl", make_comparisons(40)),
        prompts=data_dir / "prompts.jsonl", config=config,
        next_job={"database_url": sqlite_url, "k": 4, "limit": 3, "split": "all"},
    )  # fmt: skip
    assert record.next_job is not None
    assert (record.next_job["round"], record.next_job["ranking_tasks"]) == (2, 3)
    assert [(c["checkpoint"], c["model_name"]) for c in record.next_job["checkpoints"]] == [
        (str((tmp_path / "r1" / "ppo" / "final").resolve()), "round1"),
        (str(sft_dir.resolve()), "sft"),
    ]
    with app.state.db.session() as s:
        tasks = list(s.scalars(sa.select(Task).where(Task.round == 2)))
    assert len(tasks) == 3 and all(sorted(t.response_models) == ["round1"] * 2 + ["sft"] * 2 for t in tasks)
    assert json.loads((tmp_path / "r1" / "round.json").read_text())["next_job"] == record.next_job
