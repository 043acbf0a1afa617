"""Prompt intake: deduplicate, filter personal information, cap prompts per user, split by user id.

InstructGPT (Ouyang et al. 2022, Sec. 3.2): "We heuristically deduplicate prompts by checking for prompts
that share a long common prefix, and we limit the number of prompts to 200 per user ID. We also create our
train, validation, and test splits based on user ID, so that the validation and test sets contain no data
from users whose data is in the training set." The filters run in that spirit, in this order:

1. duplicates: the same text (after `normalise`: case, whitespace, look-alike forms, invisible characters)
   or the same first `prefix_chars` normalised characters as a prompt seen before (earlier in this batch
   or in `prior`);
2. personal information (`pii.find_pii`): drop the prompt, or keep it flagged, per `pii`;
3. the per-user cap, counting the user's prompts already in `prior`;
4. the split: a user already in `prior` keeps their split; new users are shuffled (seeded) and cut
   by the split fractions, so no user crosses splits.

User ids are compared by `user_key` (`"Ann "`, `ANN`, `ann\u200b`, full-width `ａｎｎ`, Cyrillic `аnn`, small-capital
`ᴀnn` and `an\u0307n` are one user), so neither the cap nor the split can be dodged by respelling an id; the
original text is kept for display.

Standard library + pydantic only: the `instructrl demo` pipeline runs it without the web app.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from instructrl.datasets.records import Message, PromptRecord
from instructrl.datasets.text import normalise, user_key
from instructrl.prompts.pii import pii_kinds

SPLITS = ("train", "validation", "test")
Split = Literal["train", "validation", "test"]
DropReason = Literal["duplicate", "pii", "user_cap"]


class IntakeSettings(BaseModel):
    """How prompts are filtered and split."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_per_user: int = Field(default=200, ge=1)
    """Keep at most this many prompts per user id (the paper's 200); later ones are dropped."""
    prefix_chars: int = Field(default=100, ge=10)
    """Two prompts whose first this-many characters (after `normalise`) agree are duplicates."""
    pii: Literal["drop", "flag"] = "drop"
    """A prompt with personal information: 'drop' it, or keep it with `pii` listing what was found."""
    train_fraction: float = Field(default=0.8, ge=0.0, le=1.0)
    """Share of (new) users whose prompts go to the train split."""
    validation_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    """Share of users for validation; the rest go to test."""
    seed: int = 0
    """Seed of the user shuffle that decides the split."""

    @model_validator(mode="after")
    def _fractions_fit(self) -> IntakeSettings:
        if self.train_fraction + self.validation_fraction > 1.0 + 1e-9:
            raise ValueError(
                f"train_fraction + validation_fraction = {self.train_fraction + self.validation_fraction:g} "
                f"is more than 1 (the test split gets the rest)"
            )
        return self


class KeptPrompt(BaseModel):
    """A prompt that passed intake, with the split of its user."""

    prompt: str
    user_id: str
    split: Split
    pii: list[str] = []
    messages: list[Message] | None = None
    """The conversation, when the prompt is one (`prompt` is then its transcript)."""
    """Kinds of personal information found (only with pii='flag'; empty when none)."""


class DroppedPrompt(BaseModel):
    prompt: str
    user_id: str
    reason: DropReason
    detail: str
    """Why, for a person: 'exact duplicate', 'shares the first 100 characters', 'email, phone', '201st prompt'."""


class SplitCounts(BaseModel):
    prompts: int = 0
    users: int = 0


class IntakeReport(BaseModel):
    """Counts for one intake run; `kept + dropped_* == received`."""

    received: int
    kept: int
    dropped_duplicate: int
    dropped_pii: int
    flagged_pii: int
    dropped_user_cap: int
    splits: dict[str, SplitCounts]
    """Per split: the prompts kept in this run and the distinct users they came from."""


class IntakeResult(BaseModel):
    kept: list[KeptPrompt]
    dropped: dict[str, list[DroppedPrompt]]
    """Dropped prompts by reason: 'duplicate', 'pii', 'user_cap' (every key present)."""
    report: IntakeReport


def assign_splits(users: Sequence[str], settings: IntakeSettings) -> dict[str, Split]:
    """Seeded shuffle of the (sorted) users, cut at the split fractions; every user gets exactly one split."""
    order = sorted(set(users))
    random.Random(settings.seed).shuffle(order)
    n = len(order)
    n_train = round(settings.train_fraction * n)
    n_val = round((settings.train_fraction + settings.validation_fraction) * n) - n_train
    out: dict[str, Split] = {}
    for i, user in enumerate(order):
        out[user] = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
    return out


def run_intake(
    records: Sequence[PromptRecord],
    settings: IntakeSettings,
    *,
    prior: Sequence[KeptPrompt] = (),
) -> IntakeResult:
    """Filter and split `records`; `prior` holds prompts accepted by earlier intakes (for dedup, cap, split)."""
    dropped: dict[str, list[DroppedPrompt]] = {"duplicate": [], "pii": [], "user_cap": []}
    seen_exact = {normalise(p.prompt) for p in prior}
    seen_prefix = {n[: settings.prefix_chars] for n in seen_exact if len(n) >= settings.prefix_chars}
    per_user = Counter(user_key(p.user_id) for p in prior)
    prior_split: dict[str, Split] = {user_key(p.user_id): p.split for p in prior}

    survivors: list[tuple[PromptRecord, str, list[str]]] = []
    for rec in records:
        # 1. duplicates
        norm = normalise(rec.prompt)
        prefix = norm[: settings.prefix_chars] if len(norm) >= settings.prefix_chars else None
        if norm in seen_exact:
            dropped["duplicate"].append(_drop(rec, "duplicate", "exact duplicate of an earlier prompt"))
            continue
        if prefix is not None and prefix in seen_prefix:
            detail = f"shares its first {settings.prefix_chars} characters with an earlier prompt"
            dropped["duplicate"].append(_drop(rec, "duplicate", detail))
            continue
        seen_exact.add(norm)
        if prefix is not None:
            seen_prefix.add(prefix)
        # 2. personal information
        kinds = pii_kinds(rec.prompt)
        if kinds and settings.pii == "drop":
            dropped["pii"].append(_drop(rec, "pii", ", ".join(kinds)))
            continue
        # 3. per-user cap
        user = user_key(rec.user_id)
        if per_user[user] >= settings.max_per_user:
            detail = f"user already has {settings.max_per_user} prompts (the cap)"
            dropped["user_cap"].append(_drop(rec, "user_cap", detail))
            continue
        per_user[user] += 1
        survivors.append((rec, user, kinds))

    # 4. split by user (`user_key`)
    new_users = [user for _, user, _ in survivors if user not in prior_split]
    split_of: dict[str, Split] = {**assign_splits(new_users, settings), **prior_split}
    kept = [
        KeptPrompt(prompt=r.prompt, user_id=r.user_id, split=split_of[user], pii=kinds, messages=r.messages)
        for r, user, kinds in survivors
    ]

    splits = {name: SplitCounts() for name in SPLITS}
    for name in SPLITS:
        in_split = [k for k in kept if k.split == name]
        users = {user_key(k.user_id) for k in in_split}
        splits[name] = SplitCounts(prompts=len(in_split), users=len(users))
    report = IntakeReport(
        received=len(records),
        kept=len(kept),
        dropped_duplicate=len(dropped["duplicate"]),
        dropped_pii=len(dropped["pii"]),
        flagged_pii=sum(1 for k in kept if k.pii),
        dropped_user_cap=len(dropped["user_cap"]),
        splits=splits,
    )
    return IntakeResult(kept=kept, dropped=dropped, report=report)


def _drop(rec: PromptRecord, reason: DropReason, detail: str) -> DroppedPrompt:
    return DroppedPrompt(prompt=rec.prompt, user_id=rec.user_id, reason=reason, detail=detail)
