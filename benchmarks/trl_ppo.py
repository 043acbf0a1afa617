"""TRL's PPO (`trl.experimental.ppo.PPOTrainer`, trl==1.12.0) on the benchmark's model, timed per phase.

Runs in its own environment (.venv-trl, see benchmarks/README.md); `ppo_speed.py` calls it and reads
the JSON it prints on stdout. It imports nothing from instructrl.

Batch sizes. TRL's rollout batch is per_device_train_batch_size * gradient_accumulation_steps (* processes)
and it splits it into num_mini_batches; but it steps the optimizer only every gradient_accumulation_steps
micro-batches, whatever the minibatch size. So per_device_train_batch_size=64, gradient_accumulation_steps=1,
num_mini_batches=4 is the one setting that gives 64 episodes, 4 minibatches of 16, one optimizer step per
minibatch (16 steps per iteration), as instructrl does.

Responses are max_new_tokens long (TRL's default stop_token=None) unless --stop-at-eos.

Timing. TRL's `train()` is one long function; the phases are cut at calls it makes through module globals
(wall and CPU time of this process at each cut):
  generate = time inside `batch_generation` (HF generate of the whole rollout batch, with its logits)
  score    = end of generation -> first training forward of the iteration (log-probs from the generation
             logits, reference / value / reward forward passes, rewards, GAE, whitening)
  train    = first training forward -> the iteration's `self.log` call (4 epochs x 4 minibatches)
  iteration = one `on_step_end` to the next (also TRL's gc.collect/empty_cache and the data loader)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="SFT model directory (policy and reference)")
    p.add_argument("--reward", required=True, help="reward model directory (also the value model's start)")
    p.add_argument("--prompts", required=True, help="JSON file: a list of prompt token-id lists")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--rollout-batch-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16, help="episodes per PPO minibatch")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--kl-coef", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--stop-at-eos", action="store_true", help="stop_token='eos' (default: None, TRL's default)"
    )
    args = p.parse_args()

    # TRL's PPOTrainer builds its own Accelerator(), which takes mixed precision from this variable only.
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if args.precision == "bf16" else "no"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    transformers.utils.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    with open(args.prompts) as f:
        prompts = json.load(f)
    dataset = Dataset.from_dict({"input_ids": prompts})
    policy = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        args.reward, num_labels=1, dtype=torch.float32
    )
    value_model = AutoModelForSequenceClassification.from_pretrained(
        args.reward, num_labels=1, dtype=torch.float32
    )

    out_dir = tempfile.mkdtemp(prefix="trl-ppo-")
    config = PPOConfig(
        output_dir=out_dir,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        seed=args.seed,
        use_cpu=True,
        bf16=args.precision == "bf16",
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        total_episodes=args.iterations * args.rollout_batch_size,
        per_device_train_batch_size=args.rollout_batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.rollout_batch_size // args.batch_size,
        num_ppo_epochs=args.epochs,
        local_rollout_forward_batch_size=args.rollout_batch_size,
        response_length=args.max_new_tokens,
        temperature=args.temperature,
        stop_token="eos" if args.stop_at_eos else None,
        missing_eos_penalty=None,
        kl_coef=args.kl_coef,
        num_sample_generations=0,
        dataloader_num_workers=0,
    )

    # --- timing hooks ---------------------------------------------------------------------------------------
    marks: list[dict[str, float]] = []
    logs: list[dict[str, float]] = []
    real_batch_generation, real_forward = ppo_module.batch_generation, ppo_module.forward

    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def batch_generation(model, queries, *a, **kw):
        mark = {"gen_start": now()}
        marks.append(mark)
        query_responses, logits = real_batch_generation(model, queries, *a, **kw)
        mark["gen_end"] = now()
        # the padded response width R every later forward pass runs on, and the mean length up to EOS
        response = query_responses[:, queries.shape[1] :]  # (B, R)
        is_eos = response == tokenizer.eos_token_id
        length = torch.where(is_eos.any(-1), is_eos.float().argmax(-1) + 1, response.shape[1])
        if not args.stop_at_eos:  # EOS is an ordinary token then
            length = torch.full_like(length, response.shape[1])
        mark["width"], mark["length"] = response.shape[1], length.float().mean().item()
        return query_responses, logits

    def forward(model, *a, **kw):
        if model is trainer.model and "train_start" not in marks[-1]:
            marks[-1]["train_start"] = now()
        return real_forward(model, *a, **kw)

    ppo_module.batch_generation, ppo_module.forward = batch_generation, forward

    class Timer(TrainerCallback):
        def on_step_end(self, args_, state, control, **kw):
            marks[-1]["step_end"] = now()

    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=dataset,
        eval_dataset=dataset.select(range(8)),
        callbacks=[Timer()],
    )
    real_log = trainer.log

    def log(metrics, *a, **kw):
        if marks and "log" not in marks[-1]:
            marks[-1]["log"] = now()
            logs.append(dict(metrics))
        return real_log(metrics, *a, **kw)

    trainer.log = log
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0

    iterations = []
    for i, (m, metrics) in enumerate(zip(marks, logs, strict=True)):
        start = marks[i - 1]["step_end"] if i else m["gen_start"]
        spans = {
            "generate_s": (m["gen_start"], m["gen_end"]),
            "score_s": (m["gen_end"], m["train_start"]),
            "train_s": (m["train_start"], m["log"]),
            "iteration_s": (start, m["step_end"]),
        }
        iterations.append(
            {
                "iteration": i + 1,
                **{k: b[0] - a[0] for k, (a, b) in spans.items()},
                "cpu": {k: b[1] - a[1] for k, (a, b) in spans.items()},
                "width": m["width"],
                "length": m["length"],
                "scores": metrics["objective/scores"],
                "kl": metrics["objective/kl"],
                "response_eos_tokens": metrics["val/num_eos_tokens"],
                "entropy": metrics["policy/entropy_avg"],
            }
        )
    report = {
        "framework": "trl",
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "precision": args.precision,
        "mixed_precision_used": trainer.accelerator.mixed_precision,
        "gradient_checkpointing": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
        "torch_threads": torch.get_num_threads(),
        "optimizer_steps_per_iteration": args.epochs * config.num_mini_batches,
        "iterations": iterations,
        "wall_s": wall,
    }
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
