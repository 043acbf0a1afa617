"""SFT -> RM -> PPO on one GPU with a model of real shape: tokens/s, episodes/s and peak GPU memory.

    benchmarks/gpu_check.sh            # one CUDA GPU: writes benchmarks/results/gpu_check.json
    benchmarks/gpu_check.sh --tiny     # CPU smoke test of the same code path (a 2-layer model, seconds)

The model is Qwen2-0.5B's shape (24 layers, width 896, 14 heads with 2 key-value heads, MLP 4864, a vocabulary
of 151,936 words, tied embeddings: 494M parameters) with random weights, built here; nothing is downloaded.
The data are made-up words. Each run is a fresh subprocess, so its peak memory is its own:
  sft, rm                full fine-tuning, bf16 autocast (mixed_precision=auto)
  ppo full               policy, value model, reference and reward model all fp32 weights
  ppo lora               lora_r=16 on all linear layers: the reference is the policy with adapters off
  ppo full, knobs        gradient_checkpointing=true and frozen_dtype=bf16
  sft fsdp, ppo fsdp     sharding=fsdp (FSDP2) under torchrun, one process per visible GPU (NCCL; with
                         --tiny 2 CPU processes, gloo): per-process parameter, gradient and AdamW bytes
                         beside the unsharded runs', and the same throughput numbers (one GPU: one
                         process, which sharding leaves whole; it shards from 2 processes on)
Throughput numbers come from the runs' own metrics.jsonl (SFT: target tokens per second of training; PPO:
episodes per second of whole iterations and generated tokens per second of generation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QWEN2_05B = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    max_position_embeddings=4096,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=128,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def plan(tiny: bool) -> dict:
    """Sizes of the data and of each run; --tiny shrinks everything to a CPU smoke test."""
    if tiny:
        return {
            "vocab": 512,
            "model": TINY,
            "n_demos": 64,
            "sft": ["max_steps=2", "batch_size=8", "mixed_precision=no"],
            "rm": ["max_steps=2", "batch_size=8", "mixed_precision=no"],
            "ppo": [
                "iterations=1",
                "rollout_batch_size=8",
                "batch_size=4",
                "max_new_tokens=8",
                "mixed_precision=no",
                "eval_prompts=4",
                "reward_norm_samples=8",
            ],
        }
    return {
        "vocab": 151_936,
        "model": QWEN2_05B,
        "n_demos": 512,
        "sft": ["max_steps=20", "batch_size=16"],
        "rm": ["max_steps=10", "batch_size=16"],
        "ppo": [
            "iterations=3",
            "rollout_batch_size=64",
            "batch_size=16",
            "max_new_tokens=64",
            "eval_prompts=32",
            "reward_norm_samples=64",
        ],
    }


COMMON = ["epochs=1", "checkpoint_every=1000", "val_fraction=0.05", "max_length=256"]
SFT = [*COMMON, "lr=1e-5", "residual_dropout=0"]
RM = [*COMMON, "lr=9e-6"]
PPO = [*COMMON, "lr=1e-6", "eval_every=0", "forward_batch_size=32", "log_rollouts=false", "keep=last"]
PPO_CASES = {
    "ppo full": [],
    "ppo lora": ["lora_r=16", "lora_target_modules=all-linear", "lr=1e-4"],
    "ppo full, knobs": ["gradient_checkpointing=true", "frozen_dtype=bf16"],
    "ppo fsdp": ["sharding=fsdp"],
}
SHARDED = {"sft fsdp", "ppo fsdp"}  # launched by torchrun, one process per GPU (2 CPU processes with --tiny)


# ---------------------------------------------------------------------------------------------------------
# the model and data, built once by the parent
# ---------------------------------------------------------------------------------------------------------
def build_assets(work: Path, tiny: bool) -> int:
    """A tokenizer with the planned vocabulary, the random-weight model, and made-up data; returns
    the model's parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from instructrl.models.tiny import save, train_tokenizer

    p = plan(tiny)
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lexicon = sorted(
        {"".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(p["vocab"])}
    )
    lexicon = lexicon[: p["vocab"] - 3]  # + EOS, PAD, UNK
    lines = [" ".join(lexicon[i : i + 64]) for i in range(0, len(lexicon), 64)]
    # byte-level BPE: with a Qwen2 config transformers loads the tokenizer as Qwen2Tokenizer, which keeps BPE
    tokenizer = train_tokenizer(lines, vocab_size=p["vocab"], kind="bpe")
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **p["model"],
    )
    model = AutoModelForCausalLM.from_config(config)
    save(model, tokenizer, work / "base")

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(lexicon) for _ in range(rng.randint(lo, hi)))

    n = p["n_demos"]
    rows = {
        "demos": [
            {"prompt": words(8, 24), "response": words(16, 64), "user_id": f"u{i % 32}"} for i in range(n)
        ],
        "comparisons": [
            {
                "prompt": words(8, 24),
                "responses": [words(16, 48) for _ in range(k)],
                "ranking": list(range(k)),
                "user_id": f"u{i % 32}",
            }
            for i, k in enumerate(rng.randint(2, 4) for _ in range(n // 2))
        ],
        "prompts": [{"prompt": words(8, 24), "user_id": f"u{i % 32}"} for i in range(n)],
    }
    for name, records in rows.items():
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------
# one run, in a child process
# ---------------------------------------------------------------------------------------------------------
def peak_memory_mib() -> dict[str, float]:
    import torch

    if torch.cuda.is_available():
        return {
            "peak_gpu_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
            "peak_gpu_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
        }
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def child(work: Path, case: str, tiny: bool) -> dict:
    from instructrl.config import load_config

    p = plan(tiny)
    out = work / case.replace(" ", "_").replace(",", "")
    t0 = time.perf_counter()
    result: dict = {"case": case}
    if case in ("sft", "sft fsdp"):
        from instructrl.sft.config import SFTConfig
        from instructrl.sft.train import run_sft

        sharding = ["sharding=fsdp"] if case == "sft fsdp" else []
        config = load_config(SFTConfig, None, [*SFT, *p["sft"], *sharding])
        summary = run_sft(model_dir=work / "base", data=work / "demos.jsonl", out=out, config=config)
        rows = [r for r in read_metrics(out) if "train/tokens" in r]
        result["target_tokens_per_s"] = sum(r["train/tokens"] for r in rows) / rows[-1]["time/elapsed_s"]
        result["steps"] = summary["steps"]
    elif case == "rm":
        from instructrl.reward.config import RMConfig
        from instructrl.reward.train import run_rm

        config = load_config(RMConfig, None, [*RM, *p["rm"]])
        summary = run_rm(
            model_dir=work / "sft" / "final", data=work / "comparisons.jsonl", out=out, config=config
        )
        rows = [r for r in read_metrics(out) if "train/loss" in r]
        result["comparisons_per_s"] = summary["steps"] * config.batch_size / rows[-1]["time/elapsed_s"]
        result["steps"] = summary["steps"]
    else:
        from instructrl.ppo.config import PPOConfig
        from instructrl.ppo.train import run_ppo

        config = load_config(PPOConfig, None, [*PPO, *p["ppo"], *PPO_CASES[case]])
        summary = run_ppo(
            policy_dir=work / "sft" / "final",
            reward_dir=work / "rm" / "final",
            prompts=work / "prompts.jsonl",
            out=out,
            config=config,
            changed_keys=set(config.model_fields_set),
        )
        rows = [r for r in read_metrics(out) if "objective/kl" in r]
        episodes = len(rows) * config.rollout_batch_size
        generated = sum(r["response/length"] * config.rollout_batch_size for r in rows)
        result.update(
            episodes_per_s=episodes / sum(r["time/iteration_s"] for r in rows),
            generated_tokens_per_s=generated / sum(r["time/generate_s"] for r in rows),
            iteration_s=[r["time/iteration_s"] for r in rows],
            generate_s=[r["time/generate_s"] for r in rows],
            train_s=[r["time/train_s"] for r in rows],
            iterations=summary["iterations"],
            finite=all(isinstance(v, int | float) and v == v for r in rows for v in r.values()),
        )
    result.update(
        peak_memory_mib(),
        wall_s=time.perf_counter() - t0,
        mixed_precision=summary["mixed_precision"],
        processes=summary["processes"],
    )
    if "process_state_bytes" in summary:  # the main process's parameters, gradients and AdamW state
        result["process_state_bytes"] = summary["process_state_bytes"]
    return result


# ---------------------------------------------------------------------------------------------------------
# the parent: assets, then each run in its own process
# ---------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="a 2-layer model on CPU: checks the script, not the GPU"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="result JSON (default: benchmarks/results/gpu_check.json; with --tiny a temporary file)",
    )
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # the child (under torchrun: each process; the main one reports)
        result = child(args.work, args.case, args.tiny)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result))
        return

    import torch

    if not args.tiny and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU visible; run with --tiny for the CPU smoke test")
    out = args.out or (
        Path(tempfile.gettempdir()) / "gpu_check_tiny.json"
        if args.tiny
        else Path(__file__).parent / "results" / "gpu_check.json"
    )
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result: dict = {
        "model": "Qwen2 shape, random weights: " + json.dumps(plan(args.tiny)["model"]),
        "vocab": plan(args.tiny)["vocab"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "tiny": args.tiny,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        result["parameters"] = build_assets(work, args.tiny)
        result["build_s"] = time.perf_counter() - t
        processes = 2 if args.tiny else torch.cuda.device_count()
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
        for case in ["sft", "rm", *PPO_CASES, "sft fsdp"]:
            launcher = [*torchrun, str(processes)] if case in SHARDED else [sys.executable]
            cmd = [
                *launcher,
                __file__,
                "--work",
                str(work),
                "--case",
                case,
                *(["--tiny"] if args.tiny else []),
            ]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                result["runs"].append({"case": case, "error": p.stderr[-3000:]})
                print(f"{case}: FAILED\n{p.stderr[-3000:]}", file=sys.stderr)
                if case in ("sft", "rm"):  # the later runs start from these
                    break
                continue
            result["runs"].append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(json.dumps(result["runs"][-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if any("error" in r for r in result["runs"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
