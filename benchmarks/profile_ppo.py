"""Where one instructrl PPO iteration spends its time: repeat one iteration on fixed weights and report wall and
CPU time per phase, or an operator table from torch.profiler.

    python benchmarks/profile_ppo.py --policy SFT_DIR --reward RM_DIR --prompts prompts.jsonl \\
        [--precision bf16] [--rounds 3] [--profile]

The directories and prompts are those `ppo_speed.py --work DIR` leaves in DIR (sft-policy/final, rm/final,
prompts.jsonl). Every round starts from the same weights and seeds, so rounds (and code versions) do the same
work; CPU time (time.process_time) is the figure to compare on a machine that others share. The phases are the
ones every PPO iteration logs (`time/*` in metrics.jsonl): nothing of instructrl is patched.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True)
    p.add_argument("--reward", required=True)
    p.add_argument("--prompts", required=True, help="prompts JSONL")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--rounds", type=int, default=3, help="the first one is warm-up")
    p.add_argument("--rollout-batch-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument(
        "--profile", action="store_true", help="print torch.profiler's operator table of one round"
    )
    p.add_argument(
        "--full-length",
        action="store_true",
        help="never stop at EOS: every response is max_new_tokens long, so code versions do the same work",
    )
    p.add_argument(
        "--attention",
        choices=["default", "sdpa", "sdpa-math", "eager"],
        default="default",
        help="default: what instructrl picks; or Hugging Face's SDPA, SDPA on its math backend only, eager",
    )
    args = p.parse_args()

    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.setup import setup_ppo
    from instructrl.ppo.train import ppo_iteration

    config = PPOConfig(
        rollout_batch_size=args.rollout_batch_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_new_tokens=args.max_new_tokens,
        mixed_precision="no" if args.precision == "fp32" else args.precision,
        kl_coef=0.02,
        max_grad_norm=1e9,
        reward_norm=False,
        eval_prompts=0,
    )
    s = setup_ppo(
        policy_dir=args.policy,
        reward_dir=args.reward,
        prompts=args.prompts,
        out=tempfile.mkdtemp(prefix="profile-ppo-"),
        config=config,
    )
    if args.full_length:
        from ppo_speed import NoEOS  # the benchmark's own; this script's folder is on sys.path

        s.tokenizer = NoEOS(s.tokenizer)
    attention = {"sdpa": "sdpa", "sdpa-math": "sdpa", "eager": "eager"}.get(args.attention)
    models = (
        s.unwrapped_policy,
        s.ref_policy,
        s.reward_model,
        s.accelerator.unwrap_model(s.value_model).model,
    )
    if attention is not None:
        for m in models:
            m.set_attn_implementation(attention)
    trained = (s.policy, s.value_model)
    start = [{k: v.clone() for k, v in m.state_dict().items()} for m in trained]
    optimizer_start = s.optimizer.state_dict()

    rows: list[dict[str, float]] = []
    for rnd in range(args.rounds):
        for m, weights in zip(trained, start, strict=True):
            m.load_state_dict(weights)
        s.optimizer.load_state_dict(optimizer_start)
        last = rnd == args.rounds - 1
        profiler = torch.profiler.profile() if args.profile and last else contextlib.nullcontext()
        backend = contextlib.nullcontext()
        if args.attention == "sdpa-math":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backend = sdpa_kernel(SDPBackend.MATH)
        with profiler, backend:
            metrics, r, _ = ppo_iteration(s, 0, 0)  # iteration 0 every round: the same prompts and seeds
        rows.append({k.removeprefix("time/"): v for k, v in metrics.items() if k.startswith("time/")})
        print(
            f"round {rnd + 1}: response width {r.response.shape[1]}, attention {attention or 'default'}, "
            + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items() if not k.endswith("_cpu_s")),
            flush=True,
        )
        if args.profile and last:
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))

    print(f"median of rounds 2..{args.rounds} ({args.precision}, {torch.get_num_threads()} threads):")
    for phase in ("generate", "score", "rollout", "train", "iteration"):
        wall = statistics.median(row[f"{phase}_s"] for row in rows[1:])
        cpu = statistics.median(row[f"{phase}_cpu_s"] for row in rows[1:])
        print(f"  {phase:12s} wall {wall:6.2f}s   cpu {cpu:6.2f}s")


if __name__ == "__main__":
    main()
