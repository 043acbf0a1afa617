"""RM training steps with each prompt run once for its K responses (`share_prompt`, the default) against the
plain prompt+response rows, on a finished demo run's SFT model and comparisons.

    python benchmarks/rm_shared_prompt.py --run runs/demo/seed-0 [--steps 40] [--out results/rm_shared_prompt.json]

Both models start from the same weights and take the same batches (32 prompts, as the demo's RM), one step of
each in turn, the order swapped every step, so that another process on the machine slows both alike. A step
is rank_forward + backward + AdamW, timed; the first is left out (warm-up).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from instructrl.datasets.io import read_comparisons
from instructrl.datasets.tokenize import RankedExample, tokenize_comparisons
from instructrl.models.loading import load_reward_model, load_tokenizer, read_meta
from instructrl.models.scoring import RESPONSE_GROUPS, ScalarHead
from instructrl.training.losses import rank_forward


def token_counts(batches: list[list[RankedExample]]) -> dict[str, float]:
    """Per step: real tokens each way, and what padding makes of them (the passes' B x T)."""

    def padded(rows: list[list[int]]) -> int:
        return len(rows) * max(len(r) for r in rows)

    steps = len(batches)
    rows = [s for b in batches for e in b for s in e.sequences]
    prompt_once = sum(e.n_prompt for b in batches for e in b)
    prompt_k = sum(e.n_prompt * len(e.sequences) for b in batches for e in b)
    response = sum(len(s) - e.n_prompt for b in batches for e in b for s in e.sequences)
    plain_padded = sum(padded([s for e in b for s in e.sequences]) for b in batches)

    def grouped(
        lengths: list[int],
    ) -> int:  # scoring.RESPONSE_GROUPS passes by length, each as wide as its longest
        groups = torch.tensor(sorted(lengths)).tensor_split(min(RESPONSE_GROUPS, len(lengths)))
        return sum(len(g) * int(g.max()) for g in groups)

    shared_padded = sum(
        padded([e.sequences[0][: e.n_prompt] for e in b])
        + grouped([len(s) - e.n_prompt for e in b for s in e.sequences])
        for b in batches
    )
    return {
        "responses": len(rows) / steps,
        "prompt_tokens_k_copies": prompt_k / steps,
        "prompt_tokens_once": prompt_once / steps,
        "response_tokens": response / steps,
        "plain_padded_tokens": plain_padded / steps,
        "shared_padded_tokens": shared_padded / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a finished demo run (sft/final, data/)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    sft = args.run / "sft" / "final"
    tok = load_tokenizer(sft)
    template = read_meta(sft).get("prompt_template", "{prompt}\n")
    comparisons = read_comparisons(args.run / "data" / "comparisons_train.jsonl")
    examples, _ = tokenize_comparisons(comparisons, tok, template, 256, "skip")
    rng = random.Random(0)
    batches = [rng.sample(examples, args.batch_size) for _ in range(args.steps + 1)]

    models, optimizers = {}, {}
    for share in (False, True):
        torch.manual_seed(0)  # the same fresh scalar head
        models[share] = ScalarHead(load_reward_model(sft)).train()  # dropout off, as `instructrl rm` loads it
        optimizers[share] = torch.optim.AdamW(models[share].parameters(), lr=3e-4)
    times: dict[bool, list[float]] = {False: [], True: []}
    losses: dict[bool, list[float]] = {False: [], True: []}
    for i, batch in enumerate(batches):
        for share in (False, True) if i % 2 == 0 else (True, False):
            t = time.perf_counter()
            loss, _, _ = rank_forward(models[share], batch, tok.pad_token_id, torch.device("cpu"), share)
            (loss / len(batch)).backward()
            optimizers[share].step()
            optimizers[share].zero_grad()
            times[share].append(time.perf_counter() - t)
            losses[share].append(loss.item() / len(batch))

    plain, shared = times[False][1:], times[True][1:]
    result = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "tokens_per_step": token_counts(batches[1:]),
        "plain_s_per_step": statistics.mean(plain),
        "shared_s_per_step": statistics.mean(shared),
        "speedup_of_means": statistics.mean(plain) / statistics.mean(shared),
        "median_paired_speedup": statistics.median(a / b for a, b in zip(plain, shared, strict=True)),
        "max_loss_difference": max(abs(a - b) for a, b in zip(losses[False], losses[True], strict=True)),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
