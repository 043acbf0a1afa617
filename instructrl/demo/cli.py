"""`instructrl demo [--quick | --config demo.yaml] [--out DIR] [--seed N] [--rounds R] [--resume]`"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole InstructGPT story on a small built-in world, on a CPU (19.5 min on 2 AVX2-only cores in "
        "fp32, 19.6 min on 2 AMX cores in bf16; --quick: 76 s and 68 s)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smaller world and models (76 s on 2 AVX2-only cores, 68 s on 2 AMX)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="the demo's settings from YAML: `preset: full | quick`, then any key of instructrl/demo/demo.yaml "
        "(the full demo's, written out) over it",
    )
    p.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument(
        "--seed", type=int, help="seed of the world, the people and the training (default: the config's, 0)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds of ChatGPT's loop (rank the PPO policy's answers, retrain the RM, continue PPO); "
        "default 2; 1: InstructGPT's single pass",
    )
    p.add_argument(
        "--pretrain",
        action="store_true",
        help="pretrain the base model from scratch even where one is shipped for the seed (+6 min on 2 AVX2 cores)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import shlex
    import sys

    from instructrl.demo.pipeline import run_demo
    from instructrl.demo.settings import DemoSettings, load_demo_settings
    from instructrl.errors import UserError

    if args.config and args.quick:
        raise UserError("--quick and --config: choose one (`preset: quick` in the config file is --quick)")
    if args.config:
        settings = load_demo_settings(args.config)
    else:
        settings = DemoSettings.quick() if args.quick else DemoSettings.full()
    if args.seed is not None:
        settings = dataclasses.replace(settings, seed=args.seed)
    if args.rounds is not None:
        if args.rounds < 1:
            raise UserError(f"--rounds {args.rounds}: must be 1 or more")
        settings = dataclasses.replace(settings, rounds=args.rounds)
    if args.pretrain:
        settings = dataclasses.replace(settings, shipped_base=False)
    again = ["instructrl demo", *(["--quick"] if args.quick else [])]
    again += [f"--config {shlex.quote(args.config)}"] if args.config else []
    again += [f"--out {shlex.quote(args.out)}"]
    again += [f"--seed {args.seed}"] if args.seed is not None else []
    again += [f"--rounds {args.rounds}"] if args.rounds is not None else []
    again += ["--pretrain"] if args.pretrain else []
    summary = run_demo(
        args.out,
        settings,
        resume=args.resume,
        log=lambda m: print(m, file=sys.stderr, flush=True),
        resume_command=" ".join([*again, "--resume"]),
    )
    print()
    for f in summary.findings:
        print(f"  [{'x' if f.holds else ' '}] {f.claim}: {f.numbers}")
    print(f"\nreport: {args.out}/report.html   numbers: {args.out}/summary.json")
    return 0
