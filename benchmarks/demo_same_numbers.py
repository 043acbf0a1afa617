"""Does a refactor change what the demo computes? `instructrl demo --quick` in fp32, its summary.json's numbers
against a recorded run's (issue 24: "no behaviour change").

    python benchmarks/demo_same_numbers.py --record   # run it, write results/demo_quick_fp32.json
    python benchmarks/demo_same_numbers.py            # run it, compare with that record (exit 1 if different)

fp32 (`mixed_precision=no`), seed 0, on any CPU kind: the numbers are the computation's, not the machine's
(fp32 sampling is batch-invariant; bf16's is not, so bf16 runs are not compared), with the threads fixed
(INSTRUCTRL_THREADS=fixed). The steps' times are left out of the comparison; every other number of the
record must be equal to 1e-9 relative (the run is deterministic, so a difference is a changed computation,
not noise). Numbers a change adds (a new measurement) are listed, not compared. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RECORD = Path(__file__).parent / "results" / "demo_quick_fp32.json"
IGNORED = {"timings_s"}  # the steps' seconds; every other key of the summary is the computation's


def numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON tree by its path, but the times."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k not in IGNORED:
                out.update(numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.update(numbers(v, f"{prefix}[{i}]"))
    elif isinstance(tree, int | float):  # bools too
        out[prefix] = float(tree)
    return out


def differences(a: dict[str, float], b: dict[str, float]) -> list[str]:
    """The record's numbers that this run lost or changed (numbers it adds are new measurements, not a
    changed computation: `added` lists them)."""
    found = [f"only in the record: {k}" for k in sorted(a.keys() - b.keys())]
    for k in sorted(a.keys() & b.keys()):
        x, y = a[k], b[k]
        if not (x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9)):
            found.append(f"{k}: {x!r} -> {y!r}")
    return found


def run_quick_demo() -> dict[str, Any]:
    code = (
        "import dataclasses, sys; from pathlib import Path; from instructrl.demo import pipeline;"
        "s = dataclasses.replace(pipeline.DemoSettings.quick(seed=0), mixed_precision='no');"
        "pipeline.run_demo(Path(sys.argv[1]), s, log=lambda m: None)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        # threads fixed: the adaptive choice (models/threads.py) follows the machine's load, and another
        # thread count sums in another order (another order of sums)
        env = {**os.environ, "INSTRUCTRL_THREADS": "fixed"}
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env)
        return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write the record ({RECORD})")
    args = parser.parse_args()
    summary = run_quick_demo()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    if args.record:
        RECORD.write_text(json.dumps({"commit": commit.strip(), "summary": summary}, indent=2) + "\n")
        print(f"wrote {RECORD}: {len(numbers(summary))} numbers")
        return
    record = json.loads(RECORD.read_text())
    recorded, now = numbers(record["summary"]), numbers(summary)
    found = differences(recorded, now)
    added = sorted(now.keys() - recorded.keys())
    print(
        f"{len(recorded)} numbers of the record of {record['commit']}: {len(found)} differ"
        f" ({len(added)} new in this run, not compared)"
    )
    for line in found:
        print("  " + line)
    if added:
        print("  new: " + ", ".join(sorted({k.split(".")[0] for k in added})))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
