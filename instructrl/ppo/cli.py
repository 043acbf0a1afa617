"""`instructrl ppo --policy SFT_DIR --reward RM_DIR --prompts prompts.jsonl --out RUN_DIR`

A later round of ChatGPT's loop continues from the last policy and keeps the KL to the SFT model:
`instructrl ppo --policy PREV_PPO/final --reference SFT_DIR --reward NEW_RM/final ...`"""

from __future__ import annotations

import argparse

from instructrl.config import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    from instructrl.ppo.config import PPOConfig

    p = sub.add_parser("ppo", help="step 3: PPO / PPO-ptx against the reward model")
    p.add_argument(
        "--policy",
        required=True,
        help="the policy to start from, a directory or a Hub id ORG/NAME[@REVISION]: the SFT model (also the "
        "frozen reference unless --reference), or an earlier round's PPO policy",
    )
    p.add_argument(
        "--reference",
        help="the frozen model the KL penalty is measured to (default: --policy); give the SFT model when "
        "--policy is an earlier round's PPO policy",
    )
    p.add_argument(
        "--reward",
        required=True,
        help="reward model directory or Hub id ORG/NAME[@REVISION] (also the value model's start, unless "
        "--value-model)",
    )
    p.add_argument(
        "--value-model",
        help="the reward model the value model starts from, when not --reward's (e.g. a smaller one, whose "
        "updates cost less); its head is put on the reward's scale by its own scores of the SFT samples",
    )
    p.add_argument("--prompts", required=True, nargs="+", help="prompts JSONL file(s) or directory")
    p.add_argument(
        "--val-prompts", nargs="+", help="held-out prompts to score before/after (default: split off)"
    )
    p.add_argument(
        "--pretrain-data",
        nargs="+",
        help="pretraining text JSONL ({'text': ...}): PPO-ptx with ptx_coef > 0, "
        "and the pretraining loss before/after in any case",
    )
    p.add_argument("--out", required=True, help="run directory")
    add_config_args(p, PPOConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.train import run_ppo
    from instructrl.training.cli import run_command

    return run_command(
        args,
        PPOConfig,
        run_ppo,
        policy_dir=args.policy,
        reward_dir=args.reward,
        reference_dir=args.reference,
        value_dir=args.value_model,
        prompts=args.prompts,
        val_prompts=args.val_prompts,
        pretrain_data=args.pretrain_data,
    )
