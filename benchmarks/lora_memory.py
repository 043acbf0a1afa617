"""How much memory does a PPO run save with LoRA (`--set lora_r=8`), bf16 frozen models or gradient
checkpointing, against full fine-tuning?

    python benchmarks/lora_memory.py [--out benchmarks/results/lora_memory.json] [--iterations 3]

Builds a GPT-2 of 4 layers, width 256, with a byte-level BPE tokenizer of 8192 tokens (no hub downloads),
uses it as the SFT policy and, with a fresh scalar head, as the reward model, and runs a few PPO iterations
once per case, each case in a fresh subprocess. Each child reports its resident memory (VmRSS) after
importing torch, transformers, peft and instructrl, after PPO's set-up, and the process's peak (getrusage ru_maxrss) at the end, plus the
parameters the optimizer holds. CPU only: accelerate and torch run as `instructrl ppo` would run them.
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
from pathlib import Path

CASES = {
    "full fine-tuning": [],
    "LoRA r=8 (GPT-2 default: c_attn)": ["lora_r=8"],
    "LoRA r=8 all-linear": ["lora_r=8", "lora_target_modules=all-linear"],
    "full, frozen_dtype=bf16": ["frozen_dtype=bf16"],
    "full, gradient_checkpointing": ["gradient_checkpointing=true"],
}
PPO_SET = [
    "rollout_batch_size=16",
    "batch_size=8",
    "epochs=2",
    "max_new_tokens=24",
    "mixed_precision=no",
    "eval_prompts=8",
    "eval_every=0",
    "reward_norm_samples=16",
    "forward_batch_size=16",
    "log_rollouts=false",
    "checkpoint_every=1000",
]


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def build_assets(work: Path) -> dict[str, Path]:
    """A 4-layer, 256-wide GPT-2 with an 8192-token BPE tokenizer, and 64 prompts of made-up words."""
    from instructrl.models.tiny import build_gpt2, save, train_tokenizer

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lexicon = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(6000)]
    corpus = [" ".join(rng.choice(lexicon) for _ in range(30)) for _ in range(4000)]
    tokenizer = train_tokenizer(corpus, vocab_size=8192, kind="bpe")
    model = build_gpt2(tokenizer, n_layer=4, n_embd=256, n_head=4, n_positions=256)
    model_dir = save(model, tokenizer, work / "model")
    prompts = work / "prompts.jsonl"
    rows = [
        {"prompt": " ".join(rng.choice(lexicon) for _ in range(8)), "user_id": f"u{i % 8}"} for i in range(64)
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": model_dir, "prompts": prompts}


def child(work: Path, case: str, iterations: int) -> dict:
    """One PPO run in this process; returns its memory numbers."""
    import peft  # noqa: F401  (every case holds the same libraries, so the baseline below is the same)

    from instructrl.config import load_config
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import train_ppo

    imported = rss_mib()

    config = load_config(PPOConfig, None, [*PPO_SET, f"iterations={iterations}", *CASES[case]])
    s = setup_ppo(
        policy_dir=work / "model",
        reward_dir=work / "model",
        prompts=work / "prompts.jsonl",
        out=Path(tempfile.mkdtemp(dir=work)) / "ppo",
        config=config,
        changed_keys=set(config.model_fields_set),
    )
    trained = sum(p.numel() for g in s.optimizer.param_groups for p in g["params"])
    held = {
        id(p): p.numel()
        for m in (s.policy, s.value_model, s.ref_policy, s.reward_model)
        if m
        for p in m.parameters()
    }
    after_setup = rss_mib()
    summary = train_ppo(s)
    return {
        "case": case,
        "rss_after_imports_mib": imported,
        "rss_after_setup_mib": after_setup,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "parameters_in_memory": sum(held.values()),
        "parameters_trained": trained,
        "reference_loaded": s.ref_policy is not None,
        "iterations": summary["iterations"],
        "time_s": summary["time_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lora_memory.json")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # the child
        print(json.dumps(child(args.work, args.case, args.iterations)))
        return

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_assets(work)
        runs = []
        for case in CASES:
            cmd = [
                sys.executable,
                __file__,
                "--work",
                str(work),
                "--case",
                case,
                "--iterations",
                str(args.iterations),
            ]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]))
    full = runs[0]
    for r in runs:
        r["peak_rss_vs_full"] = r["peak_rss_mib"] / full["peak_rss_mib"]
        r["peak_above_imports_vs_full"] = (r["peak_rss_mib"] - r["rss_after_imports_mib"]) / (
            full["peak_rss_mib"] - full["rss_after_imports_mib"]
        )
    result = {
        "model": "GPT-2, 4 layers, width 256, 4 heads, BPE vocabulary 8192, fp32; policy = RM start",
        "ppo_set": PPO_SET,
        "measured": "each case in a fresh subprocess; VmRSS after imports and set-up, peak = ru_maxrss",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
