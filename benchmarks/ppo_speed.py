"""How fast is instructrl's PPO iteration, next to Hugging Face TRL's, on one fixed small model?

    python benchmarks/ppo_speed.py [--quick] [--out benchmarks/results.json] [--trl-python .venv-trl/bin/python]

Every run, from nothing (no hub downloads):
  0. measure this machine's matmul peak (fp32 and bf16 GFLOP/s on the torch threads in use)
  1. build the assets: a byte-level BPE tokenizer (~8k) trained on generated text, a GPT-2 base
     (4 layers, width 256), demonstrations, K=4 rankings, prompts of exactly 32 tokens
  2. SFT (instructrl sft): the policy; SFT tokens/s in each precision
  3. reward model (instructrl rm): r(x, y) prefers responses with more of a marker word; RM pairs/s
  4. PPO, instructrl and TRL (in its own environment, trl_ppo.py) in each precision, on the same SFT policy,
     RM (also the value model's start), prompts and settings; iteration 1 is warm-up, the others are timed
     per phase, and the mean RM score of each iteration is the learning curve
  5. tables (first instructrl against TRL at the same precision; then phases, ratios, episodes/s, MFU
     against the measured peak), results JSON, README tables

The precisions are those the CPU runs fast: fp32, and bf16 only where its bf16 matmul is at least as fast as
fp32 (bf16 units such as AMX; on an AVX2-only CPU bf16 runs at ~0.5 GFLOP/s); --precisions chooses.

Each stage runs in a fresh subprocess (accelerate keeps one mixed-precision state per process).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from readme_section import update_readme

from instructrl.datasets import io

HERE = Path(__file__).resolve().parent
MARKER = "great"  # the reward model learns: the more of this word in a response, the better


@dataclass(frozen=True)
class Bench:
    """The fixed configuration of the issue; --quick shrinks it for a smoke run."""

    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    vocab_size: int = 8192
    prompt_tokens: int = 32
    """Every prompt is exactly this many tokens (template included), so neither framework pads."""
    max_new_tokens: int = 48
    stop_at_eos: bool = False
    """False: every response is max_new_tokens long (TRL's default, stop_token=None), so every iteration of
    either framework does the same work; True: responses end at EOS and the work follows the longest one."""
    rollout_batch_size: int = 64
    batch_size: int = 16
    """Episodes per PPO minibatch: 4 minibatches x 4 epochs = 16 optimizer steps per iteration."""
    ppo_epochs: int = 4
    iterations: int = 10
    """PPO iterations per run: the first is warm-up, the rest are timed; all of them give the learning curve."""
    repeats: int = 2
    """Runs of every measurement (the report gives the median and the range over all timed iterations);
    PPO run r of every configuration uses seed + r, so the learning curves come from `repeats` seeds."""
    lr: float = 3e-5
    kl_coef: float = 0.02
    temperature: float = 1.0
    max_grad_norm: float = 1e9
    """instructrl clips gradients at norm 1 by default; TRL's PPO loop never clips, so neither does here."""
    seed: int = 0
    """Seed of the data and of PPO run r: seed + r, the same for both frameworks."""
    corpus_sentences: int = 20000
    lexicon_words: int = 6000
    prompts: int = 1024
    demos: int = 2000
    comparisons: int = 1200
    sft_epochs: int = 2
    sft_lr: float = 1e-3
    rm_epochs: int = 1
    rm_lr: float = 2e-4
    timed_steps: int = 25
    """Optimizer steps of each SFT / RM throughput run (step 1 is warm-up)."""
    peak_size: int = 2048


QUICK = Bench(
    n_layer=2,
    n_embd=64,
    vocab_size=1024,
    prompt_tokens=16,
    max_new_tokens=8,
    rollout_batch_size=16,
    batch_size=8,
    ppo_epochs=1,
    iterations=2,
    repeats=1,
    corpus_sentences=2000,
    lexicon_words=600,
    prompts=64,
    demos=128,
    comparisons=96,
    sft_epochs=1,
    rm_epochs=1,
    timed_steps=4,
    peak_size=512,
)


# ---------------------------------------------------------------------------------------------------------
# 0. matmul peak
# ---------------------------------------------------------------------------------------------------------
def matmul_peak(n: int, reps: int = 5) -> dict[str, float]:
    """Best GFLOP/s of an n x n x n matrix product, in fp32 and bf16, on torch's current threads."""
    import torch

    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        size = n
        small = torch.randn(256, 256, dtype=dtype)
        if 2 * n**3 * _timed(lambda s=small: s @ s) / (2 * 256**3) > 2.0:  # without bf16 units: minutes at n
            size = 256
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up
        best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(reps))
        peak[name] = 2 * size**3 / best / 1e9
    return peak


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------------------------
# 1. assets: text, tokenizer, base model, demonstrations, rankings, prompts
# ---------------------------------------------------------------------------------------------------------
def make_lexicon(n: int, rng: random.Random) -> list[str]:
    """Pronounceable made-up words (so a BPE vocabulary of ~8k fills up), most frequent first."""
    onsets = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "sh"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou"]
    codas = ["", "", "n", "r", "s", "l", "k"]
    words: dict[str, None] = {}
    while len(words) < n:
        syllables = rng.choice([1, 1, 2, 2, 2, 3, 3, 4])
        words[
            "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables))
        ] = None
    return [w for w in words if w != MARKER]


class Language:
    """Zipf-distributed sentences over a made-up lexicon."""

    def __init__(self, lexicon: list[str], rng: random.Random):
        self.lexicon, self.rng = lexicon, rng
        self.weights = [1.0 / (i + 1) for i in range(len(lexicon))]

    def words(self, n: int) -> list[str]:
        return self.rng.choices(self.lexicon, weights=self.weights, k=n)

    def sentence(self, lo: int, hi: int) -> str:
        return " ".join(self.words(self.rng.randint(lo, hi)))

    def response(self, n_words: int, markers: int) -> str:
        words = self.words(n_words) + [MARKER] * markers
        self.rng.shuffle(words)
        return " ".join(words)


def exact_prompts(lang: Language, tokenizer, n: int, tokens: int, template: str = "{prompt}\n") -> list[str]:
    """Prompts whose templated token count is exactly `tokens`, as instructrl tokenizes them."""
    out = []
    while len(out) < n:
        words: list[str] = []
        while len(tokenizer(template.format(prompt=" ".join(words))).input_ids) < tokens:
            words += lang.words(1)
        text = " ".join(words)
        if len(tokenizer(template.format(prompt=text)).input_ids) == tokens:
            out.append(text)
    return out


def build_assets(work: Path, b: Bench) -> dict[str, Path]:
    from instructrl.models.tiny import build_gpt2, save, train_tokenizer

    rng = random.Random(b.seed)
    lang = Language(make_lexicon(b.lexicon_words, rng), rng)
    corpus = [lang.sentence(6, 20) for _ in range(b.corpus_sentences)]
    corpus += [lang.response(8, rng.randint(0, 3)) for _ in range(b.corpus_sentences // 10)]
    tokenizer = train_tokenizer(corpus, vocab_size=b.vocab_size, kind="bpe")
    base = save(
        build_gpt2(
            tokenizer, n_layer=b.n_layer, n_embd=b.n_embd, n_head=b.n_head, n_positions=256, seed=b.seed
        ),
        tokenizer,
        work / "base",
    )

    prompts = exact_prompts(lang, tokenizer, b.prompts + 16, b.prompt_tokens)
    # demonstrations: a quarter of them use the marker word, so the SFT policy sometimes says it
    demos = [
        {
            "prompt": prompts[rng.randrange(b.prompts)],
            "response": lang.response(rng.randint(4, 14), rng.choice([0, 0, 0, 1])),
            "user_id": f"u{i % 50}",
        }
        for i in range(b.demos)
    ]
    # K = 4 responses with 0..3 markers among 8 other words, ranked by their number of markers
    comparisons = []
    for i in range(b.comparisons):
        markers = [0, 1, 2, 3]
        rng.shuffle(markers)
        comparisons.append(
            {
                "prompt": prompts[rng.randrange(b.prompts)],
                "responses": [lang.response(8, m) for m in markers],
                "ranking": sorted(range(4), key=lambda j: -markers[j]),
                "user_id": f"u{i % 50}",
            }
        )
    paths = {
        "base": base,
        "demos": write_jsonl(work / "demos.jsonl", demos),
        "comparisons": write_jsonl(work / "comparisons.jsonl", comparisons),
        "prompts": write_jsonl(
            work / "prompts.jsonl",
            [{"prompt": p, "user_id": f"u{i}"} for i, p in enumerate(prompts[: b.prompts])],
        ),
        "val_prompts": write_jsonl(
            work / "val_prompts.jsonl", [{"prompt": p, "user_id": "val"} for p in prompts[b.prompts :]]
        ),
    }
    # TRL reads token ids: exactly what instructrl's prompt_ids gives for the same texts
    ids = [tokenizer(f"{p}\n").input_ids for p in prompts[: b.prompts]]
    assert all(len(q) == b.prompt_tokens for q in ids)
    paths["prompt_ids"] = work / "prompt_ids.json"
    paths["prompt_ids"].write_text(json.dumps(ids))
    return paths


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    io.write_jsonl(path, rows)
    return path


# ---------------------------------------------------------------------------------------------------------
# running the stages: the instructrl CLI and trl_ppo.py, each in a fresh process
# ---------------------------------------------------------------------------------------------------------
def run(cmd: list[str], env_threads: int) -> str:
    env = {
        **os.environ,
        "TQDM_DISABLE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(env_threads),
    }
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p.stdout


def instructrl(stage: str, args: list[str], sets: dict, threads: int) -> None:
    flags = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    run([sys.executable, "-m", "instructrl", stage, *args, *flags], threads)


def metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def steady_rate(rows: list[dict], per_step) -> float:
    """Units per second between the end of step 1 (warm-up) and the last step before the end-of-epoch
    evaluation, from the cumulative `time/elapsed_s` of metrics.jsonl."""
    steps = [r for r in rows if "train/loss" in r]
    timed = [r for r in steps if "val/loss" not in r]
    first, last = timed[0], timed[-1]
    units = sum(per_step(r) for r in timed[1:])
    return units / (last["time/elapsed_s"] - first["time/elapsed_s"])


# ---------------------------------------------------------------------------------------------------------
# 2.-3. SFT and the reward model
# ---------------------------------------------------------------------------------------------------------
def mean_tokens(paths, kind: str, b: Bench) -> float:
    """Mean tokens of a training sequence (prompt + response + EOS), as instructrl tokenizes them."""
    from instructrl.models.loading import load_tokenizer

    tok = load_tokenizer(paths["base"])
    rows = [json.loads(line) for line in Path(paths[kind]).read_text().splitlines()]
    responses = (
        [r["response"] for r in rows] if kind == "demos" else [x for r in rows for x in r["responses"]]
    )
    return b.prompt_tokens + sum(
        len(tok(x, add_special_tokens=False).input_ids) + 1 for x in responses
    ) / len(responses)


def sft_rate(work: Path, paths, b: Bench, precision: str, tag: str, threads: int) -> dict[str, float]:
    """SFT throughput: all tokens/s (prompt + response) and response (loss) tokens/s."""
    out = work / f"sft-{precision}-{tag}"
    sets = {
        "epochs": 1,
        "max_steps": b.timed_steps,
        "batch_size": 32,
        "lr": b.sft_lr,
        "residual_dropout": 0,
        "mixed_precision": "no" if precision == "fp32" else precision,
        "checkpoint_every": 10**6,
    }
    args = ["--model", str(paths["base"]), "--data", str(paths["demos"]), "--out", str(out)]
    instructrl("sft", args, sets, threads)
    rows = metrics_rows(out)
    target = steady_rate(rows, lambda r: r["train/tokens"])  # response tokens, EOS included
    per_seq = mean_tokens(paths, "demos", b)
    return {"tokens_per_s": target * per_seq / (per_seq - b.prompt_tokens), "response_tokens_per_s": target}


def rm_rate(work: Path, model_dir: Path, paths, b: Bench, precision: str, tag: str, threads: int):
    """RM throughput: ranked pairs/s (K = 4: 6 pairs and 4 scored sequences per prompt) and tokens/s."""
    out = work / f"rm-{precision}-{tag}"
    batch = 16
    sets = {
        "epochs": 1,
        "max_steps": b.timed_steps,
        "batch_size": batch,
        "lr": b.rm_lr,
        "mixed_precision": "no" if precision == "fp32" else precision,
        "checkpoint_every": 10**6,
    }
    args = ["--model", str(model_dir), "--data", str(paths["comparisons"]), "--out", str(out)]
    instructrl("rm", args, sets, threads)
    pairs = steady_rate(metrics_rows(out), lambda r: 6 * batch)
    return {"pairs_per_s": pairs, "tokens_per_s": pairs / 6 * 4 * mean_tokens(paths, "comparisons", b)}


# ---------------------------------------------------------------------------------------------------------
# 4. PPO
# ---------------------------------------------------------------------------------------------------------
PHASES = ("generate_s", "score_s", "train_s", "iteration_s")


def instructrl_ppo(
    work: Path, policy: Path, reward: Path, paths, b: Bench, precision: str, rep: int, threads: int
):
    out = work / f"ppo-instructrl-{precision}-{rep}"
    sets = {
        "iterations": b.iterations,
        "rollout_batch_size": b.rollout_batch_size,
        "batch_size": b.batch_size,
        "epochs": b.ppo_epochs,
        "max_new_tokens": b.max_new_tokens,
        "temperature": b.temperature,
        "lr": b.lr,
        "kl_coef": b.kl_coef,
        "max_grad_norm": b.max_grad_norm,
        "seed": b.seed + rep,
        "mixed_precision": "no" if precision == "fp32" else precision,
        "eval_prompts": 16,
        "eval_every": 0,
        "keep": "last",
        "reward_norm": False,  # TRL's PPOTrainer scores with the raw RM; so does the learning curve here
        "checkpoint_every": 10**6,
    }
    spec = {
        "policy": str(policy),
        "reward": str(reward),
        "prompts": str(paths["prompts"]),
        "val_prompts": str(paths["val_prompts"]),
        "out": str(out),
        "sets": sets,
        "stop_at_eos": b.stop_at_eos,
    }
    run([sys.executable, str(Path(__file__).resolve()), "--instructrl-ppo", json.dumps(spec)], threads)
    rows = [r for r in metrics_rows(out) if "time/iteration_s" in r]
    iterations = [
        {
            "iteration": r["iteration"],
            **{p: r[f"time/{p}"] for p in PHASES},
            "cpu": {p: r[f"time/{p.removesuffix('_s')}_cpu_s"] for p in PHASES},
            "width": r["response/width"],
            "length": r["response/length"],
            "scores": r["objective/raw_scores"],
            "kl": r["objective/kl"],
        }
        for r in rows
    ]
    return {"framework": "instructrl", "precision": precision, "iterations": iterations}


class NoEOS:
    """A tokenizer whose EOS id is one past the vocabulary, so no response ends before max_new_tokens."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_token_id = len(tokenizer)

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def instructrl_ppo_worker(spec: dict) -> None:
    """instructrl's PPO in this process, as `instructrl ppo` runs it; metrics.jsonl holds the wall and CPU
    (process) time of every phase and the response width R every forward pass ran on. Without stop_at_eos
    the run's tokenizer and stop tokens are swapped (on the set-up object, nothing patched) for an EOS that never
    comes. (Until this session only the tokenizer was: PPO reads its stop tokens from `stops` since chat
    templates came in, and instructrl's responses then ended at EOS, 15 tokens on average against TRL's 48.)"""
    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import train_ppo

    config = load_config(PPOConfig, None, [f"{k}={v}" for k, v in spec["sets"].items()])
    s = setup_ppo(
        policy_dir=spec["policy"],
        reward_dir=spec["reward"],
        prompts=spec["prompts"],
        val_prompts=spec["val_prompts"],
        out=spec["out"],
        config=config,
        changed_keys=set(config.model_fields_set),
    )
    if not spec["stop_at_eos"]:
        s.tokenizer = NoEOS(s.tokenizer)
        s.stops = [s.tokenizer.eos_token_id]  # what ends a response (EOS, a chat template's end of turn)
    train_ppo(s)


def trl_ppo(
    trl_python: str, policy: Path, reward: Path, paths, b: Bench, precision: str, rep: int, threads: int
):
    cmd = [
        trl_python, str(HERE / "trl_ppo.py"),
        "--policy", str(policy), "--reward", str(reward), "--prompts", str(paths["prompt_ids"]),
        "--iterations", str(b.iterations), "--precision", precision,
        "--rollout-batch-size", str(b.rollout_batch_size), "--batch-size", str(b.batch_size),
        "--epochs", str(b.ppo_epochs), "--max-new-tokens", str(b.max_new_tokens),
        "--temperature", str(b.temperature), "--lr", str(b.lr), "--kl-coef", str(b.kl_coef),
        "--seed", str(b.seed + rep), "--threads", str(threads),
        *(["--stop-at-eos"] if b.stop_at_eos else []),
    ]  # fmt: skip
    return json.loads(run(cmd, threads).strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# model FLOPs
# ---------------------------------------------------------------------------------------------------------
def forward_flops(b: Bench, vocab: int, seqs: int, tokens: int, head_tokens: int) -> float:
    """FLOPs of a forward pass over `seqs` causal sequences of `tokens` tokens with the unembedding on
    `head_tokens` of them: 2 * body params * tokens + 2 * V * d * head_tokens + attention (QK^T and AV,
    4 * layers * d per attended pair, T^2/2 pairs per sequence). Embedding lookups, norms, softmax and the
    scalar heads are not counted."""
    d, L = b.n_embd, b.n_layer
    body = L * 12 * d * d  # attention 4 d^2 + MLP 8 d^2 per layer (biases left out)
    return seqs * (2 * body * tokens + 2 * vocab * d * head_tokens + 4 * L * d * tokens * tokens / 2)


def phase_flops(b: Bench, vocab: int, framework: str, R: int) -> dict[str, float]:
    """Model FLOPs the forward/backward passes of each framework execute in one iteration whose responses
    are padded to width R (training = 3x forward)."""
    B, P, E = b.rollout_batch_size, b.prompt_tokens, b.ppo_epochs
    T = P + R
    # generation with a KV cache: every token goes through the body once, the unembedding runs for R tokens
    gen = forward_flops(b, vocab, B, T, R)
    body = forward_flops(b, vocab, B, T, 0)
    if framework == "instructrl":
        # policy and reference (unembedding on the R + 1 positions that predict the response), value, reward
        score = 2 * forward_flops(b, vocab, B, T, R + 1) + 2 * body
        train = E * 3 * (forward_flops(b, vocab, B, T, R + 1) + body)
    else:
        # TRL: log-probs from the generation logits; reference (unembedding on all T), value, reward
        score = forward_flops(b, vocab, B, T, T) + 2 * body
        train = E * 3 * (forward_flops(b, vocab, B, T, T) + body)
    return {"generate_s": gen, "score_s": score, "train_s": train, "iteration_s": gen + score + train}


def per_token_train_flops(b: Bench, vocab: int, unembedding: bool) -> float:
    """Training FLOPs per token of SFT (with the unembedding) or RM training (without); attention left out."""
    d, L = b.n_embd, b.n_layer
    return 3 * (2 * L * 12 * d * d + (2 * vocab * d if unembedding else 0))


# ---------------------------------------------------------------------------------------------------------
# 5. summary
# ---------------------------------------------------------------------------------------------------------
def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(ppo: dict[str, list[dict]], b: Bench, vocab: int, peak: dict[str, float]) -> dict:
    """Per configuration: wall and CPU time per phase (median and range over the timed iterations of all
    runs; the first iteration of each run is warm-up), episodes/s, and MFU (on CPU time, median over the
    iterations, each counted at its own response width)."""
    out = {}
    for name, runs in ppo.items():
        framework, precision = name.split(" ")
        its = [it for r in runs for it in r["iterations"][1:]]
        wall = {p: spread([it[p] for it in its]) for p in PHASES}
        cpu = {p: spread([it["cpu"][p] for it in its]) for p in PHASES}
        mfu = {
            p: statistics.median(
                phase_flops(b, vocab, framework, it["width"])[p] / it["cpu"][p] / (peak[precision] * 1e9)
                for it in its
            )
            for p in PHASES
        }
        out[name] = {
            "wall": wall,
            "cpu": cpu,
            "episodes_per_s": b.rollout_batch_size / wall["iteration_s"]["median"],
            "episodes_per_cpu_s": b.rollout_batch_size / cpu["iteration_s"]["median"],
            "mfu": mfu,
            "response_width": spread([it["width"] for it in its]),
            "response_length": spread([it["length"] for it in its]),
            "scores": [[it["scores"] for it in r["iterations"]] for r in runs],
        }
    return out


def fmt(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


LABELS = {"generate_s": "generation", "score_s": "scoring", "train_s": "training", "iteration_s": "iteration"}


def ppo_table(summary: dict, baseline: str) -> str:
    names = list(summary)
    lines = ["| per PPO iteration | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for clock in ("wall", "cpu"):
        for p, label in LABELS.items():
            cells = [fmt(summary[n][clock][p]) for n in names]
            lines.append(f"| {label}, {clock} s | " + " | ".join(cells) + " |")
    for clock in ("wall", "cpu"):
        for p, label in LABELS.items():
            base = summary[baseline][clock][p]["median"]
            cells = [f"{base / summary[n][clock][p]['median']:.2f}x" for n in names]
            lines.append(f"| {label} speed-up vs {baseline}, {clock} | " + " | ".join(cells) + " |")
    for key, label in (("episodes_per_s", "episodes/s (wall)"), ("episodes_per_cpu_s", "episodes per CPU s")):
        lines.append(f"| {label} | " + " | ".join(f"{summary[n][key]:.1f}" for n in names) + " |")
    for p, label in LABELS.items():
        cells = [f"{100 * summary[n]['mfu'][p]:.0f}%" for n in names]
        lines.append(f"| MFU {label} | " + " | ".join(cells) + " |")
    for key, label in (("response_width", "response width R"), ("response_length", "mean response length")):
        lines.append(f"| {label} | " + " | ".join(fmt(summary[n][key], 1) for n in names) + " |")
    return "\n".join(lines)


def like_for_like_table(summary: dict, precisions: list[str]) -> str:
    """instructrl's speed-up over TRL at the same precision, per phase (wall clock, medians)."""
    pairs = [p for p in precisions if f"trl {p}" in summary and f"instructrl {p}" in summary]
    if not pairs:
        return "(TRL left out: no like-for-like ratios)"
    lines = [
        "| instructrl vs TRL, same precision, wall | " + " | ".join(pairs) + " |",
        "|---" * (len(pairs) + 1) + "|",
    ]
    for p, label in LABELS.items():
        cells = [
            f"{summary[f'trl {q}']['wall'][p]['median'] / summary[f'instructrl {q}']['wall'][p]['median']:.2f}x"
            for q in pairs
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(sft: dict, rm: dict, b: Bench, vocab: int, peak: dict) -> str:
    precisions = list(sft)
    lines = ["| instructrl | " + " | ".join(precisions) + " |", "|---" * (len(precisions) + 1) + "|"]
    rows = (
        ("SFT tokens/s (prompt + response)", sft, "tokens_per_s", True),
        ("SFT response tokens/s", sft, "response_tokens_per_s", None),
        ("RM pairs/s (K = 4)", rm, "pairs_per_s", None),
        ("RM tokens/s", rm, "tokens_per_s", False),
    )
    for label, data, key, unembedding in rows:
        lines.append(
            f"| {label} | " + " | ".join(fmt(spread([v[key] for v in data[p]]), 0) for p in precisions) + " |"
        )
        if unembedding is not None:
            flops = per_token_train_flops(b, vocab, unembedding)
            cells = [
                f"{100 * statistics.median(v[key] for v in data[p]) * flops / (peak[p] * 1e9):.0f}%"
                for p in precisions
            ]
            lines.append(f"| MFU {label.split()[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def learning_table(summary: dict) -> str:
    names = list(summary)
    lines = ["| iteration | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i in range(len(next(iter(summary.values()))["scores"][0])):
        cells = [" / ".join(f"{run[i]:+.2f}" for run in summary[n]["scores"]) for n in names]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, AttributeError):
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
PRECISIONS = ("fp32", "bf16")


def fast_precisions(peak: dict[str, float]) -> list[str]:
    """fp32, and bf16 where this CPU multiplies bf16 matrices at least as fast as fp32 (bf16 units, AMX);
    without them (AVX2 only: ~0.5 GFLOP/s) bf16 runs are hours long and tell nothing."""
    return ["fp32", "bf16"] if peak["bf16"] >= peak["fp32"] else ["fp32"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one timed iteration: a smoke run")
    p.add_argument("--out", help="results JSON (default: benchmarks/results.json; none with --quick)")
    p.add_argument("--trl-python", default=str(HERE.parent / ".venv-trl" / "bin" / "python"))
    p.add_argument("--no-trl", action="store_true", help="leave TRL out even if its environment exists")
    p.add_argument("--threads", type=int, default=0, help="torch threads of every process (0: all CPUs)")
    p.add_argument("--repeats", type=int, help="runs of each measurement (default: 2; 1 with --quick)")
    p.add_argument(
        "--iterations", type=int, help="PPO iterations per run, the first is warm-up (default: 10)"
    )
    p.add_argument("--work", help="keep the models and runs here (default: a new temporary directory)")
    p.add_argument("--update-readme", action="store_true", help="write the tables into benchmarks/README.md")
    p.add_argument(
        "--stop-at-eos", action="store_true", help="responses end at EOS (default: always 48 tokens)"
    )
    p.add_argument(
        "--precisions",
        help="comma-separated, of fp32,bf16 (default: those this CPU runs fast: bf16 only with bf16 units)",
    )
    p.add_argument("--instructrl-ppo", metavar="SPEC", help=argparse.SUPPRESS)  # the PPO worker process
    args = p.parse_args()
    if args.instructrl_ppo:
        instructrl_ppo_worker(json.loads(args.instructrl_ppo))
        return

    b = QUICK if args.quick else Bench()
    b = replace(
        b,
        repeats=args.repeats or b.repeats,
        iterations=args.iterations or b.iterations,
        stop_at_eos=args.stop_at_eos,
    )
    threads = args.threads or os.cpu_count() or 1
    import torch

    torch.set_num_threads(threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="instructrl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    use_trl = not args.no_trl and Path(args.trl_python).exists()
    loads = [os.getloadavg()[0]]
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        loads.append(os.getloadavg()[0])
        print(f"[{time.perf_counter() - t_start:5.0f}s, load {loads[-1]:.1f}] {msg}", flush=True)

    say(f"work dir {work}; {threads} torch threads; TRL: {args.trl_python if use_trl else 'left out'}")
    if threads > 1 and loads[0] > 0.5:
        # OpenMP threads spin waiting for a descheduled sibling: wall and CPU time both balloon
        say(
            f"warning: the machine is busy; with {threads} threads the timings suffer badly (try --threads 1)"
        )
    peak = matmul_peak(b.peak_size)
    say(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    precisions = args.precisions.split(",") if args.precisions else fast_precisions(peak)
    if not set(precisions) <= set(PRECISIONS):
        p.error(f"--precisions: of {','.join(PRECISIONS)}")
    train_precision = "bf16" if "bf16" in fast_precisions(peak) else "no"
    say(
        f"precisions: {', '.join(precisions)}"
        + ("" if "bf16" in precisions else " (bf16 matmul is slower than fp32 here: no bf16 units)")
        + f"; the SFT policy and RM are trained with mixed_precision={train_precision}"
    )

    # 1. assets
    paths = build_assets(work, b)
    from instructrl.models.loading import load_tokenizer

    vocab = len(load_tokenizer(paths["base"]))
    say(f"assets: vocabulary {vocab}, {b.prompts} prompts of {b.prompt_tokens} tokens")

    # 2.-3. the SFT policy and the reward model (bf16 where it is fast, to save time), then the throughput runs
    policy_run, reward_run = work / "sft-policy", work / "rm"
    sets = {
        "epochs": b.sft_epochs,
        "batch_size": 32,
        "lr": b.sft_lr,
        "residual_dropout": 0,
        "mixed_precision": train_precision,
    }
    instructrl(
        "sft",
        ["--model", str(paths["base"]), "--data", str(paths["demos"]), "--out", str(policy_run)],
        sets,
        threads,
    )
    policy = policy_run / "final"
    say(
        f"SFT policy: validation loss {json.loads((policy_run / 'summary.json').read_text())['val_loss']:.3f}"
    )
    sets = {"epochs": b.rm_epochs, "batch_size": 16, "lr": b.rm_lr, "mixed_precision": train_precision}
    instructrl(
        "rm",
        ["--model", str(policy), "--data", str(paths["comparisons"]), "--out", str(reward_run)],
        sets,
        threads,
    )
    reward = reward_run / "final"
    rm_summary = json.loads((reward_run / "summary.json").read_text())
    say(f"reward model: held-out pairwise accuracy {rm_summary['val_accuracy']:.3f}")

    sft: dict[str, list] = {p: [] for p in precisions}
    rm: dict[str, list] = {p: [] for p in precisions}
    for rep in range(b.repeats):
        for prec in precisions:
            sft[prec].append(sft_rate(work, paths, b, prec, str(rep), threads))
            rm[prec].append(rm_rate(work, policy, paths, b, prec, str(rep), threads))
            say(
                f"{prec}: SFT {sft[prec][-1]['tokens_per_s']:.0f} tokens/s, RM {rm[prec][-1]['pairs_per_s']:.0f} pairs/s"
            )

    # 4. PPO; each repeat runs every configuration once, so a busy spell on the machine hits all of them
    configs = [(framework, prec) for prec in precisions for framework in ("trl", "instructrl")]
    if not use_trl:
        configs = [c for c in configs if c[0] == "instructrl"]
    ppo: dict[str, list[dict]] = {}
    for rep in range(b.repeats):
        for framework, prec in configs:
            if framework == "trl":
                result = trl_ppo(args.trl_python, policy, reward, paths, b, prec, rep, threads)
            else:
                result = instructrl_ppo(work, policy, reward, paths, b, prec, rep, threads)
            ppo.setdefault(f"{framework} {prec}", []).append(result)
            its = result["iterations"][1:] or result["iterations"]
            say(
                f"PPO {framework} {prec}, run {rep + 1}: median iteration "
                f"{statistics.median(it['iteration_s'] for it in its):.2f}s wall, "
                f"{statistics.median(it['cpu']['iteration_s'] for it in its):.2f}s CPU; scores "
                + " ".join(f"{it['scores']:+.2f}" for it in result["iterations"])
            )

    # 5. report
    summary = summarise(ppo, b, vocab, peak)
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    header = (
        f"{when}; {machine()}; torch {torch.__version__}, {threads} torch thread(s) per process; "
        f"precisions {', '.join(precisions)}; "
        f"{b.repeats} run(s) x {b.iterations - 1} timed iteration(s) per configuration; median (min-max); "
        f"responses {'end at EOS' if b.stop_at_eos else f'always {b.max_new_tokens} tokens'}. "
        f"Matmul peak: fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s. "
        f"1-minute load average while measuring: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs."
    )
    baseline = "trl fp32" if use_trl else "instructrl fp32"
    report = (
        f"{header}\n\n{like_for_like_table(summary, precisions)}\n\n{ppo_table(summary, baseline)}\n\n"
        f"{throughput_table(sft, rm, b, vocab, peak)}\n\n"
        f"Mean RM score of each iteration's rollouts (run r: seed {b.seed} + r):\n\n{learning_table(summary)}"
    )
    print("\n" + report)

    results = {
        "date": when,
        "machine": machine(),
        "torch": torch.__version__,
        "threads": threads,
        "bench": asdict(b),
        "vocab_size": vocab,
        "matmul_peak_gflops": peak,
        "precisions": precisions,
        "load_average_1min": loads,
        "sft": sft,
        "rm": rm,
        "rm_val_accuracy": rm_summary["val_accuracy"],
        "ppo_summary": summary,
        "ppo_runs": ppo,
    }
    out = args.out or (None if args.quick else str(HERE / "results.json"))
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
        say(f"wrote {out}")
    if args.update_readme:
        update_readme(HERE / "README.md", "results", report)


if __name__ == "__main__":
    main()
