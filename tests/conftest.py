"""Shared fixtures: a tiny tokenizer and GPT-2 built locally (no hub downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run on 2 CPU cores next to each other: one thread per torch process keeps timings sane.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "bird",
    "fish",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "tree",
    "house",
    "red",
    "blue",
    "green",
    "big",
    "small",
    "good",
    "bad",
    "happy",
    "sad",
    "yes",
    "no",
    "please",
    "thank",
    "you",
    "answer",
    "question",
    "list",
    "write",
    "story",
    "poem",
    "about",
    "what",
    "is",
    "why",
    "how",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "and",
    "or",
    "but",
    "not",
    "very",
    "great",
    "awful",
    "wonderful",
    "terrible",
]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from instructrl.models.tiny import train_tokenizer

    return train_tokenizer(corpus() + [" ".join(WORDS)], vocab_size=200, kind="bpe")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer, 64-wide GPT-2 with its tokenizer, saved with save_pretrained."""
    from instructrl.models.tiny import build_gpt2, save

    out = tmp_path_factory.mktemp("tiny-gpt2")
    return save(
        build_gpt2(tiny_tokenizer, n_layer=2, n_embd=64, n_head=4, n_positions=128), tiny_tokenizer, out
    )
