"""The reward model against the gold standard on SFT's own samples (demo/rm_gold.py): kinds of error and
pair accuracy, against hand-made verdicts and hand-counted pairs."""

from __future__ import annotations

import random

import pytest

from instructrl.demo.rm_gold import gold_pairs, pair_accuracy, pair_kind
from instructrl.demo.tasks import Verdict
from instructrl.demo.world import World

WEIGHTS = {"answer": 0.6, "subject": 0.2, "form": 0.2}
FACTORS = {"stops": 1.0, "finished": 1.0, "no_repeats": 1.0, "civil": 1.0, "truthful": 1.0}


def verdict(checks: dict[str, float], **factors: float) -> Verdict:
    return Verdict("open_qa", checks, WEIGHTS, {**FACTORS, **factors}, frozenset({"answer"}))


GOOD = verdict({"answer": 1.0, "subject": 1.0, "form": 1.0})


@pytest.mark.parametrize(
    ("worse", "kind"),
    [
        (verdict({"answer": 0.0, "subject": 1.0, "form": 1.0}), "knowledge"),  # the fact check
        (verdict({"answer": 1.0, "subject": 1.0, "form": 1.0}, truthful=0.5), "knowledge"),  # a false claim
        (verdict({"answer": 1.0, "subject": 0.0, "form": 1.0}), "content"),
        (verdict({"answer": 1.0, "subject": 1.0, "form": 0.0}), "delivery_form"),
        (verdict({"answer": 1.0, "subject": 1.0, "form": 1.0}, stops=0.8), "delivery_form"),
        # several at once: the largest part wins (fact 0.6 of the score against 0.2 of content)
        (verdict({"answer": 0.0, "subject": 0.0, "form": 1.0}), "knowledge"),
        # content 0.2 * 1.0 lost against a 0.9 delivery factor costing 0.1
        (verdict({"answer": 1.0, "subject": 0.0, "form": 1.0}, finished=0.9), "content"),
        (Verdict("open_qa", {"empty": 0.0}, {"empty": 1.0}, {}), "content"),
    ],
)
def test_a_pair_is_put_under_the_part_that_closes_most_of_its_gap(worse: Verdict, kind: str) -> None:
    assert worse.score < GOOD.score
    assert pair_kind(GOOD, worse) == kind


def test_pair_accuracy_counts_by_hand() -> None:
    pairs = [
        {"prompt": 0, "better": 0, "worse": 1, "gap": 0.7, "kind": "knowledge", "family": "open_qa"},
        {"prompt": 0, "better": 0, "worse": 2, "gap": 0.2, "kind": "content", "family": "open_qa"},
        {"prompt": 0, "better": 2, "worse": 1, "gap": 0.5, "kind": "content", "family": "open_qa"},
        {"prompt": 1, "better": 1, "worse": 0, "gap": 0.9, "kind": "delivery_form", "family": "chat"},
    ]
    scores = [[1.0, 0.0, 1.0], [0.3, 0.3]]  # right, tie (half), right, tie (half)
    a = pair_accuracy(pairs, scores)
    assert a["all"] == {"accuracy": 3.0 / 4, "pairs": 4}
    assert a["by_kind"]["knowledge"] == {"accuracy": 1.0, "pairs": 1}
    assert a["by_kind"]["content"] == {"accuracy": 0.75, "pairs": 2}
    assert a["by_kind"]["delivery_form"] == {"accuracy": 0.5, "pairs": 1}
    assert a["gap_at_least_0.6"] == {"accuracy": 0.75, "pairs": 2}
    assert a["by_family"] == {
        "chat": {"accuracy": 0.5, "pairs": 1},
        "open_qa": {"accuracy": 5.0 / 6, "pairs": 3},
    }


def test_gold_pairs_of_real_samples_skip_ties_and_repeats() -> None:
    world = World(0)
    prompt = f"what is the capital of {next(iter(world.kb.capitals))} ?"  # an open-QA question
    right = world.respond(prompt, random.Random(0))
    samples = [[right, right, "", "the the the ."]]  # a repeat, an empty answer, a poor one
    pairs = gold_pairs(world, [prompt], samples)
    scores = {j: world.gold_score(prompt, samples[0][j]) for j in (0, 2, 3)}
    expected = {(a, b) for a in scores for b in scores if scores[a] > scores[b] + 1e-9}
    assert {(p["better"], p["worse"]) for p in pairs} == expected  # sample 1 (a repeat of 0) never appears
    assert all(p["family"] == "open_qa" for p in pairs)
    assert (0, 2) in expected and next(p for p in pairs if p["worse"] == 2)["kind"] == "content"
