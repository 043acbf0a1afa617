"""One demo run as its steps see it (`Demo`: its directory, settings, world and people) and what every step
does with it: read a split's prompts, sample from a model with a seed of its own, name a seed."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructrl.datasets.io import read_records
from instructrl.datasets.records import PromptRecord
from instructrl.demo.labelers import Labeler
from instructrl.demo.settings import TEMPLATE, DemoSettings
from instructrl.demo.world import World


@dataclass
class Demo:
    """Paths and the people of one demo run; each step reads and writes files under `out`."""

    out: Path
    settings: DemoSettings
    world: World
    train_labelers: list[Labeler]
    heldout_labelers: list[Labeler]
    log: Callable[[str], None] = print

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{name}/{self.settings.seed}")


def policy_dir(demo: Demo, round_: int) -> Path:
    """The PPO policy after `round_` (round 0: the SFT model); round r's directory is the library's round
    (instructrl.pipeline.round)."""
    if round_ == 0:
        return demo.path("sft", "final")
    return demo.path(f"round{round_}", "ppo", "final")


def rm_dir(demo: Demo, round_: int) -> Path:
    return demo.path(f"round{round_}", "rm", "final")


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_prompts(demo: Demo, split: str) -> list[PromptRecord]:
    """The prompts of one split of the intake (train, validation, test)."""
    return read_records(demo.path("data", f"prompts_{split}.jsonl"), "prompts")  # type: ignore[return-value]


def sample(items: list, n: int, rng: random.Random) -> list:
    return rng.sample(items, n) if n < len(items) else list(items)


def distinct(texts: list[str]) -> list[str]:
    """The first of each text as the world reads it: SFT decodes "hi!", few-shot answers keep the world's
    spaced "hi !", and ranking both is ranking one answer twice."""
    from instructrl.demo.knowledge import canon

    seen: dict[str, str] = {}
    for t in texts:
        seen.setdefault(canon(t), t)
    return list(seen.values())


def has_run(path: Path) -> bool:
    return (path / "config.yaml").exists()


def precision(s: DemoSettings) -> str:
    from instructrl.training.runtime import resolve_mixed_precision

    return resolve_mixed_precision(s.mixed_precision, cpu=True)


def load_policy(path: Path):
    from instructrl.models.loading import load_causal_lm, load_tokenizer

    return load_causal_lm(path, dropout=False).eval(), load_tokenizer(path)


def generate(
    demo: Demo,
    model,
    tok,
    prompts: list[str],
    *,
    seed: int,
    desc: str,
    k: int | list[int] = 1,
    top_k: int = 0,
    max_new_tokens: int | None = None,
    template: str = TEMPLATE,
) -> list[list[str]]:
    """Samples with a progress bar (`desc`: what is being sampled)."""
    from instructrl.evaluation.models import autocast
    from instructrl.models.generation import sample_responses
    from instructrl.training.runtime import progress_bar

    total = k * len(prompts) if isinstance(k, int) else sum(k)
    with autocast(precision(demo.settings)), progress_bar(total, desc, unit="sample") as bar:
        return sample_responses(
            model,
            tok,
            prompts,
            k=k,
            seed=seed,
            top_k=top_k,
            batch_size=256,  # the same samples as any batch size (seeded per sample), 10-20% faster than 128
            max_new_tokens=max_new_tokens or demo.settings.max_new_tokens,
            prompt_template=template,
            progress=lambda done, _: bar.update(done - bar.n),
        )


def hash_seed(seed: int, name: str) -> int:
    from instructrl.models.generation import mix_seed

    return mix_seed(seed, *name.encode())
