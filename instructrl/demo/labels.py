"""The demo's training labelers as the pipeline's `LabelSource` (instructrl.pipeline.labels): where a team's
labelers work in the labeling app, the demo's are simulated (labelers.py), and the library's pipeline asks
them as it would ask the app.

    demonstrations   written for training prompts (and validation ones, for SFT's validation loss)
    round 1          K = 4..9 distinct samples per prompt from the SFT model and from the base model under a
                     few-shot prompt (InstructGPT's comparisons also came from several policies), ranked
    round r > 1      K = 4..9 distinct samples per prompt, about half from the current policy (round r - 1's
                     PPO) and half from the one before it (SFT in round 2), ranked
    judge            with `ppo_keep_by: labelers`, PPO's kept checkpoint chosen by their A/B verdicts

A share of the ranking tasks is ranked by a second labeler, for their agreement. Every file goes under
OUT/data, each round's rankings with a record of how they went (rankings_roundN.json, written last: a run
stopped before it ranks again — the labelers are deterministic, so the same rankings come out).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Self

from pydantic import BaseModel, ConfigDict

from instructrl.datasets.io import atomic_write_text, write_jsonl
from instructrl.datasets.records import Comparison, Demonstration, PromptRecord
from instructrl.demo.context import (
    Demo,
    distinct,
    generate,
    hash_seed,
    load_policy,
    sample,
    split_prompts,
)
from instructrl.demo.labelers import OUTCOME
from instructrl.demo.world import few_shot_answer
from instructrl.evaluation.stats import ranking_agreement
from instructrl.pipeline.labels import Demonstrations, Prompts, RoundLabels
from instructrl.training.summary import read_model

if TYPE_CHECKING:
    from instructrl.ppo.setup import RewardFn

JUDGE_BASELINE = "judge_baseline.json"


class RankingRecord(BaseModel):
    """OUT/data/rankings_roundN.json: how a round's ranking went, written once its comparisons are."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    labeler_agreement: float
    """Pairwise agreement of two training labelers ranking the same task (the tasks ranked twice)."""
    labeler_agreement_pairs: int
    skipped_too_few_distinct: int
    """Prompts left out: fewer than K_min distinct candidates."""
    comparisons: dict[str, int] = {}
    """Rankings written per split (rounds 2..R)."""

    @classmethod
    def read(cls, out: Path, round_: int) -> Self:
        """Round `round_`'s record of the demo run in `out`."""
        return read_model(cls, record_file(out, round_))

    def write(self, out: Path, round_: int) -> None:
        atomic_write_text(record_file(out, round_), self.model_dump_json(indent=2))


def record_file(out: Path, round_: int) -> Path:
    return out / "data" / f"rankings_round{round_}.json"


class SimulatedLabels:
    """`LabelSource` of the demo's training labelers (held-out labelers never label for training)."""

    def __init__(self, demo: Demo):
        self.demo = demo

    @property
    def rounds(self) -> int:
        return self.demo.settings.rounds

    def check(self) -> None:
        """Nothing to read ahead: the labelers write what the pipeline asks for when it asks."""

    def demonstrations(self) -> Demonstrations:
        demo, s = self.demo, self.demo.settings
        files = {
            split: demo.path("data", f"demonstrations_{split}.jsonl") for split in ("train", "validation")
        }
        for split, n in (("train", s.n_demonstrations), ("validation", max(50, s.n_demonstrations // 10))):
            if files[split].is_file():
                continue
            prompts = sample(split_prompts(demo, split), n, demo.rng(f"demonstrations/{split}"))
            records = []
            for i, p in enumerate(prompts):
                labeler = demo.train_labelers[i % len(demo.train_labelers)]
                records.append(
                    Demonstration(
                        prompt=p.prompt,
                        response=labeler.write_demonstration(p.prompt),
                        user_id=p.user_id,
                        labeler_id=labeler.id,
                    )
                )
            write_jsonl(files[split], records)
        return Demonstrations(files["train"], files["validation"])

    def prompts(self) -> Prompts:
        return Prompts(
            self.demo.path("data", "prompts_train.jsonl"), self.demo.path("data", "prompts_validation.jsonl")
        )

    def round_labels(self, round_: int, *, policy: Path, previous_policy: Path | None) -> RoundLabels:
        files = {
            split: self.demo.path("data", comparisons_file(round_, split))
            for split in ("train", "validation")
        }
        if not record_file(self.demo.out, round_).is_file():
            if round_ == 1:
                record = self._rank_first(policy, files)
            else:
                assert previous_policy is not None
                record = self._rank_later(round_, policy, previous_policy, files)
            record.write(self.demo.out, round_)
        return RoundLabels(files["train"], files["validation"])

    def judge(self, round_: int, out: Path) -> RewardFn | None:
        return labelers_judge(self.demo, out / JUDGE_BASELINE)

    # --- the rankings --------------------------------------------------------------------------------------

    def _rank_first(self, sft_dir: Path, files: dict[str, Path]) -> RankingRecord:
        """Round 1: samples of the SFT model and of the few-shot base model. With `rankings_per_prompt` > 1
        each training prompt is ranked again on fresh samples (K drawn afresh), pass 0 being the single
        pass's."""
        demo, s, world = self.demo, self.demo.settings, self.demo.world
        sft, sft_tok = load_policy(sft_dir)
        base, base_tok = load_policy(demo.path("pretrain", "final"))
        agree, skipped = [0, 0], 0
        splits = (
            ("train", s.n_comparison_prompts, s.rankings_per_prompt),
            ("validation", max(60, s.n_comparison_prompts // 8), 1),
        )
        for split, n, passes in splits:
            records, rng = [], demo.rng(f"comparisons/{split}")
            prompts = sample(split_prompts(demo, split), n, rng)
            texts = [p.prompt for p in prompts]
            for pass_ in range(passes):  # each pass ranks fresh samples of the same prompts
                tag = split if pass_ == 0 else f"{split}/{pass_}"
                rng = rng if pass_ == 0 else demo.rng(f"comparisons/{tag}")
                ks = [rng.randint(*s.k_range) for _ in prompts]
                # about half from each policy, with one spare each for duplicates
                n_sft = [(k + 1) // 2 + 1 for k in ks]
                n_base = [k // 2 + 1 for k in ks]
                from_sft = generate(
                    demo, sft, sft_tok, texts, k=n_sft, seed=hash_seed(s.seed, f"cmp-sft/{tag}"),
                    desc=f"candidates from SFT ({tag})",
                )  # fmt: skip
                from_base = generate(
                    demo, base, base_tok, [world.few_shot_prompt(t) for t in texts], k=n_base,
                    seed=hash_seed(s.seed, f"cmp-base/{tag}"), desc=f"candidates from few-shot base ({tag})",
                    template="{prompt}",
                )  # fmt: skip
                pools = [
                    [*from_sft[i], *(few_shot_answer(r) for r in from_base[i])] for i in range(len(prompts))
                ]
                ranked, n_skipped = self._rank(prompts, pools, ks, rng, agree, model="sft+base_fewshot")
                records += ranked
                skipped += n_skipped
            write_jsonl(files[split], records)
        return RankingRecord(
            labeler_agreement=agree[0] / max(agree[1], 1),
            labeler_agreement_pairs=agree[1],
            skipped_too_few_distinct=skipped,
        )

    def _rank_later(
        self, round_: int, current: Path, previous: Path, files: dict[str, Path]
    ) -> RankingRecord:
        """Round r > 1: samples of the current policy and of the one before it, on training prompts (some
        ranked in earlier rounds too) and validation prompts."""
        demo, s = self.demo, self.demo.settings
        loaded = {"current": load_policy(current), "previous": load_policy(previous)}
        agree, skipped, counts = [0, 0], 0, {}
        n_val = max(60, s.round_comparison_prompts // 8)
        for split, n in (("train", s.round_comparison_prompts), ("validation", n_val)):
            rng = demo.rng(f"comparisons/round{round_}/{split}")
            prompts = sample(split_prompts(demo, split), n, rng)
            texts = [p.prompt for p in prompts]
            ks = [rng.randint(*s.k_range) for _ in prompts]
            samples = {}
            for name, (model, tok) in loaded.items():
                k = [(k + 1) // 2 + 1 if name == "current" else k // 2 + 1 for k in ks]
                seed = hash_seed(s.seed, f"cmp-round{round_}-{name}/{split}")
                samples[name] = generate(
                    demo, model, tok, texts, k=k, seed=seed, desc=f"round {round_}: {name} policy ({split})"
                )
            pools = [[*samples["current"][i], *samples["previous"][i]] for i in range(len(prompts))]
            label = f"ppo_round{round_ - 1}+" + ("sft" if round_ == 2 else f"ppo_round{round_ - 2}")
            records, n_skipped = self._rank(prompts, pools, ks, rng, agree, model=label, round_=round_)
            skipped += n_skipped
            counts[split] = write_jsonl(files[split], records)
        return RankingRecord(
            comparisons=counts,
            labeler_agreement=agree[0] / max(agree[1], 1),
            labeler_agreement_pairs=agree[1],
            skipped_too_few_distinct=skipped,
        )

    def _rank(
        self,
        prompts: list[PromptRecord],
        pools: list[list[str]],
        ks: list[int],
        rng: random.Random,
        agree: list[int],
        model: str,
        round_: int | None = None,
    ) -> tuple[list[Comparison], int]:
        """Training labelers rank the first K distinct candidates of each pool (a share of the tasks twice,
        for their agreement, added up in `agree`). Returns the comparisons and how many prompts had too few."""
        demo = self.demo
        labelers, records, skipped = demo.train_labelers, [], 0
        for i, p in enumerate(prompts):
            responses = distinct(pools[i])[: ks[i]]  # (an empty answer is ranked too)
            if len(responses) < demo.settings.k_range[0]:
                skipped += 1
                continue
            rng.shuffle(responses)
            labeler = labelers[i % len(labelers)]
            ranking = labeler.rank(p.prompt, responses)
            task = Comparison(
                prompt=p.prompt, responses=responses, ranking=ranking, user_id=p.user_id, model=model,
                round=round_,
            )  # fmt: skip
            records.append(task.model_copy(update={"labeler_id": labeler.id}))
            if rng.random() < demo.settings.overlap:  # a second training labeler ranks the same task
                j = (i + 1 + rng.randrange(len(labelers) - 1)) % len(labelers)
                other = labelers[j]
                second = other.rank(p.prompt, responses)
                a, t = ranking_agreement(ranking, second)
                agree[0], agree[1] = agree[0] + a, agree[1] + t
                records.append(task.model_copy(update={"ranking": second, "labeler_id": other.id}))
        return records, skipped


def comparisons_file(round_: int, split: str) -> str:
    """The file under OUT/data holding round `round_`'s rankings of one split."""
    return f"comparisons_{split}.jsonl" if round_ == 1 else f"comparisons_round{round_}_{split}.jsonl"


def labelers_judge(demo: Demo, baseline_file: Path) -> RewardFn | None:
    """With `ppo_keep_by: labelers`, PPO's checkpoint choice by the training labelers instead of the RM being
    optimised: each held-out answer (validation users' prompts) against the first evaluation's answer to the
    same prompt, the policy PPO started from; 1 a win, 0.5 a tie, 0 a loss. The first answers are kept in
    `baseline_file`, so that a resumed run judges against the same ones. None with `ppo_keep_by:
    reward_model` (the RM's mean score chooses)."""
    if demo.settings.ppo_keep_by != "labelers":
        return None
    baseline: dict[str, str] = json.loads(baseline_file.read_text()) if baseline_file.exists() else {}
    labelers = demo.train_labelers

    def judge(prompts: list[str], responses: list[str]) -> list[float]:
        if not baseline:
            baseline.update(zip(prompts, responses, strict=True))
            atomic_write_text(baseline_file, json.dumps(baseline))
        verdicts = (
            labelers[i % len(labelers)].compare(p, r, baseline[p])
            for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
        )
        return [OUTCOME[v] for v in verdicts]

    return judge
