"""A stage's output directory: config.yaml, metrics.jsonl, summary.json, resumable checkpoint/, final/.

Everything is written atomically (a temp file or folder, then a rename), so a killed process leaves either
the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from accelerate import Accelerator

from instructrl.config import StageConfig, dump_config
from instructrl.datasets.io import atomic_write_text
from instructrl.errors import UserError
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.lora import is_peft, save_merged

C = TypeVar("C", bound=StageConfig)

SHARDED_DIR = "sharded"  # a sharded model's and optimizer's checkpoint, one file per process (DCP)

# Keys a resumed run may change: they change how often and where a run saves and logs, not what it computes.
RESUMABLE_CHANGES = {"checkpoint_every", "log_every", "report_to"}


def resolve_config(out: str | Path, config: C, resume: bool, changed_keys: set[str]) -> C:
    """The config a run uses: the given one for a new run, the saved config.yaml for --resume.

    Checks (without writing anything) that a new run does not overwrite an old one and that a resumed
    run does not silently change what it was started with.
    """
    path = Path(out)
    cls = type(config)
    if not resume:
        if path.exists() and any(path.iterdir()):
            raise UserError(
                f"{path}: already holds a run; pass --resume to continue it, or choose a new --out"
            )
        return config
    if (path / "summary.json").is_file():
        raise UserError(f"{path}: this run already finished (summary.json exists); nothing to resume")
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path}: nothing to resume (no config.yaml); start without --resume")
    saved = cls(**yaml.safe_load((path / "config.yaml").read_text()))
    differ = {
        k for k in changed_keys if getattr(saved, k) != getattr(config, k) and k not in RESUMABLE_CHANGES
    }
    if differ:
        raise UserError(
            f"--resume runs with {path / 'config.yaml'}; these keys differ from it: {', '.join(sorted(differ))}. "
            f"Only {', '.join(sorted(RESUMABLE_CHANGES))} may change"
        )
    for k in changed_keys & RESUMABLE_CHANGES:
        setattr(saved, k, getattr(config, k))
    return saved


class RunDir:
    def __init__(self, out: str | Path, accelerator: Accelerator):
        self.path = Path(out)
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        self._sharded: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None

    def checkpoint_sharded(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Checkpoints hold this model and optimizer when sharded (accelerate saves only what it prepared):
        each process writes its shards through torch.distributed.checkpoint into checkpoint/sharded/. `model`
        may hold several sharded models (PPO's policy and value model in a ModuleDict) under one optimizer."""
        from instructrl.training.sharding import is_sharded

        self._sharded = (model, optimizer) if any(is_sharded(m) for m in model.modules()) else None

    # -- files -----------------------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    def start(self, config: StageConfig) -> None:
        """Create the directory and write config.yaml (call after the inputs were validated)."""
        self.accelerator.wait_for_everyone()
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path / "config.yaml", dump_config(config))
            self._recover_checkpoint_swap()
        self.accelerator.wait_for_everyone()
        if self.accelerator.log_with:  # report_to: TensorBoard and/or W&B, with the config as hyperparameters
            hparams = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in config}
            # W&B's files go to OUT/wandb/, not to the working directory; the run is named after OUT
            init: dict[str, Any] = {"wandb": {"dir": str(self.path), "name": self.path.name}}
            if self.has_checkpoint():
                # --resume: TensorBoard drops what was logged after the checkpoint, as metrics.jsonl is cut
                # back (the log's step is PPO's iteration, SFT's and the RM's optimizer step)
                state = self.checkpoint_state()
                init["tensorboard"] = {"purge_step": state.get("iteration", state.get("step", 0)) + 1}
            self.accelerator.init_trackers("instructrl", hparams, init_kwargs=init)

    def has_checkpoint(self) -> bool:
        return (self.checkpoint / "trainer_state.json").is_file()

    def log(self, record: dict[str, Any], name: str = "metrics.jsonl") -> None:
        self.log_many([record], name)
        if name == "metrics.jsonl" and self.accelerator.trackers:  # the same numbers to report_to's trackers
            step = record.get("step", record.get("iteration"))
            scalars = {
                k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            self.accelerator.log(scalars, step=step)

    def log_many(self, records: list[dict[str, Any]], name: str) -> None:
        """Append lines to an append-only JSONL log of the run (metrics.jsonl, rollouts.jsonl, ...)."""
        if self.is_main and records:
            with open(self.path / name, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

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
        if self._sharded is not None:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_sd, optim_sd = get_state_dict(*self._sharded)
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / SHARDED_DIR))
        if self.is_main:
            state = {**state, "log_bytes": {f.name: f.stat().st_size for f in self.path.glob("*.jsonl")}}
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

    def checkpoint_state(self) -> dict[str, Any]:
        """The `state` saved with the checkpoint, without restoring anything."""
        return json.loads((self.checkpoint / "trainer_state.json").read_text())

    def _check_sharding_matches(self) -> None:
        """A sharded checkpoint (sharding=fsdp on several processes) holds the model and optimizer only as
        DCP shards, an unsharded one only as accelerate's files: each resumes only as it was written. Any
        number of processes above one reads the shards (torch.distributed.checkpoint reshards)."""
        shards = len(list((self.checkpoint / SHARDED_DIR).glob("*.distcp")))
        if shards and self._sharded is None:
            raise UserError(
                f"{self.checkpoint} was written by a run sharded over {shards} processes (sharding=fsdp) and "
                f"this one runs unsharded on 1 process: resume it on 2 or more processes "
                f"(torchrun --nproc-per-node N, or accelerate launch --num_processes N)"
            )
        if not shards and self._sharded is not None:
            raise UserError(
                f"{self.checkpoint} was written by one unsharded process and this run is sharded over "
                f"{self.accelerator.num_processes}: resume it on 1 process, or start a new run"
            )

    def load_checkpoint(self) -> dict[str, Any]:
        """Restore everything save_checkpoint saved; cut the JSONL logs back to what they held by then."""
        self._check_sharding_matches()
        self.accelerator.load_state(str(self.checkpoint))
        if self._sharded is not None:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            model_sd, optim_sd = get_state_dict(*self._sharded)
            # in place, into this process's shards
            dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(self.checkpoint / SHARDED_DIR))
            set_state_dict(*self._sharded, model_state_dict=model_sd, optim_state_dict=optim_sd)
        state = json.loads((self.checkpoint / "trainer_state.json").read_text())
        self.accelerator.wait_for_everyone()
        if self.is_main:
            for f in self.path.glob("*.jsonl"):
                size = state["log_bytes"].get(f.name, 0)
                with open(f, "r+b") as fh:
                    fh.truncate(size)
        self.accelerator.wait_for_everyone()
        return state

    # -- final model -----------------------------------------------------------------------------------
    def save_model(self, model: torch.nn.Module, tokenizer, name: str, meta: CheckpointMeta) -> Path:
        """Hugging Face format (save_pretrained + tokenizer + instructrl.json), written atomically. A sharded
        model is gathered onto the main process first (every process must call this)."""
        from instructrl.training.sharding import full_state_dict, is_sharded, save_gathered

        acc = self.accelerator
        target = self.path / name
        acc.wait_for_everyone()
        weights = full_state_dict(model) if is_sharded(model) else None
        if self.is_main:
            tmp = self.path / f"{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            hf_model = acc.unwrap_model(model)
            hf_model = (
                getattr(hf_model, "model", hf_model) if not hasattr(hf_model, "save_pretrained") else hf_model
            )
            if is_peft(hf_model):
                save_merged(hf_model, tmp)  # LoRA: merged weights, and the adapter in adapter/
            elif weights is not None:
                save_gathered(model, hf_model, weights, tmp)
            else:
                hf_model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            meta.write(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        acc.wait_for_everyone()
        return target

    def remove_checkpoint(self) -> None:
        if self.is_main:
            shutil.rmtree(self.checkpoint, ignore_errors=True)
