"""The skeleton of a training stage: config -> accelerator -> run directory -> the model adapted (LoRA,
gradient checkpointing) -> optimizer -> the stage's loop -> final/ -> summary.json -> cleanup.

A stage (`sft/train.py`, `reward/train.py`, `ppo/setup.py` and `ppo/train.py`) keeps its data, its models and
its loop; `StageRun` does the rest, in that order, and writes its `StageSummary` (training/summary.py).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import torch
from accelerate import Accelerator

from instructrl.datasets.tokenize import split_by_user
from instructrl.models.checkpoint import CheckpointMeta
from instructrl.models.loading import context_window
from instructrl.models.lora import add_lora
from instructrl.models.memory import enable_gradient_checkpointing
from instructrl.training.config import ShardableConfig
from instructrl.training.loop import SupervisedTask, fit
from instructrl.training.optim import planned_steps
from instructrl.training.rundir import RunDir, resolve_config
from instructrl.training.runtime import finish, make_accelerator
from instructrl.training.sharding import is_sharded, local_state_bytes, prepare_models
from instructrl.training.summary import StageSummary

C = TypeVar("C", bound=ShardableConfig)
R = TypeVar("R")


class StageRun(Generic[C]):
    """One run of a training stage on this process (every process of a distributed run builds one)."""

    def __init__(
        self,
        out: str | Path,
        config: C,
        *,
        resume: bool = False,
        changed_keys: Iterable[str] = (),
        accelerator: Accelerator | None = None,
    ):
        self.t_start = time.perf_counter()
        self.config: C = resolve_config(out, config, resume, set(changed_keys))
        self.accelerator = accelerator or make_accelerator(self.config, out)
        self.dir = RunDir(out, self.accelerator)
        self._trained: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None

    def train_val(self, read: Callable[[Any], list[R]], data: Any, val_data: Any) -> tuple[list[R], list[R]]:
        """The training records and the validation ones: `val_data`'s, else a val_fraction of `data`'s users."""
        records = read(data)
        if val_data is not None:
            return records, read(val_data)
        return split_by_user(records, self.config.val_fraction, self.config.seed)

    def max_length(self, model: str | Path) -> int:
        """Tokens per sequence: the config's max_length, or the model's context window if smaller."""
        return min(self.config.max_length, context_window(model) or self.config.max_length)

    def adapt(self, model: torch.nn.Module, task: Literal["CAUSAL_LM", "SEQ_CLS"]) -> torch.nn.Module:
        """LoRA adapters (lora_r > 0) and gradient checkpointing, as the config asks."""
        if self.config.lora_r:
            model = add_lora(model, self.config, task)
        if self.config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model

    def hold(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """The trained model (several in a ModuleDict) and its optimizer: what a sharded checkpoint holds and
        what the summary's process_state_bytes measures."""
        self.dir.checkpoint_sharded(model, optimizer)
        self._trained = (model, optimizer)

    def prepare(
        self,
        models: dict[str, torch.nn.Module],
        total_steps: int,
        *,
        lrs: dict[str, float] | None = None,
        autocast: bool = False,
    ) -> tuple[dict[str, torch.nn.Module], torch.optim.Optimizer, Any]:
        """The trained models, by name, ready to train under one optimizer (sharded first under
        sharding=fsdp, `prepare_models`), and held (`hold`): one model, or several each with its own lr (PPO's
        policy and value model, held as a ModuleDict of these names). Returns them, the optimizer and the
        learning-rate schedule."""
        names = list(models)
        prepared, optimizer, scheduler = prepare_models(
            self.accelerator,
            list(models.values()),
            self.config,
            total_steps,
            lrs=None if lrs is None else [lrs[name] for name in names],
            autocast=autocast,
        )
        trained = dict(zip(names, prepared, strict=True))
        self.hold(prepared[0] if len(prepared) == 1 else torch.nn.ModuleDict(trained), optimizer)
        return trained, optimizer, scheduler

    def start(self) -> None:
        """Create the run directory and write config.yaml (once every input was read and checked)."""
        self.dir.start(self.config)

    def train(
        self,
        model: torch.nn.Module,
        task: SupervisedTask,
        *,
        tokenizer: Any,
        meta: CheckpointMeta,
        desc: str,
    ) -> dict[str, Any]:
        """Start the run directory, build the optimizer (sharding the model first under sharding=fsdp) and
        run the supervised loop; returns `fit`'s result (OUT/best = the best epoch's model)."""
        self.start()
        trained, optimizer, scheduler = self.prepare(
            {"model": model}, planned_steps(task.n_train, self.config)
        )
        return fit(
            task,
            accelerator=self.accelerator,
            run=self.dir,
            config=self.config,
            model=trained["model"],
            optimizer=optimizer,
            scheduler=scheduler,
            tokenizer=tokenizer,
            meta=meta,
            desc=desc,
        )

    def save(self, folder: str, model: torch.nn.Module, tokenizer: Any, meta: CheckpointMeta) -> Path:
        """OUT/<folder> in Hugging Face format (a sharded model gathered; every process must call this):
        final/, or another model a stage keeps (PPO's value model in value/, its best policy so far in kept/)."""
        return self.dir.save_model(model, tokenizer, folder, meta)

    def save_final(self, model: torch.nn.Module, tokenizer: Any, meta: CheckpointMeta) -> Path:
        """OUT/final, the model the stage hands on (`save`)."""
        return self.save("final", model, tokenizer, meta)

    def as_final(self, folder: Path) -> None:
        """OUT/final = a model the run saved earlier: the best epoch's (the supervised loop's best/), or the
        kept policy (PPO's kept/). Every process must call this."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(self.dir.path / "final", ignore_errors=True)
            os.replace(folder, self.dir.path / "final")
        self.accelerator.wait_for_everyone()

    def facts(self) -> dict[str, Any]:
        """StageSummary's facts of how the run ran, up to now."""
        assert self._trained is not None, "facts() before the trained model was held (train, prepare or hold)"
        model, optimizer = self._trained
        return {
            "mixed_precision": self.accelerator.mixed_precision,
            "processes": self.accelerator.num_processes,
            "sharding": self.config.sharding if any(is_sharded(m) for m in model.modules()) else "none",
            "process_state_bytes": local_state_bytes(model, optimizer),  # the main process's
            "time_s": time.perf_counter() - self.t_start,
        }

    def finish(self, summary: StageSummary) -> dict[str, Any]:
        """Remove the resumable checkpoint, write OUT/summary.json (the run is done once it exists) and end
        the run on every process; returns the summary as summary.json holds it."""
        self.dir.remove_checkpoint()
        self.dir.write_summary(summary.as_dict())
        finish(self.accelerator)
        return summary.as_dict()
