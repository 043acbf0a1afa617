"""A stage's output directory: config.yaml, metrics.jsonl, summary.json, resumable checkpoint/, final/.

Everything is written atomically (a temp file or folder, then a rename), so a killed process leaves either
the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator

from instructrl.config import StageConfig, dump_config
from instructrl.datasets.io import atomic_write_text
from instructrl.errors import UserError
from instructrl.models.loading import META_FILE

# Keys a resumed run may change: they extend or shorten a run without changing what was already done.
RESUMABLE_CHANGES = {"max_steps", "checkpoint_every", "log_every"}


class RunDir:
    def __init__(self, out: str | Path, accelerator: Accelerator):
        self.path = Path(out)
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process

    # -- files -----------------------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def start(self, config: StageConfig, resume: bool, changed_keys: set[str]) -> StageConfig:
        """Create the run (or check it can be resumed) and return the config to run with."""
        cls = type(config)
        if resume:
            if not (self.path / "config.yaml").is_file():
                raise UserError(f"{self.path}: nothing to resume (no config.yaml); start without --resume")
            saved = cls(**yaml.safe_load((self.path / "config.yaml").read_text()))
            differ = {
                k
                for k in changed_keys
                if getattr(saved, k) != getattr(config, k) and k not in RESUMABLE_CHANGES
            }
            if differ:
                raise UserError(
                    f"--resume runs with {self.path / 'config.yaml'}; these keys differ from it: "
                    f"{', '.join(sorted(differ))}. Only {', '.join(sorted(RESUMABLE_CHANGES))} may change"
                )
            for k in changed_keys & RESUMABLE_CHANGES:
                setattr(saved, k, getattr(config, k))
            config = saved
        elif self.path.exists() and any(self.path.iterdir()):
            raise UserError(
                f"{self.path}: already holds a run; pass --resume to continue it, or choose a new --out"
            )
        self.accelerator.wait_for_everyone()
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path / "config.yaml", dump_config(config))
            self._recover_checkpoint_swap()
        self.accelerator.wait_for_everyone()
        return config

    def has_checkpoint(self) -> bool:
        return (self.checkpoint / "trainer_state.json").is_file()

    def log(self, metrics: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.metrics_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.is_main:
            atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Model, optimizer, scheduler, every process's RNG and `state` (step, data position, ...)."""
        acc = self.accelerator
        tmp = self.path / "checkpoint.tmp"
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if self.is_main:
            state = {
                **state,
                "metrics_bytes": self.metrics_file.stat().st_size if self.metrics_file.exists() else 0,
            }
            atomic_write_text(tmp / "trainer_state.json", json.dumps(state, indent=2))
            old = self.path / "checkpoint.old"
            if self.checkpoint.exists():
                os.replace(self.checkpoint, old)
            os.replace(tmp, self.checkpoint)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _recover_checkpoint_swap(self) -> None:
        """A kill between the two renames of save_checkpoint leaves checkpoint.old: put it back."""
        old = self.path / "checkpoint.old"
        if old.exists() and not self.checkpoint.exists():
            os.replace(old, self.checkpoint)
        shutil.rmtree(self.path / "checkpoint.tmp", ignore_errors=True)

    def load_checkpoint(self) -> dict[str, Any]:
        """Restore everything save_checkpoint saved; cut metrics.jsonl back to what was logged by then."""
        self.accelerator.load_state(str(self.checkpoint))
        state = json.loads((self.checkpoint / "trainer_state.json").read_text())
        self.accelerator.wait_for_everyone()
        if self.is_main and self.metrics_file.exists():
            with open(self.metrics_file, "r+b") as f:
                f.truncate(state["metrics_bytes"])
        self.accelerator.wait_for_everyone()
        return state

    # -- final model -----------------------------------------------------------------------------------
    def save_model(self, model: torch.nn.Module, tokenizer, name: str, meta: dict[str, Any]) -> Path:
        """Hugging Face format (save_pretrained + tokenizer + instructrl.json), written atomically."""
        acc = self.accelerator
        target = self.path / name
        acc.wait_for_everyone()
        if self.is_main:
            tmp = self.path / f"{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            acc.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        acc.wait_for_everyone()
        return target

    def remove_checkpoint(self) -> None:
        if self.is_main:
            shutil.rmtree(self.checkpoint, ignore_errors=True)
