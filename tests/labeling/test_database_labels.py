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
