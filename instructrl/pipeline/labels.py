"""Where the pipeline's human data comes from: one interface, `LabelSource`, whatever collects the labels.

    exported   the labeling app's exports (`instructrl label export`), one folder per round
    database   the app's database: start round N's generation job from the policies, wait for its rankings
    demo       the demo's simulated labelers (instructrl.demo.labels; a program's source, not a config's)

The pipeline asks a source for the demonstrations once, for the PPO prompts once, and for each round's
rankings with the policies that round's answers should come from; a source that collects rankings (the
database, the demo) starts their generation there and returns once they are ranked, a source of files
(exported) has them already and ignores the policies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field

from instructrl.errors import UserError

if TYPE_CHECKING:
    from instructrl.ppo.setup import RewardFn


class Demonstrations(NamedTuple):
    train: Path
    validation: Path | None
    """None: SFT splits its validation demonstrations off by user id."""


class Prompts(NamedTuple):
    train: Path
    validation: Path | None
    """None: PPO splits its held-out prompts off."""


class RoundLabels(NamedTuple):
    comparisons: Path
    """This round's new rankings (the earlier rounds' come with the previous round's directory)."""
    validation: Path | None
    """This round's held-out rankings: the RM's accuracy on them before and after retraining."""


class LabelSource(Protocol):
    @property
    def rounds(self) -> int:
        """How many rounds of rankings the pipeline runs."""
        ...

    def check(self) -> None:
        """Read what exists already, so that bad data stops the pipeline before any training."""
        ...

    def demonstrations(self) -> Demonstrations: ...

    def prompts(self) -> Prompts: ...

    def round_labels(self, round_: int, *, policy: Path, previous_policy: Path | None) -> RoundLabels:
        """Round `round_`'s rankings, of answers from `policy` (SFT in round 1, round N - 1's policy later)
        and `previous_policy` (the one before it; None in round 1)."""
        ...

    def judge(self, round_: int, out: Path) -> RewardFn | None:
        """PPO's checkpoint choice in round `round_` (its directory `out`) by this source's labelers
        (run_ppo's `judge_fn`), or None: by the reward model's score. Only a source whose labelers answer
        while PPO runs can judge (the demo's); people working in the app answer later."""
        ...


class ExportedLabels(BaseModel):
    """The labeling app's exports: `instructrl label export --out DEMOS` once for the demonstrations, and
    `instructrl label export --round N --out ROUND_N` for each round's rankings."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    source: Literal["exported"] = "exported"
    """Where the human data comes from: 'exported' (this section; the default) or 'database' (DatabaseLabels)."""
    demonstrations: Path
    """An export folder holding train/demonstrations.jsonl (and validation/demonstrations.jsonl, which SFT
    then validates on; without it SFT splits validation demonstrations off by user id)."""
    rounds: list[Path] = Field(min_length=1)
    """One export folder per round (`label export --round N`), in order: train/comparisons.jsonl, and
    validation/comparisons.jsonl for the RM's accuracy on that round's rankings. Their number is the
    number of rounds."""
    prompts: Path
    """PPO's prompts, JSONL (those imported into the app with `instructrl label import-prompts`)."""
    val_prompts: Path | None = None
    """PPO's held-out prompts (empty: split off from `prompts`)."""

    def open(self) -> ExportedFiles:
        return ExportedFiles(self)


class ExportedFiles:
    """`LabelSource` over export folders: every round's rankings are there before the pipeline starts,
    ranked on whichever policies the team sampled them from."""

    def __init__(self, config: ExportedLabels):
        self.config = config

    @property
    def rounds(self) -> int:
        return len(self.config.rounds)

    def check(self) -> None:
        from instructrl.datasets.io import read_comparisons, read_demonstrations, read_prompts

        demos = self.demonstrations()
        read_demonstrations([demos.train, *([demos.validation] if demos.validation else [])])
        prompts = self.prompts()
        read_prompts([prompts.train, *([prompts.validation] if prompts.validation else [])])
        for n in range(1, self.rounds + 1):
            labels = self._round(n)
            read_comparisons([labels.comparisons, *([labels.validation] if labels.validation else [])])

    def demonstrations(self) -> Demonstrations:
        return Demonstrations(*_split_files(self.config.demonstrations, "demonstrations.jsonl"))

    def prompts(self) -> Prompts:
        for file in (self.config.prompts, self.config.val_prompts):
            if file is not None and not file.is_file():
                raise UserError(f"{file}: no such prompts file (data.prompts / data.val_prompts)")
        return Prompts(self.config.prompts, self.config.val_prompts)

    def round_labels(self, round_: int, *, policy: Path, previous_policy: Path | None) -> RoundLabels:
        return self._round(round_)  # exported already: whoever exported them chose the policies

    def judge(self, round_: int, out: Path) -> RewardFn | None:
        return None

    def _round(self, round_: int) -> RoundLabels:
        return RoundLabels(*_split_files(self.config.rounds[round_ - 1], "comparisons.jsonl"))


def _split_files(folder: Path, name: str) -> tuple[Path, Path | None]:
    """An export folder's train/NAME (required, not empty) and validation/NAME (None if missing or empty:
    the app writes every split's file, an empty one where a split has no labels)."""
    if not folder.is_dir():
        raise UserError(
            f"{folder}: no such export folder; write it with `instructrl label export --out {folder}`"
        )
    train, validation = folder / "train" / name, folder / "validation" / name
    if not train.is_file() or train.stat().st_size == 0:
        raise UserError(
            f"{train}: missing or empty; is {folder} an `instructrl label export` folder with labels in it?"
        )
    return train, validation if validation.is_file() and validation.stat().st_size > 0 else None


class DatabaseLabels(BaseModel):
    """The labeling app's database, while its labelers work: each round's generation job is started there
    from the policies the pipeline has trained (`instructrl round --db` does the same for one round), the
    pipeline waits until every ranking task of the round is ranked, then exports the round's rankings."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    source: Literal["database"] = "database"
    """Where the human data comes from: the app's database."""
    database_url: str
    """The URL `instructrl label serve` uses (sqlite:///path/labels.db or postgresql://...)."""
    rounds: int = Field(ge=1)
    """Rounds of rankings the pipeline runs."""
    exports: Path
    """Where the app's labels are exported to: demonstrations/ (once), round1/, round2/, ... (each round)."""
    prompts: Path
    """PPO's prompts, JSONL (those imported into the app with `instructrl label import-prompts`)."""
    val_prompts: Path | None = None
    """PPO's held-out prompts (empty: split off from `prompts`)."""
    k: int = 4
    """Candidates per prompt in each round's ranking tasks."""
    limit: int = Field(default=100, ge=1)
    """Prompts each round's generation job takes (those without a ranking task in the round yet)."""
    split: Literal["train", "validation", "test", "all"] = "all"
    """The prompts' split each round's generation job takes them from."""
    seed: int = 0
    """Sampling seed of the generation jobs."""
    poll_seconds: float = Field(default=30.0, gt=0)
    """How often the pipeline looks whether a round's rankings are in."""
    timeout_hours: float | None = Field(default=None, gt=0)
    """Give up waiting for a round's rankings after this long (empty: wait as long as it takes)."""

    def open(
        self, *, log: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep
    ) -> DatabaseRounds:
        return DatabaseRounds(self, log=log, sleep=sleep)


class DatabaseRounds:
    """`LabelSource` over the app's database. A round that holds ranking tasks already (uploaded, or a job
    started before the pipeline was stopped) gets no second generation job: its tasks are waited for."""

    def __init__(
        self,
        config: DatabaseLabels,
        *,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config, self.log, self.sleep = config, log, sleep
        self._demonstrations: Demonstrations | None = None

    @property
    def rounds(self) -> int:
        return self.config.rounds

    def check(self) -> None:
        from instructrl.datasets.io import read_demonstrations, read_prompts
        from instructrl.labeling.services.rounds import NotReady, check_ready

        try:
            check_ready(database_url=self.config.database_url, k=self.config.k, limit=self.config.limit)
        except NotReady as e:
            raise UserError(f"data.{e.argument} {e.value}: {e.reason}") from None
        demos = self.demonstrations()
        read_demonstrations([demos.train, *([demos.validation] if demos.validation else [])])
        prompts = self.prompts()
        read_prompts([prompts.train, *([prompts.validation] if prompts.validation else [])])

    def demonstrations(self) -> Demonstrations:
        """Exported once, so SFT and every round's reward normalisation read the same ones."""
        from instructrl.labeling.services.rounds import export_labels

        if self._demonstrations is None:
            folder = self.config.exports / "demonstrations"
            export_labels(database_url=self.config.database_url, out_dir=folder)
            self._demonstrations = Demonstrations(*_split_files(folder, "demonstrations.jsonl"))
        return self._demonstrations

    def prompts(self) -> Prompts:
        for file in (self.config.prompts, self.config.val_prompts):
            if file is not None and not file.is_file():
                raise UserError(f"{file}: no such prompts file (data.prompts / data.val_prompts)")
        return Prompts(self.config.prompts, self.config.val_prompts)

    def round_labels(self, round_: int, *, policy: Path, previous_policy: Path | None) -> RoundLabels:
        from instructrl.labeling.services import rounds as service

        # the names the round's responses are recorded under, as `instructrl round --db` gives them
        names = ["sft" if n == 0 else f"round{n}" for n in (round_ - 1, round_ - 2)]
        sources = [(policy, names[0]), *([(previous_policy, names[1])] if previous_policy else [])]
        hours, folder = self.config.timeout_hours, self.config.exports / f"round{round_}"
        service.collect_round(
            database_url=self.config.database_url,
            round=round_,
            checkpoints=[service.Checkpoint(path, name) for path, name in sources],
            k=self.config.k,
            limit=self.config.limit,
            split=self.config.split,
            seed=self.config.seed,
            out_dir=folder,
            poll_seconds=self.config.poll_seconds,
            timeout_seconds=hours * 3600 if hours is not None else None,
            log=self.log,
            sleep=self.sleep,
        )
        return RoundLabels(*_split_files(folder, "comparisons.jsonl"))

    def judge(self, round_: int, out: Path) -> RewardFn | None:
        return None
