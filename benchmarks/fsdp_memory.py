"""What does each process hold of a trained model with `sharding: fsdp` (torch FSDP2), against one process
and against DDP?

    python benchmarks/fsdp_memory.py [--out benchmarks/results/fsdp_memory.json] [--steps 3]

For each GPT-2 below (random weights, vocabulary 8192, fp32) and each case — 1 process (nothing to shard),
2 processes DDP (`sharding: none`), 2 processes FSDP2 (`sharding: fsdp`) — runs a few full fine-tuning
steps under `torchrun --standalone` (gloo on CPU), set up by instructrl's own `prepare_training` as SFT and
the RM are. Every process reports the bytes it holds: parameters, gradients (after backward, before the
step) and AdamW state (after the step), local shards counted for DTensors, plus its resident memory after
the steps and its peak (ru_maxrss), which include torch's libraries (~0.5 GB) and transient activations and
gathered blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "gpt2-4x256": {"n_layer": 4, "n_embd": 256, "n_head": 4},
    "gpt2-12x768": {"n_layer": 12, "n_embd": 768, "n_head": 12},  # GPT-2 small's shape, smaller vocabulary
}
CASES = {  # name: (processes, sharding)
    "1 process": (1, "none"),
    "2 processes, DDP": (2, "none"),
    "2 processes, FSDP2": (2, "fsdp"),
}
VOCAB, SEQ, BATCH = 8192, 128, 8  # global batch of 8 sequences of 128 tokens


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def local_bytes(tensors) -> int:
    """Bytes this process holds of `tensors` (a DTensor's local shard only)."""
    return sum((t.to_local() if hasattr(t, "to_local") else t).numel() * t.element_size() for t in tensors)


def child(model_name: str, sharding: str, steps: int) -> None:
    """Run under torchrun: a few training steps, then rank 0 prints every process's numbers as JSON."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from instructrl.config import load_config
    from instructrl.sft.config import SFTConfig
    from instructrl.training.runtime import make_accelerator
    from instructrl.training.sharding import clip_grad_norm, is_sharded, prepare_training

    config = load_config(
        SFTConfig, None, [f"sharding={sharding}", "mixed_precision=no", f"batch_size={BATCH}", "lr=1e-4"]
    )
    accelerator = make_accelerator(config)
    world, rank = accelerator.num_processes, accelerator.process_index
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=SEQ, **MODELS[model_name]))
    n_params = sum(p.numel() for p in model.parameters())
    model, optimizer, scheduler = prepare_training(accelerator, model, config, steps)

    gen = torch.Generator().manual_seed(rank)
    step_s, grads = [], 0
    for _ in range(steps):
        t0 = time.perf_counter()
        ids = torch.randint(0, VOCAB, (BATCH // world, SEQ), generator=gen)  # (B/N, T) this process's share
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        grads = local_bytes(p.grad for p in model.parameters() if p.grad is not None)
        clip_grad_norm(accelerator, model, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t0)

    params = local_bytes(model.parameters())
    optim = local_bytes(
        v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0
    )
    mine = {
        "rank": rank,
        "param_type": sorted({type(p).__name__ for p in model.parameters()}),
        "sharded": is_sharded(model),
        "params_bytes": params,
        "grads_bytes": grads,
        "optimizer_bytes": optim,
        "state_bytes": params + grads + optim,
        "rss_after_steps_mib": rss_mib(),
        # ru_maxrss (Linux: KiB) is a high-water mark the kernel updates lazily: never below the RSS now
        "peak_rss_mib": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mib()),
        "step_s_after_first": sum(step_s[1:]) / max(len(step_s) - 1, 1),
    }
    every = [mine]
    if world > 1:
        every = [None] * world
        torch.distributed.all_gather_object(every, mine)
    if rank == 0:
        print(json.dumps({"parameters": n_params, "processes": every}))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def cpu_name() -> str:
    """lscpu's model name, and whether the CPU has AMX (the bf16 units `mixed_precision: auto` picks)."""
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), "?")
    return f"{name}{' with AMX' if 'amx_tile' in info else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fsdp_memory.json")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SHARDING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.steps)
        return

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for case, (n, sharding) in CASES.items():
                cmd = [torchrun, "--standalone", "--nproc-per-node", str(n), __file__]
                cmd += ["--child", model, sharding, "--steps", str(args.steps)]
                p = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
                if p.returncode:
                    sys.exit(f"{model}, {case} failed:\n{p.stderr[-3000:]}")
                runs.append({"model": model, "case": case, **json.loads(p.stdout.strip().splitlines()[-1])})
                print(json.dumps(runs[-1]))
    for r in runs:  # each process's state against the 1-process run of the same model
        one = next(o for o in runs if o["model"] == r["model"] and o["case"] == "1 process")
        whole = one["processes"][0]
        for proc in r["processes"]:
            for key in ("params_bytes", "grads_bytes", "optimizer_bytes", "state_bytes"):
                proc[key.replace("_bytes", "_vs_one_process")] = round(proc[key] / whole[key], 4)
    result = {
        "models": {
            k: {**v, "vocab_size": VOCAB, "n_positions": SEQ, "dtype": "fp32"} for k, v in MODELS.items()
        },
        "steps": args.steps,
        "global_batch": f"{BATCH} sequences of {SEQ} tokens, AdamW, full fine-tuning",
        "launch": "torchrun --standalone, gloo, OMP_NUM_THREADS=1; set up by training.sharding.prepare_training",
        "measured": "per process: local bytes (DTensor shards counted locally); grads after backward, AdamW "
        "state after the step; VmRSS after the steps and peak ru_maxrss (torch's libraries included)",
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
