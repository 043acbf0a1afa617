"""Shared fixtures: a tiny tokenizer and GPT-2 built locally (no hub downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run on 2 CPU cores next to each other: one thread per torch process keeps timings sane.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars are for people, not test logs


@pytest.fixture(autouse=True)
def isolated():
    """Each test starts from the same process-wide state and leaves none behind, whatever its outcome, so
    one failure is one failure: accelerate's state (a stage that raised before `finish` keeps its
    mixed_precision, and every later stage asking for another would fail), torch's threads and default
    dtype, the seeds of random, numpy and torch (0 at the start of each test), and the environment."""
    import random

    import numpy as np
    import torch

    env, threads, dtype = dict(os.environ), torch.get_num_threads(), torch.get_default_dtype()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    from instructrl.training.runtime import forget_process_state

    forget_process_state()
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    os.environ.clear()
    os.environ.update(env)


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

    # word-level keeps the tiny tasks learnable in seconds; tests/integration/test_architectures.py covers BPE
    return train_tokenizer(corpus() + [" ".join(WORDS)], vocab_size=200, kind="word")


# Phi-3-like: every turn ends with <|end|>, which is not EOS; the generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def chat_tokenizer(tiny_tokenizer):
    """The tiny tokenizer with turn tokens and a chat template (tests/unit/test_chat_format.py)."""
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.add_tokens(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], special_tokens=True)
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer, 64-wide GPT-2 with its tokenizer, saved with save_pretrained."""
    from instructrl.models.tiny import build_gpt2, save

    out = tmp_path_factory.mktemp("tiny-gpt2")
    return save(
        build_gpt2(tiny_tokenizer, n_layer=2, n_embd=64, n_head=4, n_positions=128), tiny_tokenizer, out
    )


# --- synthetic data with a preference a tiny model can learn ----------------------------------------------
MARKER = "great"
FILLER = [w for w in WORDS if w != MARKER]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_demos(n: int = 200, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = rng.choice(FILLER)
        # a fifth of the demonstrations use the marker word, so the SFT policy sometimes says it
        response = f"{a} {MARKER}" if rng.random() < 0.2 else f"{a} {a}"
        rows.append({"prompt": f"say {a} twice", "response": response, "user_id": f"u{i % 20}"})
    return rows


def make_comparisons(n: int = 300, seed: int = 1) -> list[dict]:
    """K = 2..5 responses; the more marker words a response holds, the better it ranks."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randint(2, 5)
        responses = []
        for m in range(k):
            # a fixed number of filler words: softmax attention can then read "how many markers" as a share
            words = [rng.choice(FILLER) for _ in range(4)] + [MARKER] * m
            rng.shuffle(words)
            responses.append(" ".join(words))
        order = list(range(k))
        rng.shuffle(order)
        shuffled = [responses[o] for o in order]
        ranking = sorted(range(k), key=lambda j: -order[j])
        rows.append(
            {
                "prompt": f"write {rng.choice(FILLER)}",
                "responses": shuffled,
                "ranking": ranking,
                "user_id": f"u{i % 30}",
            }
        )
    return rows


def make_prompts(n: int = 200, seed: int = 2) -> list[dict]:
    import random

    rng = random.Random(seed)
    return [
        {"prompt": f"write {rng.choice(FILLER)} {rng.choice(FILLER)}", "user_id": f"u{i % 40}"}
        for i in range(n)
    ]


def make_pretrain(n: int = 200, seed: int = 3) -> list[dict]:
    import random

    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(20))} for _ in range(n)]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_jsonl(d / "demos.jsonl", make_demos())
    write_jsonl(d / "comparisons.jsonl", make_comparisons())
    write_jsonl(d / "prompts.jsonl", make_prompts())
    write_jsonl(d / "pretrain.jsonl", make_pretrain())
    return d


# Both precision paths, whatever the machine: `auto` runs bf16 on CPUs with bf16 units (AVX512-BF16, AMX) and
# fp32 on AVX2-only ones, where bf16 is emulated (~200x slower than fp32): the bf16 cases are kept small.
PRECISIONS = [pytest.param("no", id="fp32"), pytest.param("bf16", id="bf16")]

SFT_SET = ["epochs=3", "batch_size=16", "lr=3e-3", "residual_dropout=0", "mixed_precision=no"]
RM_SET = ["epochs=8", "batch_size=16", "lr=1e-3", "mixed_precision=no", "val_fraction=0.2"]


def run_stage(stage: str, out: Path, sets: list[str], **paths) -> dict:
    """Run a stage in-process through its Python entry point; returns summary.json."""
    from instructrl.config import load_config

    if stage == "sft":
        from instructrl.sft.config import SFTConfig as C
        from instructrl.sft.train import run_sft as fn
    elif stage == "rm":
        from instructrl.reward.config import RMConfig as C
        from instructrl.reward.train import run_rm as fn
    else:
        from instructrl.ppo.config import PPOConfig as C
        from instructrl.ppo.train import run_ppo as fn
    config = load_config(C, None, sets)
    return fn(out=out, config=config, changed_keys=set(config.model_fields_set), **paths)


@pytest.fixture(scope="session")
def sft_dir(tmp_path_factory, tiny_model_dir, data_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sft"
    run_stage("sft", out, SFT_SET, model_dir=tiny_model_dir, data=data_dir / "demos.jsonl")
    return out / "final"


@pytest.fixture(scope="session")
def rm_dir(tmp_path_factory, sft_dir, data_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "rm"
    summary = run_stage("rm", out, RM_SET, model_dir=sft_dir, data=data_dir / "comparisons.jsonl")
    assert summary["val_accuracy"] >= 0.95, summary
    return out / "final"


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_cache(tmp_path_factory, tiny_model_dir, monkeypatch) -> Path:
    """A Hub cache holding `org/tiny-gpt2` at branch main and tag v1, laid out as `hf download`
    leaves it, and made the cache of this process (huggingface_hub reads HF_HUB_CACHE once, at import)."""
    import shutil

    import huggingface_hub

    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--org--tiny-gpt2"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / HUB_COMMIT)
    (repo / "refs").mkdir()
    for ref in ("main", "v1"):
        (repo / "refs" / ref).write_text(HUB_COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def run_cli(*args: str) -> tuple[int, str, str]:
    """`instructrl ARGS` in this process, through the same `main` as the console command (a subprocess spent
    ~7 s importing on 2 cores): (exit code, stdout, stderr). An exception that is not a clean exit fails the
    test, as a traceback would."""
    import contextlib
    import io

    from instructrl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    return code, out.getvalue(), err.getvalue()


def scaled_reward_model(rm_dir: Path, out: Path, gain: float, bias: float) -> Path:
    """A copy of the reward model in `rm_dir` that scores gain · r + bias: another value model's start whose
    normalisation is known."""
    import shutil

    from instructrl.models.loading import load_reward_model
    from instructrl.models.scoring import scale_reward

    shutil.copytree(rm_dir, out)
    model = load_reward_model(out)
    scale_reward(model, gain, bias)
    model.save_pretrained(out)
    return out
