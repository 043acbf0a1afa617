"""Simulated labelers: agreement calibrated to the paper, determinism, and judgements that track the gold."""

from __future__ import annotations

import random
import statistics

import pytest

from instructrl.demo.labelers import Labeler, agreement, make_labelers, measure_agreement
from instructrl.demo.world import World


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


@pytest.fixture(scope="module")
def labelers(world: World) -> list[Labeler]:
    return make_labelers(world, n_train=10, n_heldout=5, seed=0)


def test_agreement_counts_pairs_ordered_the_same():
    assert agreement([[0, 1, 2]], [[0, 1, 2]]) == 1.0
    assert agreement([[0, 1, 2]], [[2, 1, 0]]) == 0.0
    assert agreement([[0, 1, 2]], [[1, 0, 2]]) == pytest.approx(2 / 3)
    assert agreement([[0, 1], [0, 1, 2]], [[1, 0], [0, 1, 2]]) == pytest.approx(3 / 4)  # pooled over pairs


def test_groups_and_ids(labelers: list[Labeler]):
    assert [lab.id for lab in labelers[:2]] == ["train-00", "train-01"]
    assert [lab.group for lab in labelers].count("heldout") == 5
    assert len({lab.seed for lab in labelers}) == 15


def test_inter_labeler_agreement_matches_the_paper(world: World, labelers: list[Labeler]):
    # InstructGPT: 72.6 ± 1.5% between training labelers, 77.3 ± 1.3% between held-out labelers
    train = measure_agreement(world, [lab for lab in labelers if lab.group == "train"], n_tasks=2000)
    heldout = measure_agreement(world, [lab for lab in labelers if lab.group == "heldout"], n_tasks=2000)
    assert 0.70 <= train <= 0.76
    assert 0.74 <= heldout <= 0.80
    assert heldout > train


def test_judgements_are_deterministic_and_vary_between_labelers(world: World, labelers: list[Labeler]):
    rng = random.Random(0)
    prompt = world.make_prompt(rng)
    candidates = world.sample_candidates(prompt, 9, rng)
    a, b = labelers[0], labelers[1]
    assert a.rank(prompt, candidates) == a.rank(prompt, candidates)
    assert a.write_demonstration(prompt) == a.write_demonstration(prompt)
    assert sorted(a.rank(prompt, candidates)) == list(range(9))
    rankings = {tuple(lab.rank(prompt, candidates)) for lab in labelers}
    assert len(rankings) > 1
    assert a.rank(prompt, candidates, rng=random.Random(1)) == a.rank(
        prompt, candidates, rng=random.Random(1)
    )
    assert b.compare(prompt, candidates[0], candidates[0]) == "tie"


def test_judgements_follow_the_gold(world: World, labelers: list[Labeler]):
    rng = random.Random(0)
    wins = likert_good = likert_bad = 0
    judge = labelers[-1]
    for _ in range(300):
        prompt = world.make_prompt(rng)
        good = world.respond(prompt, rng)
        bad = next(
            r
            for r in world.sample_candidates(prompt, 20, rng) + ["ok ."]
            if world.gold_score(prompt, r) < 0.5
        )
        wins += judge.compare(prompt, good, bad) == "a"
        likert_good += judge.likert(prompt, good)
        likert_bad += judge.likert(prompt, bad)
    assert wins / 300 > 0.85
    assert likert_good / 300 > 6.0 > 3.5 > likert_bad / 300
    assert all(1 <= judge.likert(prompt, r) <= 7 for r in ("", "ok .", good))


def test_demonstrations_are_good_with_occasional_small_flaws(world: World, labelers: list[Labeler]):
    rng = random.Random(0)
    prompts = [world.make_prompt(rng) for _ in range(1000)]
    scores = [world.gold_score(p, labelers[i % 10].write_demonstration(p)) for i, p in enumerate(prompts)]
    assert statistics.mean(scores) > 0.97
    assert 0.02 <= sum(s < 1.0 for s in scores) / len(scores) <= 0.12
    assert len({labelers[i].write_demonstration(prompts[0]) for i in range(10)}) > 1  # natural variety


def test_ppo_can_keep_the_checkpoint_its_training_labelers_prefer(world, labelers, tmp_path):
    """`ppo_keep_by: labelers`: PPO's judge compares each held-out answer with the first evaluation's answer to
    the same prompt, by training labelers only, and judges a resumed run against the same first answers."""
    import dataclasses

    from instructrl.demo.context import Demo
    from instructrl.demo.labels import labelers_judge
    from instructrl.demo.settings import DemoSettings

    train = [x for x in labelers if x.group == "train"]
    heldout = [x for x in labelers if x.group == "heldout"]
    settings = DemoSettings.quick(seed=0)
    demo = Demo(tmp_path, settings, world, train, heldout)
    assert labelers_judge(demo, tmp_path / "judge.json") is None  # the default: the RM chooses
    demo = Demo(tmp_path, dataclasses.replace(settings, ppo_keep_by="labelers"), world, train, heldout)
    rng = random.Random(0)
    prompts = [world.make_prompt(rng, "open_qa") for _ in range(40)]
    right = [world.respond(p, rng) for p in prompts]
    wrong = ["the tumbit is rude ." for _ in prompts]
    judge = labelers_judge(demo, tmp_path / "judge.json")
    assert judge is not None
    judge(prompts, wrong)  # the first evaluation: the starting policy's answers, kept
    better, worse = judge(prompts, right), judge(prompts, wrong)
    assert sum(better) / len(better) > 0.8 and sum(worse) / len(worse) < 0.7
    expected = [
        {"a": 1.0, "b": 0.0, "tie": 0.5}[train[i % len(train)].compare(p, r, w)]
        for i, (p, r, w) in enumerate(zip(prompts, right, wrong, strict=True))
    ]
    assert better == expected
    resumed = labelers_judge(demo, tmp_path / "judge.json")  # a new process: the baseline from the file
    assert resumed is not None and resumed(prompts, right) == better
