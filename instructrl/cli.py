"""The `instructrl` command line: one subcommand per stage.

Each stage module exposes `register(subparsers)` and keeps heavy imports inside its run function,
so `instructrl --help` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from instructrl import __version__
from instructrl.errors import UserError

COMMAND_MODULES = [
    "instructrl.datasets.cli",  # import
    "instructrl.sft.cli",  # sft
    "instructrl.reward.cli",  # rm
    "instructrl.ppo.cli",  # ppo
    "instructrl.pipeline.cli",  # pipeline, round
    "instructrl.evaluation.cli",  # eval
    "instructrl.labeling.cli",  # label
    "instructrl.demo.cli",  # demo
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructrl",
        description="InstructGPT-style RLHF: SFT -> reward model -> PPO / PPO-ptx on Hugging Face causal LMs.",
    )
    parser.add_argument("--version", action="version", version=f"instructrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except UserError as e:
        print(f"instructrl {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"instructrl {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
