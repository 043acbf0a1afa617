"""The demo with PPO's reward model replaced by the world's gold standard: how far PPO gets with a perfect RM.

    python benchmarks/demo_oracle.py RUN OUT [--scale 5] [--set KEY=VALUE ...]

RUN is a finished `instructrl demo` run. Its world, data, base, SFT and reward models are copied into OUT;
then PPO and PPO-ptx run with `reward_fn = scale * (gold score - 1)` instead of the reward model (the value
model still starts from RUN's RM), and the demo's own evaluation (held-out labelers, same prompts and
sampling seeds) judges them. `--set` overrides demo settings for this run (e.g. `--set ppo_iterations=180`).

This is a diagnostic, not a result: the demo itself never trains on the gold standard. It separates two
reasons PPO may fail to beat SFT: a reward model too weak to point the way, or a policy that PPO's budget
cannot improve even with the true reward.

The scale: labelers perceive quality with noise of about 0.225 per response, so a Bradley-Terry reward
model that were exact would put about 1.7 / (0.225 * sqrt 2) = 5.3 logits on one unit of gold score.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

COPIED = ("world", "data", "pretrain", "sft", "round1/rm")
"""What the oracle run takes from the demo run: everything up to round 1's reward model (its PPO is redone)."""
DONE = ("world", "pretrain", "sft")
"""The copied steps, marked done in steps.json (round 1 then reads its rankings and RM back, runs PPO)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished `instructrl demo` output directory")
    p.add_argument("out", type=Path)
    p.add_argument("--scale", type=float, default=5.0, help="reward per unit of gold score")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="demo setting override")
    args = p.parse_args()

    from instructrl.demo.pipeline import DemoSettings, run_demo
    from instructrl.demo.summary import DemoSummary
    from instructrl.demo.world import World

    saved = json.loads((args.run / "settings.json").read_text())
    settings = DemoSettings.full(saved["seed"])
    if settings.as_json() != saved:
        sys.exit(f"{args.run}: not a full demo run with default settings")
    overrides = dict(kv.split("=", 1) for kv in args.set)
    settings = dataclasses.replace(
        settings, **{k: type(getattr(settings, k))(v) for k, v in overrides.items()}
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for step in COPIED:
        if not (args.out / step).exists():
            shutil.copytree(args.run / step, args.out / step)
    steps = json.loads((args.run / "steps.json").read_text())
    if not (args.out / "steps.json").exists():
        (args.out / "steps.json").write_text(json.dumps({k: steps[k] for k in DONE}, indent=2))
    world = World(settings.seed)

    def gold(prompts: list[str], responses: list[str]) -> list[float]:
        pairs = zip(prompts, responses, strict=True)
        return [args.scale * (world.gold_score(p, r) - 1.0) for p, r in pairs]

    summary = run_demo(
        args.out, settings, resume=True, log=lambda m: print(m, file=sys.stderr, flush=True), reward_fn=gold
    )
    baseline = DemoSummary.read(args.run).as_json()
    summary_doc = summary.as_json()
    print(f"\n{'':24} {'demo (RM reward)':>22} {'gold reward':>22}")
    for m in ("sft", "ppo", "ppo_ptx"):
        a, b = baseline["win_rate_vs_sft"][m], summary_doc["win_rate_vs_sft"][m]
        print(
            f"win rate vs SFT {m:8} {a['mean']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}]"
            f"{'':6} {b['mean']:.2f} [{b['ci_low']:.2f}, {b['ci_high']:.2f}]"
        )
    for m in ("sft", "ppo", "ppo_ptx"):
        print(f"gold score {m:13} {baseline['gold_score'][m]:22.3f} {summary_doc['gold_score'][m]:22.3f}")


if __name__ == "__main__":
    main()
