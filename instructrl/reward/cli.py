"""`instructrl rm --model SFT_DIR --data comparisons.jsonl --out RUN_DIR`

A later round of ChatGPT's loop continues the last reward model on every round's comparisons:
`instructrl rm --init PREV_RM/final --data round1.jsonl round2.jsonl --out RUN_DIR [--set latest_round_weight=2]`"""

from __future__ import annotations

import argparse

from instructrl.config import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    from instructrl.reward.config import RMConfig

    p = sub.add_parser("rm", help="step 2: train a reward model on rankings")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--model",
        help="SFT model directory or Hub id ORG/NAME[@REVISION] (its unembedding becomes a scalar head)",
    )
    start.add_argument(
        "--init", metavar="RM_DIR", help="an earlier round's reward model to continue training"
    )
    p.add_argument("--data", required=True, nargs="+", help="comparisons JSONL file(s) or directory")
    p.add_argument("--val-data", nargs="+", help="validation comparisons (default: split off by user id)")
    p.add_argument(
        "--norm-data", nargs="+", help="demonstrations whose mean reward is set to 0 after training"
    )
    p.add_argument("--out", required=True, help="run directory")
    add_config_args(p, RMConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instructrl.reward.config import RMConfig
    from instructrl.reward.train import run_rm
    from instructrl.training.cli import run_command

    return run_command(
        args,
        RMConfig,
        run_rm,
        model_dir=args.model,
        init_dir=args.init,
        data=args.data,
        val_data=args.val_data,
        norm_data=args.norm_data,
    )
