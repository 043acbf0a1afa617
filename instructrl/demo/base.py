"""The demo's base model, shipped for the default seed so that a first `instructrl demo` skips pretraining.

Pretraining the world's 0.9M-parameter GPT is the demo's longest step when run from scratch (345 s of a
2-core AVX2-only CPU in fp32; `--quick`'s, 35 s). `base/seed-0/` (and `base/seed-0-quick/`) holds the weights
that step produced, with `base.json`: what
went into the training (the pretraining config, and sha256 of the initial weights, the tokenizer and the
corpus files the world step writes), the training's summary, and where it ran. `shipped_base()` hands the
weights to the demo only when the run's inputs are exactly those; any change to the world, the tokenizer,
the model's shape or the pretraining config falls back to training, with the reason in the log.

`python -m instructrl.demo.base RUN_DIR` writes `base/seed-N/` from a demo run that pretrained
(`instructrl demo --pretrain`); `benchmarks/demo_base.py` pretrains again from scratch and checks that the
weights are the shipped ones, bit for bit (fp32 on CPU is deterministic for a given thread count and CPU kind).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from instructrl.demo.settings import DemoSettings, pretrain_config
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.sft.summary import PretrainSummary

SHIPPED = Path(__file__).parent / "base"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
INPUT_FILES = (
    "world/init/model.safetensors",
    "world/init/tokenizer.json",
    "data/pretrain.jsonl",
    "data/pretrain_heldout.jsonl",
)
"""Files of a demo run that pretraining reads, by path under the run's directory."""
RUN_ONLY = ("mixed_precision", "sharding", "checkpoint_every", "log_every", "report_to")
"""Pretraining config keys that do not change the trained weights (mixed_precision does in bf16; the
shipped weights are fp32's, and are used whatever the run's precision: see shipped_base; sharding changes how
processes hold the weights, not what they learn: equal within 1e-5 in fp32, tests/integration/test_fsdp.py)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pretraining_inputs(run: Path, config: dict[str, Any], block_size: int) -> dict[str, Any]:
    """Everything the trained weights depend on: the config (less RUN_ONLY keys) and the input files' sha256."""
    return {
        "config": {k: v for k, v in sorted(config.items()) if k not in RUN_ONLY},
        "block_size": block_size,
        "sha256": {name: sha256(run / name) for name in INPUT_FILES},
    }


def folders(seed: int) -> list[Path]:
    """Where the bases of `seed` ship: the full demo's, then `--quick`'s."""
    return [SHIPPED / f"seed-{seed}", SHIPPED / f"seed-{seed}-quick"]


def shipped_base(seed: int, inputs: dict[str, Any]) -> tuple[Path | None, str]:
    """A shipped base of `seed` trained on exactly `inputs`; else None and why not (against the full demo's)."""
    shipped = [f for f in folders(seed) if (f / "base.json").exists()]
    if not shipped:
        return None, f"no base model is shipped for seed {seed}"
    reasons = []
    for folder in shipped:
        trained_on = json.loads((folder / "base.json").read_text())["inputs"]
        differ = sorted(
            [
                f"config.{k}"
                for k in {*inputs["config"], *trained_on["config"]}
                if inputs["config"].get(k) != trained_on["config"].get(k)
            ]
            + [name for name in INPUT_FILES if inputs["sha256"][name] != trained_on["sha256"].get(name)]
            + (["block_size"] if inputs["block_size"] != trained_on["block_size"] else [])
        )
        if not differ:
            return folder, ""
        reasons.append(f"{folder.name}: {', '.join(differ)}")
    return None, f"the shipped bases of seed {seed} were trained on other inputs ({reasons[0]})"


def install(folder: Path, final: Path, base_model: Path) -> dict[str, Any]:
    """Copy a shipped base into a run's pretrain/final; returns the summary its training wrote."""
    meta = json.loads((folder / "base.json").read_text())
    final.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copyfile(folder / name, final / name)
    notes = CheckpointMeta.parse(meta["instructrl"], f"{folder / 'base.json'}: instructrl")
    notes.model_copy(update={"base_model": str(base_model), "shipped": str(folder)}).write(final)
    return {**meta["summary"], "shipped": True, "trained_on": meta["trained_on"]}


def write(run: Path, config: dict[str, Any], block_size: int, seed: int, quick: bool) -> Path:
    """base/seed-N/ (or seed-N-quick/) from a demo run that pretrained."""
    import platform

    import torch

    final, folder = run / "pretrain" / "final", folders(seed)[quick]
    summary = PretrainSummary.read(run / "pretrain")
    folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copyfile(final / name, folder / name)
    meta = {
        "inputs": pretraining_inputs(run, config, block_size),
        "weights_sha256": sha256(final / "model.safetensors"),
        "summary": summary.as_dict(),
        "instructrl": {k: v for k, v in CheckpointMeta.read(final).as_dict().items() if k != "base_model"},
        "trained_on": {
            "cpu": _cpu_name() or platform.machine(),
            "torch": torch.__version__,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "mixed_precision": summary.mixed_precision,
        },
    }
    (folder / "base.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(
            "usage: python -m instructrl.demo.base RUN_DIR   (a demo run, full or --quick, made with --pretrain)",
            file=sys.stderr,
        )
        return 2
    run = Path(argv[0])
    saved = json.loads((run / "settings.json").read_text())
    for quick, settings in enumerate((DemoSettings.full(saved["seed"]), DemoSettings.quick(saved["seed"]))):
        if all(
            saved.get(k) == v for k, v in settings.as_json().items() if k not in ("shipped_base", "rounds")
        ):
            config = pretrain_config(settings).model_dump()
            print(write(run, config, settings.block_size, settings.seed, bool(quick)))
            return 0
    print(f"{run}: neither a full nor a --quick demo run (settings.json differs from both)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
