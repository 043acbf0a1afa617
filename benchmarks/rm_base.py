"""A larger model for the reward model, built as the demo builds its policy: the same tokenizer, pretrained on
the same corpus with the demo's recipe, SFT'd on the same demonstrations (issue 22's lever 1; rm_levers.py
`--rm-init OUT/sft/final` trains an RM from it).

    python benchmarks/rm_base.py RUN OUT [--layers 6] [--width 256] [--heads 8]

RUN is a finished full `instructrl demo` run. Writes OUT/init, OUT/pretrain and OUT/sft (each resumable) and
prints each stage's summary. 6 × 256 (4.7M parameters): pretraining 901 s and SFT 48 s on 2 AMX cores in bf16
(shared with another run for part of it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    args = p.parse_args()

    from instructrl.demo.settings import DemoSettings, pretrain_config, sft_config
    from instructrl.models.loading import load_tokenizer
    from instructrl.models.tiny import build_gpt2, save
    from instructrl.sft.train import run_pretrain, run_sft

    settings = DemoSettings.full(json.loads((args.run / "settings.json").read_text())["seed"])
    init = args.out / "init"
    if not init.exists():
        tokenizer = load_tokenizer(args.run / "world" / "init")
        model = build_gpt2(
            tokenizer, args.layers, args.width, args.heads, settings.context, seed=settings.seed
        )
        save(model, tokenizer, init)

    def texts(name: str) -> list[str]:
        lines = (args.run / "data" / name).read_text().splitlines()
        return [json.loads(line)["text"] for line in lines if line.strip()]

    pretrained = run_pretrain(
        model_dir=init,
        texts=texts("pretrain.jsonl"),
        val_texts=texts("pretrain_heldout.jsonl"),
        out=args.out / "pretrain",
        config=pretrain_config(settings),
        block_size=settings.block_size,
        resume=(args.out / "pretrain" / "config.yaml").exists(),
    )
    print({k: v for k, v in pretrained.items() if not isinstance(v, dict | list)})
    tuned = run_sft(
        model_dir=args.out / "pretrain" / "final",
        data=args.run / "data" / "demonstrations_train.jsonl",
        val_data=args.run / "data" / "demonstrations_validation.jsonl",
        out=args.out / "sft",
        config=sft_config(settings),
        resume=(args.out / "sft" / "config.yaml").exists(),
    )
    print({k: v for k, v in tuned.items() if not isinstance(v, dict | list)})


if __name__ == "__main__":
    main()
