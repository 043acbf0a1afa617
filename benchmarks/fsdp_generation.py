"""How should PPO's rollouts generate from a policy sharded with FSDP2: the sharded model's own forward, which
gathers each block's parameters from every process at every new token, or the model gathered whole once
for the whole generation (`training/sharding.py: gathered`, what `sharding: fsdp` PPO does)?

    python benchmarks/fsdp_generation.py [--out benchmarks/results/fsdp_generation.json]

For each GPT-2 below (random weights, vocabulary 8192, fp32), under `torchrun --standalone --nproc-per-node 2`
(gloo on CPU): each process samples 8 rows of 48 new tokens after 32 prompt tokens with Hugging Face's
`generate` (KV cache, greedy, no early stop), the same call both ways — 'per block': the sharded forward,
with transformers' synced_gpus (a flag all-reduced per token, so processes run the same number of passes);
'gathered': inside `gathered(model)`, no collective but the one all-gather on entry. Reported: the median
seconds of 3 generations after a warm-up, and the parameter bytes a process holds during them: its shards,
plus the whole model when gathered, or per block the root's (embeddings, final norm) and one block's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    "gpt2-4x256": {"n_layer": 4, "n_embd": 256, "n_head": 4},
    "gpt2-12x768": {"n_layer": 12, "n_embd": 768, "n_head": 12},  # GPT-2 small's shape, smaller vocabulary
}
VOCAB, PROMPT, NEW, ROWS = 8192, 32, 48, 8


def child(model_name: str) -> None:
    """Run under torchrun: both ways of generating; rank 0 prints the numbers as JSON."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from instructrl.config import load_config
    from instructrl.sft.config import SFTConfig
    from instructrl.training.runtime import make_accelerator
    from instructrl.training.sharding import gathered, shard_model, transformer_blocks

    config = load_config(SFTConfig, None, ["sharding=fsdp", "mixed_precision=no"])
    accelerator = make_accelerator(config)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=PROMPT + NEW, **MODELS[model_name]))
    whole = sum(p.numel() * p.element_size() for p in model.parameters())
    blocks = transformer_blocks(model)
    block = sum(p.numel() * p.element_size() for p in blocks[0].parameters())
    # the root's own parameters (embeddings, final norm): FSDP2 keeps the root gathered after its forward
    root = whole - len(blocks) * block
    model = shard_model(model, accelerator).eval()
    shards = sum(p.to_local().numel() * p.element_size() for p in model.parameters())  # type: ignore[operator]
    ids = torch.randint(
        0, VOCAB, (ROWS, PROMPT), generator=torch.Generator().manual_seed(accelerator.process_index)
    )

    def sample(synced: bool) -> torch.Tensor:
        return model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            pad_token_id=0,
            synced_gpus=synced,
        )

    def timed(run) -> float:
        times = []
        for _ in range(4):  # a warm-up, then 3
            accelerator.wait_for_everyone()
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])

    def per_block() -> None:
        with torch.no_grad():
            sample(synced=True)

    def gathered_whole() -> None:
        with torch.no_grad(), gathered(model):
            sample(synced=False)

    with torch.no_grad():
        a = sample(synced=True)
        with gathered(model):
            b = sample(synced=False)
    result = {
        "model": model_name,
        "parameter_bytes_whole": whole,
        "processes": accelerator.num_processes,
        "per_block": {"generate_s": timed(per_block), "parameter_bytes_held": shards + root + block},
        "gathered": {"generate_s": timed(gathered_whole), "parameter_bytes_held": shards + whole},
        "same_tokens": bool(torch.equal(a, b)),
    }
    if accelerator.is_main_process:
        print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/fsdp_generation.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    results = []
    for name in MODELS:
        p = subprocess.run(
            [torchrun, "--standalone", "--nproc-per-node", "2", __file__, "--child", name],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))
        print(json.dumps(results[-1]), flush=True)
    record = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "setting": f"{ROWS} rows per process, {PROMPT} prompt + {NEW} new tokens, fp32, gloo, OMP_NUM_THREADS=1",
        "results": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
