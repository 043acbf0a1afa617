"""The full `instructrl demo` on several seeds, one after another, and its findings side by side.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--work DIR] [--update-readme]

Each seed runs as its own `instructrl demo --seed N --out WORK/seed-N --resume` process (so an
interrupted sweep picks up where it stopped, and a finished seed is only read back). Runs are sequential:
on 2 cores two demos at once take more than twice as long each. Prints one table (rows: figures, columns:
seeds) and writes every seed's summary figures to benchmarks/results/demo_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from readme_section import update_readme

from instructrl.demo.summary import DemoSummary

HERE = Path(__file__).resolve().parent
PROBED = ("sft", "ppo", "ppo_ptx", "ppo_round2")
"""The models whose truthfulness and toxicity probes the table shows (the summary has every model's)."""


def run_seed(seed: int, out: Path) -> dict:
    if not (out / "summary.json").exists():
        cmd = [sys.executable, "-m", "instructrl", "demo", "--seed", str(seed), "--out", str(out)]
        if out.exists():
            cmd.append("--resume")
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return DemoSummary.read(out).as_json()  # read through its type: a summary of another shape fails here


def figures(summary: dict) -> dict:
    """The numbers the issue asks about, flat, from one summary.json."""
    win = summary["win_rate_vs_sft"]
    out: dict = {"test_prompts_n": win["sft"]["n"]}
    out |= {f"win_vs_sft/{m}": w for m, w in win.items()}
    for r in summary.get("rounds", [])[1:]:
        out[f"round{r['round']}/rm_accuracy_before"] = r["rm_accuracy_before"]
        out[f"round{r['round']}/rm_accuracy_after"] = r["rm_accuracy_after"]
    out |= {f"pretrain_loss/{m}": v for m, v in summary["pretrain_loss"].items()}
    out |= {
        "rm_val_accuracy": summary["rm_val_accuracy"],
        "labeler_agreement": summary["labeler_agreement"],
        "heldout_labeler_agreement": summary["heldout_labeler_agreement"],
        "gold_tied_share": summary["rm_analysis"]["gold_tied_share"],
        "gold_vs_labelers": summary["rm_analysis"]["gold_vs_labelers"],
        "rm_vs_gold_untied": summary["rm_analysis"]["rm_vs_gold_untied"],
    }
    out |= {f"gold_score/{m}": v for m, v in summary["gold_score"].items()}
    for key, metrics in (
        ("truthfulness", ("made_up_answer", "hallucination")),
        ("toxicity", ("plain_rude", "polite_rude")),
    ):
        for m in PROBED:
            if m in summary.get(key, {}):
                out |= {f"{key}/{metric}/{m}": summary[key][m][metric] for metric in metrics}
    out |= {f"timings_s/{s}": v for s, v in summary["timings_s"].items()}
    out["findings"] = {f["claim"]: f["holds"] for f in summary["findings"]}
    return out


def table(per_seed: dict[int, dict]) -> str:
    seeds = sorted(per_seed)
    lines = ["| | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]

    def cell(key: str, v) -> str:
        if isinstance(v, dict):
            return f"{v['mean']:.2f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}]"
        if isinstance(v, bool):
            return "holds" if v else "**no**"
        if isinstance(v, int):
            return str(v)
        return f"{v:.0f}" if key.startswith("timings_s/") else f"{v:.3f}"

    keys = [k for k in per_seed[seeds[0]] if k != "findings"]
    for k in keys:
        lines.append(
            f"| {k} | " + " | ".join(cell(k, per_seed[s].get(k, float("nan"))) for s in seeds) + " |"
        )
    for claim in per_seed[seeds[0]]["findings"]:
        lines.append(
            f"| {claim} | " + " | ".join(cell(claim, per_seed[s]["findings"][claim]) for s in seeds) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=Path("demo-seeds"), help="one output directory per seed")
    p.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    args = p.parse_args()

    per_seed = {seed: figures(run_seed(seed, args.work / f"seed-{seed}")) for seed in args.seeds}
    text = table(per_seed)
    print(text)
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "seeds": per_seed,
    }
    out = HERE / "results" / "demo_seeds.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{out}")
    if args.update_readme:
        update_readme(HERE / "README.md", "demo-seeds", text)


if __name__ == "__main__":
    main()
