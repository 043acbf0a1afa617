"""Prompt intake: exact counts for deduplication, the PII filter, the per-user cap and the user-id split."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from instructrl.datasets.records import PromptRecord
from instructrl.datasets.text import user_key
from instructrl.prompts.intake import IntakeSettings, KeptPrompt, assign_splits, run_intake


def recs(*pairs: tuple[str, str]) -> list[PromptRecord]:
    return [PromptRecord(prompt=p, user_id=u) for p, u in pairs]


def test_exact_and_long_prefix_duplicates_are_dropped():
    long = "Summarise the following article about the history of the printing press in Europe " * 2
    records = recs(
        ("Write a poem about cats", "u1"),
        ("write a  poem about CATS ", "u2"),  # same text up to case and whitespace
        (long + "version one", "u3"),
        (long + "version two", "u4"),  # shares the first 100 characters
        ("Write a poem about dogs", "u1"),
    )
    result = run_intake(records, IntakeSettings(prefix_chars=100))
    assert [k.prompt for k in result.kept] == [
        "Write a poem about cats",
        long + "version one",
        "Write a poem about dogs",
    ]
    assert [d.user_id for d in result.dropped["duplicate"]] == ["u2", "u4"]
    assert result.dropped["duplicate"][0].detail == "exact duplicate of an earlier prompt"
    assert "first 100 characters" in result.dropped["duplicate"][1].detail
    assert result.report.dropped_duplicate == 2
    assert result.report.received == 5 and result.report.kept == 3


def test_short_prompts_sharing_a_prefix_are_not_duplicates():
    result = run_intake(recs(("Tell me a joke", "u1"), ("Tell me a joke about owls", "u2")), IntakeSettings())
    assert result.report.kept == 2


def test_pii_prompts_are_dropped_or_flagged_by_setting():
    records = recs(
        ("Email me at jane@example.org", "u1"),
        ("Explain photosynthesis", "u1"),
        ("Charge card 4111 1111 1111 1111 and call 555-123-4567", "u2"),
    )
    dropped = run_intake(records, IntakeSettings(pii="drop"))
    assert dropped.report.dropped_pii == 2 and dropped.report.flagged_pii == 0 and dropped.report.kept == 1
    assert [d.detail for d in dropped.dropped["pii"]] == ["email", "card, phone"]

    flagged = run_intake(records, IntakeSettings(pii="flag"))
    assert flagged.report.dropped_pii == 0 and flagged.report.flagged_pii == 2 and flagged.report.kept == 3
    assert [k.pii for k in flagged.kept] == [["email"], [], ["card", "phone"]]


def test_at_most_max_per_user_prompts_per_user_id():
    records = recs(*[(f"question number {i}", "heavy") for i in range(7)], ("another one", "light"))
    result = run_intake(records, IntakeSettings(max_per_user=5))
    assert result.report.dropped_user_cap == 2
    assert [k.prompt for k in result.kept if k.user_id == "heavy"] == [
        f"question number {i}" for i in range(5)
    ]
    assert result.report.kept == 6


def test_duplicates_do_not_count_towards_the_user_cap():
    records = recs(("same", "u"), ("same", "u"), ("same", "u"), ("other", "u"))
    result = run_intake(records, IntakeSettings(max_per_user=2))
    assert (
        result.report.kept == 2
        and result.report.dropped_duplicate == 2
        and result.report.dropped_user_cap == 0
    )


def test_split_is_by_user_with_exact_fractions_and_seeded():
    records = recs(*[(f"prompt {u}-{i}", f"user{u}") for u in range(10) for i in range(3)])
    settings = IntakeSettings(train_fraction=0.8, validation_fraction=0.1, seed=3)
    result = run_intake(records, settings)
    splits_of_user: dict[str, set[str]] = {}
    for k in result.kept:
        splits_of_user.setdefault(k.user_id, set()).add(k.split)
    assert all(len(s) == 1 for s in splits_of_user.values())  # no user crosses splits
    r = result.report.splits
    assert (r["train"].users, r["validation"].users, r["test"].users) == (8, 1, 1)
    assert (r["train"].prompts, r["validation"].prompts, r["test"].prompts) == (24, 3, 3)
    # the same seed gives the same split; another seed another one
    assert run_intake(records, settings).kept == result.kept
    other = assign_splits([f"user{u}" for u in range(10)], IntakeSettings(seed=4))
    assert other != assign_splits([f"user{u}" for u in range(10)], settings)


def test_prior_prompts_count_for_dedup_cap_and_keep_their_users_split():
    prior = [KeptPrompt(prompt="old question", user_id="u1", split="test")]
    records = recs(("old  QUESTION", "u9"), ("new question", "u1"), ("third question", "u1"))
    result = run_intake(
        records, IntakeSettings(max_per_user=2, train_fraction=1.0, validation_fraction=0.0), prior=prior
    )
    assert result.report.dropped_duplicate == 1
    assert result.report.dropped_user_cap == 1
    assert [(k.prompt, k.split) for k in result.kept] == [("new question", "test")]


def test_report_counts_add_up():
    records = recs(
        ("a prompt", "u1"), ("a prompt", "u2"), ("mail x@y.com", "u3"), ("b prompt", "u1"), ("c prompt", "u1")
    )
    r = run_intake(records, IntakeSettings(max_per_user=2)).report
    assert r.model_dump() == {
        "received": 5,
        "kept": 2,
        "dropped_duplicate": 1,
        "dropped_pii": 1,
        "flagged_pii": 0,
        "dropped_user_cap": 1,
        "splits": {
            "train": {"prompts": 2, "users": 1},
            "validation": {"prompts": 0, "users": 0},
            "test": {"prompts": 0, "users": 0},
        },
    }


def test_fractions_over_one_are_refused():
    with pytest.raises(ValidationError, match="more than 1"):
        IntakeSettings(train_fraction=0.9, validation_fraction=0.2)


def test_intake_imports_no_web_or_torch_modules():
    import subprocess
    import sys

    code = (
        "import sys, instructrl.prompts.intake; "
        "bad = [m for m in ('torch', 'fastapi', 'sqlalchemy', 'transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


CAPUSER_SPELLINGS = ["capuser", "capuser ", " capuser", "CAPUSER", "capuser\u200b", "ｃａｐｕｓｅｒ"]


def test_respelled_user_ids_are_one_user_for_the_cap_and_the_split():
    records = recs(*[(f"question number {i}", u) for i, u in enumerate(CAPUSER_SPELLINGS)])
    result = run_intake(records, IntakeSettings(max_per_user=2))
    assert result.report.kept == 2 and result.report.dropped_user_cap == 4
    assert sum(c.users for c in result.report.splits.values()) == 1
    # the original spelling is kept for display
    assert [k.user_id for k in result.kept] == ["capuser", "capuser "]

    prior = [KeptPrompt(prompt="old question", user_id="capuser", split="test")]
    later = run_intake(
        records, IntakeSettings(max_per_user=100, train_fraction=1.0, validation_fraction=0.0), prior=prior
    )
    assert later.report.kept == 6 and {k.split for k in later.kept} == {"test"}


@pytest.mark.parametrize(
    "variant",
    [
        "Write a poem about\u200b cats",  # zero-width space
        "Write a poem\u00a0about cats",  # no-break space
        "Write a po\u00adem about cats",  # soft hyphen
        "\ufeffWrite a poem about cats",  # byte-order mark
        "Ｗｒｉｔｅ ａ ｐｏｅｍ ａｂｏｕｔ ｃａｔｓ",  # full-width
        "Write a poem about cats\u2009",  # thin space
        "Write a poem about c\u200dats",  # zero-width joiner
    ],
)
def test_duplicates_are_found_through_invisible_characters_look_alikes_and_nbsp(variant):
    result = run_intake(recs(("Write a poem about cats", "u1"), (variant, "u2")), IntakeSettings())
    assert result.report.dropped_duplicate == 1
    assert result.dropped["duplicate"][0].prompt == variant


LOOK_ALIKE_ANNS = [
    "ann\u034f",  # combining grapheme joiner
    "ann\ufe0f",  # variation selector
    "ann\u3164",  # Hangul filler
    "ann\u2800",  # Braille blank
    "\u0430nn",  # Cyrillic a
    "\u1d00nn",  # small capital A
    "an\u0307n",  # combining dot above
    "ANN\u200d",  # upper case and a zero-width joiner
]


@pytest.mark.parametrize("variant", LOOK_ALIKE_ANNS)
def test_look_alike_user_ids_share_the_cap_and_the_split_and_keep_their_spelling(variant):
    # Each of these had a 200-prompt cap of its own, and "ann\u3164" landed in test while "ann" was in train.
    prior = [KeptPrompt(prompt="old question", user_id="ann", split="train")]
    records = recs(("a new question", variant), ("another new question", variant))
    result = run_intake(records, IntakeSettings(max_per_user=2, train_fraction=0.0), prior=prior)
    assert result.report.kept == 1 and result.report.dropped_user_cap == 1
    assert result.kept[0].split == "train" and result.kept[0].user_id == variant
    assert user_key(variant) == user_key("ann")


def test_user_keys_keep_different_ids_apart():
    assert len({user_key(u) for u in ["ann", "anna", "an", "bnn", "ann1", "a nn", "amn"]}) == 7
