"""Pretrain the demo's base model from scratch and check that its weights are the shipped ones, bit for bit.

    python benchmarks/demo_base.py [--seed 0] [--work DIR]

Runs the demo's world and pretraining steps (`shipped_base=False`) in WORK/seed-N, then compares the
sha256 of the trained `model.safetensors` with `instructrl/demo/base/seed-N/base.json`. Writes
benchmarks/results/demo_base.json: equal or not, the pretraining time, the CPU. fp32 training on a CPU is
deterministic for one thread count and CPU kind; under bf16 (`auto` on a CPU with AMX) the weights differ by
design, so the check forces fp32 (`mixed_precision=no`), the precision the shipped weights were trained in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from instructrl.demo import base
from instructrl.demo.pipeline import Demo, DemoSettings, step_pretrain, step_world
from instructrl.demo.world import World

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("demo-base-check"))
    args = ap.parse_args()
    settings = dataclasses.replace(DemoSettings.full(args.seed), shipped_base=False, mixed_precision="no")
    out = args.work / f"seed-{args.seed}"
    demo = Demo(out=out, settings=settings, world=World(args.seed), train_labelers=[], heldout_labelers=[])
    step_world(demo)
    t0 = time.perf_counter()
    summary = step_pretrain(demo)
    seconds = time.perf_counter() - t0
    meta = json.loads((base.SHIPPED / f"seed-{args.seed}" / "base.json").read_text())
    trained = base.sha256(out / "pretrain" / "final" / "model.safetensors")
    result = {
        "seed": args.seed,
        "equal": trained == meta["weights_sha256"],
        "trained_sha256": trained,
        "shipped_sha256": meta["weights_sha256"],
        "val_loss": summary["val_loss"],
        "shipped_val_loss": meta["summary"]["val_loss"],
        "pretrain_s": round(seconds, 1),
        "cpu": base._cpu_name() or platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    (HERE / "results" / "demo_base.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
