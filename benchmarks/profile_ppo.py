"""Where one instructrl PPO iteration spends its time: repeat the iteration's three phases on fixed weights
and report wall and CPU time per phase, or an operator table from torch.profiler.

    python benchmarks/profile_ppo.py --policy SFT_DIR --reward RM_DIR --prompts prompt_ids.json \\
        [--precision bf16] [--rounds 3] [--profile]

The directories and prompt ids are those `ppo_speed.py --work DIR` leaves in DIR (sft-policy/final, rm/final,
prompt_ids.json). Every round starts from the same weights and seeds, so rounds (and code versions) do the
same work; CPU time (time.process_time) is the figure to compare on a machine that others share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch


class Clock:
    def __init__(self):
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        w, c = time.perf_counter(), time.process_time()
        yield
        self.wall.setdefault(name, []).append(time.perf_counter() - w)
        self.cpu.setdefault(name, []).append(time.process_time() - c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True)
    p.add_argument("--reward", required=True)
    p.add_argument("--prompts", required=True, help="JSON list of prompt token-id lists")
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

    from instructrl.models.generation import mix_seed
    from instructrl.models.loading import load_causal_lm, load_reward_model, load_tokenizer
    from instructrl.models.scoring import ScalarHead
    from instructrl.ppo.config import PPOConfig
    from instructrl.ppo.core import gae, kl_penalised_rewards, masked_whiten
    from instructrl.ppo.train import ppo_update, sample_and_score
    from instructrl.training.optim import make_optimizer
    from instructrl.training.runtime import make_accelerator

    config = PPOConfig(
        rollout_batch_size=args.rollout_batch_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_new_tokens=args.max_new_tokens,
        mixed_precision="no" if args.precision == "fp32" else args.precision,
    )
    accelerator = make_accelerator(config)
    tokenizer = load_tokenizer(args.policy)
    if args.full_length:
        from ppo_speed import NoEOS  # the benchmark's own; this script's folder is on sys.path

        tokenizer = NoEOS(tokenizer)
    with open(args.prompts) as f:
        queries = json.load(f)[: config.rollout_batch_size]
    policy = load_causal_lm(args.policy, dropout=False)
    ref_policy = load_causal_lm(args.policy, dropout=False).eval().requires_grad_(False)
    reward_model = load_reward_model(args.reward).eval().requires_grad_(False)
    value_model = ScalarHead(load_reward_model(args.reward))
    steps = config.epochs * config.minibatches
    policy_opt, policy_sched = make_optimizer(policy, config, steps)
    value_opt, value_sched = make_optimizer(value_model, config, steps)
    policy, value_model, policy_opt, value_opt = accelerator.prepare(
        policy, value_model, policy_opt, value_opt
    )
    attention = {"sdpa": "sdpa", "sdpa-math": "sdpa", "eager": "eager"}.get(args.attention)
    if args.attention == "default":
        with contextlib.suppress(ImportError):  # instructrl versions before the choice: SDPA
            from instructrl.training.runtime import attention_implementation

            attention = attention_implementation(accelerator)
    for m in (policy, ref_policy, reward_model, accelerator.unwrap_model(value_model).model):
        m.set_attn_implementation(attention or "sdpa")
    start = {id(m): {k: v.clone() for k, v in m.state_dict().items()} for m in (policy, value_model)}

    clock = Clock()
    for rnd in range(args.rounds):
        for m in (policy, value_model):
            m.load_state_dict(start[id(m)])
        profiler = (
            torch.profiler.profile() if args.profile and rnd == args.rounds - 1 else contextlib.nullcontext()
        )
        backend = contextlib.nullcontext()
        if args.attention == "sdpa-math":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backend = sdpa_kernel(SDPBackend.MATH)
        with profiler, backend:
            timings: dict[str, float] = {}
            with clock("rollout (generate + score)"):
                r = sample_and_score(
                    policy=accelerator.unwrap_model(policy),
                    ref_policy=ref_policy,
                    value_model=value_model,
                    reward_model=reward_model,
                    queries=queries,
                    seeds=[mix_seed(config.seed, 0, j) for j in range(len(queries))],
                    episodes=list(range(len(queries))),
                    tokenizer=tokenizer,
                    config=config,
                    accelerator=accelerator,
                    timings=timings,
                )
            for k, v in timings.items():
                clock.wall.setdefault(k, []).append(v)
            with clock("train"):
                mask = r.mask.float()
                rewards, _, _ = kl_penalised_rewards(r.scores, r.logprobs, r.ref_logprobs, mask, 0.02)
                advantages, returns = gae(rewards, r.values, mask, config.gamma, config.lam)
                advantages = masked_whiten(advantages, mask)
                policy.train()
                value_model.train()
                for epoch in range(config.epochs):
                    perm = torch.randperm(
                        config.rollout_batch_size, generator=torch.Generator().manual_seed(epoch)
                    )
                    for k in range(config.minibatches):
                        ppo_update(
                            r,
                            advantages,
                            returns,
                            perm[k * config.batch_size : (k + 1) * config.batch_size].tolist(),
                            [],
                            policy=policy,
                            value_model=value_model,
                            optimizers=(policy_opt, value_opt),
                            schedulers=(policy_sched, value_sched),
                            config=config,
                            accelerator=accelerator,
                            pad_id=tokenizer.pad_token_id,
                        )
        print(
            f"round {rnd + 1}: response length {r.response.shape[1]}, attention {attention or 'sdpa'}, "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in clock.wall.items()),
            flush=True,
        )
        if args.profile and rnd == args.rounds - 1:
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))

    print(f"median of rounds 2..{args.rounds} ({args.precision}, {torch.get_num_threads()} threads):")
    for k in clock.wall:
        w = statistics.median(clock.wall[k][1:])
        c = statistics.median(clock.cpu[k][1:]) if k in clock.cpu else float("nan")
        print(f"  {k:28s} wall {w:6.2f}s   cpu {c:6.2f}s")


if __name__ == "__main__":
    main()
