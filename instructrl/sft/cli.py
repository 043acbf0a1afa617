"""`instructrl sft --model BASE_DIR --data demos.jsonl --out RUN_DIR`"""

from __future__ import annotations

import argparse

from instructrl.config import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    from instructrl.sft.config import SFTConfig

    p = sub.add_parser("sft", help="step 1: supervised fine-tuning on demonstrations")
    p.add_argument(
        "--model",
        required=True,
        help="base model: a directory (Hugging Face causal LM) or a Hub id ORG/NAME[@REVISION]",
    )
    p.add_argument("--data", required=True, nargs="+", help="demonstrations JSONL file(s) or directory")
    p.add_argument("--val-data", nargs="+", help="validation demonstrations (default: split off by user id)")
    p.add_argument("--out", required=True, help="run directory")
    add_config_args(p, SFTConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instructrl.sft.config import SFTConfig
    from instructrl.sft.train import run_sft
    from instructrl.training.cli import run_command

    return run_command(args, SFTConfig, run_sft, model_dir=args.model, data=args.data, val_data=args.val_data)
