"""`instructrl pipeline`: the whole method from one YAML file, resumable step by step (pipeline/run.py).

  instructrl pipeline --config examples/pipeline.yaml

`instructrl round`: one round of the loop — the reward model retrained on every round's rankings, PPO
continued from the last policy with its KL to SFT — so that a team's loop is: label in the app -> export ->
one command -> label again.

  instructrl round --sft SFT_DIR --data round1.jsonl --prompts prompts.jsonl --out rounds/1
  instructrl round --previous rounds/1 --data round2.jsonl --prompts prompts.jsonl --out rounds/2
"""

from __future__ import annotations

import argparse
import shlex


def register(sub: argparse._SubParsersAction) -> None:
    register_pipeline(sub)
    register_round(sub)


def register_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="SFT -> R rounds of RM and PPO -> evaluation -> report from one YAML; rerun to resume",
        description="The whole method on a team's labels, step by step; rerunning the same command resumes: "
        "finished steps are skipped, an interrupted stage continues from its checkpoint. "
        "See examples/pipeline.yaml and --help-config.",
    )
    p.add_argument("--config", required=True, help="the pipeline's YAML (examples/pipeline.yaml)")
    p.add_argument("--out", help="the pipeline's directory (overrides the config's 'out')")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one key, e.g. --set sft.epochs=2 --set ppo.iterations=50",
    )  # fmt: skip
    p.add_argument(
        "--help-config", action=_DescribePipeline, nargs=0, help="list every key of the config, then exit"
    )
    p.set_defaults(func=run_pipeline_command)


class _DescribePipeline(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from instructrl.pipeline.config import describe_pipeline

        print(describe_pipeline())
        parser.exit(0)


def run_pipeline_command(args: argparse.Namespace) -> int:
    from instructrl.pipeline.config import load_pipeline_config
    from instructrl.pipeline.run import run_pipeline
    from instructrl.training.cli import stopped_exit

    overrides = [*args.overrides, *([f"out={args.out}"] if args.out else [])]
    config = load_pipeline_config(args.config, overrides)
    again = ["instructrl", "pipeline", "--config", args.config, *(["--out", args.out] if args.out else [])]
    again += [a for o in args.overrides for a in ("--set", o)]
    with stopped_exit():
        report = run_pipeline(config, resume_command=shlex.join(again))
    print(f"wrote {config.out / 'report.md'} ({len(report.rounds)} rounds)")
    return 0


def register_round(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "round",
        help="one round of the loop: RM retrained on every round's rankings, PPO continued (ChatGPT's loop)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--sft", help="round 1: the SFT model (the RM's start and PPO's KL reference)")
    start.add_argument("--previous", metavar="ROUND_DIR", help="the previous round's --out")
    p.add_argument("--data", required=True, nargs="+", help="this round's new comparisons (label export)")
    p.add_argument(
        "--val-data", nargs="+", help="this round's held-out comparisons (RM accuracy before/after)"
    )
    p.add_argument("--prompts", required=True, nargs="+", help="PPO's training prompts JSONL")
    p.add_argument("--val-prompts", nargs="+", help="PPO's held-out prompts (default: split off)")
    p.add_argument("--norm-data", nargs="+", help="demonstrations whose mean reward is set to 0")
    p.add_argument("--pretrain-data", nargs="+", help="pretraining text for PPO-ptx (ppo.ptx_coef > 0)")
    p.add_argument("--eval-prompts", nargs="+", help="held-out prompts for A/B answers (with answers=N)")
    p.add_argument("--out", required=True, help="the round's directory")
    p.add_argument("--config", help="YAML with 'rm:' and 'ppo:' sections of stage keys, and 'answers: N'")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
        help="override one key, e.g. --set rm.lr=3e-6 --set ppo.iterations=50",
    )  # fmt: skip
    p.add_argument(
        "--db",
        metavar="URL",
        help="the labeling app's database: start the next round's generation job there when this round is done",
    )
    p.add_argument("--next-k", type=int, default=4, help="with --db: candidates per prompt (default 4)")
    p.add_argument("--next-limit", type=int, default=100, help="with --db: prompts to rank (default 100)")
    p.add_argument(
        "--next-split", default="train", choices=["train", "validation", "test", "all"], help="with --db"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted round in --out")
    p.add_argument(
        "--help-config", action=_DescribeRound, nargs=0, help="list every key of the round config, then exit"
    )
    p.set_defaults(func=run)


class _DescribeRound(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from instructrl.pipeline.config import describe

        print(describe())
        parser.exit(0)


def run(args: argparse.Namespace) -> int:
    import json

    from instructrl.datasets.io import read_prompts
    from instructrl.pipeline.config import load_round_config
    from instructrl.pipeline.round import run_round
    from instructrl.training.cli import stopped_exit

    config = load_round_config(args.config, args.overrides)
    eval_prompts = [r.conversation for r in read_prompts(args.eval_prompts)] if args.eval_prompts else None
    with stopped_exit():
        record = run_round(
            out=args.out,
            data=args.data,
            prompts=args.prompts,
            config=config,
            sft=args.sft,
            previous=args.previous,
            val_data=args.val_data,
            val_prompts=args.val_prompts,
            norm_data=args.norm_data,
            pretrain_data=args.pretrain_data,
            eval_prompts=eval_prompts,
            next_job=None
            if args.db is None
            else {
                "database_url": args.db,
                "k": args.next_k,
                "limit": args.next_limit,
                "split": args.next_split,
            },
            resume=args.resume,
        )
    print(json.dumps(record.model_dump(), indent=2))
    return 0
