"""The pipeline's database label source (`pipeline/labels.py`, `DatabaseLabels`) on the labeling app's
SQLite database, through the app's round service (`labeling/services/rounds.py`): each round's generation job
is started from the pipeline's policies, the pipeline waits while labelers rank, then exports the round."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from instructrl.errors import UserError
from instructrl.labeling.models import GenerationJob
from instructrl.labeling.services.rounds import round_progress, wait_for_rankings
from instructrl.pipeline.labels import DatabaseLabels
from instructrl.prompts.intake import SPLITS
from labeling.helpers import PROMPTS, create_tasks_directly, jsonl, login, ranking_app, scores


def _rank_all(client) -> int:
    n = 0
    while (r := client.next("ranking")).status_code == 200:
        assert client.submit(r.json()["id"], ranking=[0, 1, 2, 3], labels=scores(4)).status_code == 201
        n += 1
    return n


def _rows(file) -> list[dict]:
    return [json.loads(line) for line in file.read_text().splitlines()] if file else []


def _labeled_app(url: str):
    """Round 1's ranking tasks uploaded, and every prompt's demonstration written."""
    app = ranking_app(url, overlap_fraction=0.0)
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = login(app, "lab1")
    while (r := lab.next("demonstration")).status_code == 200:
        assert lab.submit(r.json()["id"], response="A careful answer.").status_code == 201
    return app, lab


def test_the_database_source_starts_each_rounds_generation_and_returns_once_it_is_ranked(
    sqlite_url, tmp_path, tiny_model_dir
):
    app, lab = _labeled_app(sqlite_url)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(jsonl(PROMPTS))
    waits: list[float] = []

    def labelers_rank(seconds: float) -> None:  # the pipeline waits; meanwhile the labelers rank
        waits.append(seconds)
        _rank_all(lab)

    logs: list[str] = []
    config = DatabaseLabels(
        database_url=sqlite_url, rounds=2, exports=tmp_path / "exports", prompts=prompts, k=4, limit=3,
        poll_seconds=5,
    )  # fmt: skip
    source = config.open(log=logs.append, sleep=labelers_rank)
    source.check()
    demos = source.demonstrations()
    assert demos.train == tmp_path / "exports" / "demonstrations" / "train" / "demonstrations.jsonl"
    exported = [tmp_path / "exports" / "demonstrations" / s / "demonstrations.jsonl" for s in SPLITS]
    assert sum(len(_rows(f)) for f in exported) == len(PROMPTS)  # every split's, as `label export` writes

    # round 1's tasks were uploaded: no generation job, the source waits for their rankings
    r1 = source.round_labels(1, policy=tiny_model_dir, previous_policy=None)
    assert waits == [5]
    one = _rows(r1.comparisons) + _rows(r1.validation)
    assert one and {c["round"] for c in one} == {1}
    with app.state.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(GenerationJob)) == 0

    # round 2: a job from the last policy and the one before it, ranked while the source waits
    r2 = source.round_labels(2, policy=tiny_model_dir, previous_policy=tiny_model_dir)
    two = _rows(r2.comparisons) + _rows(r2.validation)
    assert two and {c["round"] for c in two} == {2}
    assert all(sorted(c["models"]) == ["round1"] * 2 + ["sft"] * 2 for c in two)
    assert round_progress(database_url=sqlite_url, round=2).done
    assert "labels: round 2: sampling its candidates from round1, sft" in logs
    assert "labels: round 2: 0 of 3 ranking tasks ranked" in logs
    assert "labels: round 2: 3 of 3 ranking tasks ranked" in logs

    # asked again (a pipeline resumed before the round finished): no second job
    assert source.round_labels(2, policy=tiny_model_dir, previous_policy=tiny_model_dir) == r2
    with app.state.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(GenerationJob)) == 1


def test_waiting_for_rankings_gives_up_after_its_timeout_saying_how_many_are_ranked(sqlite_url):
    ranking_app(sqlite_url)  # round 1: 6 ranking tasks, none ranked
    with pytest.raises(UserError, match="round 1: 0 of 6 ranking tasks ranked after 0 s"):
        wait_for_rankings(database_url=sqlite_url, round=1, timeout_seconds=0, sleep=lambda s: None)
    with pytest.raises(UserError, match="round 2: no ranking tasks in it"):
        wait_for_rankings(database_url=sqlite_url, round=2, sleep=lambda s: None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 12}, "data.k 12: a ranking task needs 4 to 9 responses"),
        ({"limit": 0}, "limit"),
        ({"database_url": "sqlite:////nonexistent/labels.db"}, "no such labeling database"),
    ],
)
def test_a_database_source_that_cannot_start_a_round_fails_its_check(sqlite_url, tmp_path, change, message):
    ranking_app(sqlite_url)
    fields = {"database_url": sqlite_url, "rounds": 1, "exports": tmp_path / "x", "prompts": tmp_path / "p"}
    with pytest.raises((UserError, ValueError), match=message):
        DatabaseLabels.model_validate({**fields, **change}).open().check()


def test_the_whole_pipeline_runs_on_the_apps_database_while_labelers_rank(
    sqlite_url, tmp_path, tiny_model_dir
):
    """`instructrl pipeline` with `source: database`: SFT on the demonstrations written in the app, round 1 on
    its uploaded ranking tasks, round 2 on the tasks its own generation job makes from SFT's and round 1's
    policies — ranked by a labeler working in another thread while the pipeline waits."""
    import threading

    from conftest import make_prompts, run_cli

    from labeling.helpers import add_user, make_app, ranking_rows, upload_prompts

    prompts = make_prompts(60)
    app = make_app(sqlite_url, overlap_fraction=0.0)
    add_user(app, "admin", role="admin")
    add_user(app, "lab1")
    upload_prompts(login(app, "admin"), prompts)
    create_tasks_directly(app, kind="demonstration", rows=[])
    lab = login(app, "lab1")
    while (r := lab.next("demonstration")).status_code == 200:
        words = r.json()["task"]["prompt"].split()[1:]  # "write A B" -> "A B"
        assert lab.submit(r.json()["id"], response=" ".join(words)).status_code == 201
    create_tasks_directly(app, kind="ranking", rows=ranking_rows(prompts[:24]))
    (tmp_path / "prompts.jsonl").write_bytes(jsonl(prompts))

    stop = threading.Event()

    def labeler() -> None:  # ranks whatever is there, every 0.1 s, until the pipeline is done
        while not stop.is_set():
            _rank_all(lab)
            stop.wait(0.1)

    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"out: {tmp_path / 'out'}\nbase_model: {tiny_model_dir}\n"
        f"data:\n  source: database\n  database_url: {sqlite_url}\n  rounds: 2\n"
        f"  exports: {tmp_path / 'exports'}\n  prompts: {tmp_path / 'prompts.jsonl'}\n"
        "  k: 4\n  limit: 12\n  poll_seconds: 0.2\n  timeout_hours: 0.1\n"
        'sft: {epochs: 1, batch_size: 8, mixed_precision: "no"}\n'
        'rm: {batch_size: 8, mixed_precision: "no"}\n'
        'ppo: {iterations: 1, rollout_batch_size: 8, batch_size: 8, max_new_tokens: 6, mixed_precision: "no", '
        "eval_prompts: 8, val_fraction: 0.15}\n"
    )
    thread = threading.Thread(target=labeler, daemon=True)
    thread.start()
    try:
        code, _, err = run_cli("pipeline", "--config", config)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert code == 0, err[-3000:]

    out = tmp_path / "out"
    assert (out / "round2" / "ppo" / "final" / "model.safetensors").exists()
    exported = tmp_path / "exports"
    one = _rows(exported / "round1" / "train" / "comparisons.jsonl")
    two = _rows(exported / "round2" / "train" / "comparisons.jsonl")
    assert one and {c["round"] for c in one} == {1}
    assert two and {c["round"] for c in two} == {2}
    assert all(
        sorted(c["models"]) == ["round1"] * 2 + ["sft"] * 2 for c in two
    )  # the pipeline's own policies
    with app.state.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(GenerationJob)) == 1  # round 2's only
