"""Training steps/s of the demo's GPT-2 (4 layers, width 128, batch 32 x 128 tokens) on an idle machine and
with one other busy process, for torch thread counts, OpenMP wait policies and instructrl's CoreShare; each
case in a fresh process, after 4 s of warm-up.

    python benchmarks/threads.py [--seconds 15] [--cases 2:default,1:default,2:coreshare]

Spinning OpenMP threads (libgomp spins GOMP_SPINCOUNT = 300000 times before it sleeps by default; ACTIVE:
always) lose their time slices to a competing process and then wait for a descheduled sibling; passive ones
sleep at once; a smaller GOMP_SPINCOUNT sleeps sooner. Writes
results/threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

WORKER = """
import sys, time, torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging
logging.set_verbosity_error()
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
m = GPT2LMHeadModel(GPT2Config(vocab_size=800, n_layer=4, n_embd=128, n_head=4, n_positions=256,
                               bos_token_id=0, eos_token_id=0))
if sys.argv[3] == "coreshare":
    from instructrl.models.threads import CoreShare
    share = CoreShare()
    m.register_forward_pre_hook(lambda *a: share.tick())
opt = torch.optim.AdamW(m.parameters(), 1e-3)
x = torch.randint(0, 800, (32, 128))
def step():
    m(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad()
t = time.perf_counter()
while time.perf_counter() - t < 4:  # warm-up, and CoreShare's first 3 looks
    step()
t, n = time.perf_counter(), 0
while time.perf_counter() - t < float(sys.argv[2]):
    step(); n += 1
print(n / (time.perf_counter() - t))
"""


def steps_per_s(threads: int, setting: str, seconds: float) -> float:
    """`setting`: "default", "coreshare" (instructrl's CoreShare watches the model: instructrl.models.threads)
    or one NAME=VALUE for libgomp (OMP_WAIT_POLICY, GOMP_SPINCOUNT)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    }
    if setting not in ("default", "coreshare"):
        name, value = setting.split("=")
        env[name] = value
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(threads), str(seconds), setting],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--cases", help="comma-separated THREADS:SETTING, e.g. 2:default,1:default,2:coreshare")
    args = p.parse_args()
    cases = [
        (2, "default"),
        (2, "OMP_WAIT_POLICY=ACTIVE"),
        (2, "OMP_WAIT_POLICY=PASSIVE"),
        (2, "GOMP_SPINCOUNT=100000"),
        (2, "GOMP_SPINCOUNT=10000"),
        (2, "GOMP_SPINCOUNT=3000"),
        (2, "GOMP_SPINCOUNT=1000"),
        (1, "default"),
        (2, "coreshare"),
    ]
    if args.cases:
        cases = [(int(c.split(":")[0]), c.split(":", 1)[1]) for c in args.cases.split(",")]
    rows = {}
    for load in ("idle", "one busy process"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "idle" else None
        try:
            for threads, setting in cases:
                rows[f"{load}, {threads} thread(s), {setting}"] = steps_per_s(threads, setting, args.seconds)
        finally:
            if busy is not None:
                busy.kill()
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "steps_per_s": rows}
    (HERE / "results" / "threads.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
