"""Accelerator set-up, batch planning and stop signals shared by SFT, RM and PPO.

Batches are planned from the seed alone, so every process knows the whole global batch: losses are
normalised by global counts and 1 process = 2 processes = any gradient-accumulation split.
"""

from __future__ import annotations

import ctypes
import functools
import os
import random
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from instructrl.config import StageConfig
from instructrl.errors import UserError
from instructrl.training.config import ShardableConfig


def resolve_mixed_precision(setting: str, cpu: bool) -> str:
    """'auto' -> bf16 where the hardware multiplies bf16 fast (AVX512-BF16/AMX CPUs, Ampere+ GPUs)."""
    if setting != "auto":
        return setting
    if cpu:
        fast = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return "bf16" if fast else "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_accelerator(config: StageConfig, out: str | Path | None = None) -> Accelerator:
    """The run's Accelerator; with report_to, its trackers log under `out` (started by RunDir.start)."""
    cpu = not torch.cuda.is_available()
    check_engine(config.sharding if isinstance(config, ShardableConfig) else "none")
    if cpu:
        keep_freed_memory()
    trackers = report_trackers(config.report_to)
    assert out is not None or not trackers, "report_to needs the run's directory"
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=resolve_mixed_precision(config.mixed_precision, cpu),
        log_with=trackers or None,
        project_dir=str(Path(out) / TRACKER_DIR) if trackers and out is not None else None,
    )
    seed_everything(config.seed + accelerator.process_index)
    return accelerator


def check_engine(sharding: str) -> None:
    """Refuse an engine asked for through `accelerate launch --config_file` that instructrl does not run.

    FSDP: instructrl shards with torch's FSDP2 itself (`sharding: fsdp`, training/sharding.py) on CPU and GPUs
    alike; accelerate 1.x would apply it on GPUs only and on CPU silently run DDP instead (checked with 2
    gloo processes: distributed_type MULTI_CPU, a DistributedDataParallel model). So configs/accelerate/
    fsdp.yaml (fsdp_version 2) runs only with `sharding: fsdp`, which also runs under any other launch.
    DeepSpeed ZeRO has not run anywhere yet (it needs GPUs and the deepspeed package): refused.
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise UserError(
            "accelerate launch asked for DeepSpeed (ACCELERATE_USE_DEEPSPEED=true): instructrl has not run "
            "DeepSpeed ZeRO anywhere yet, so it refuses it. For parameters, gradients and optimizer state "
            "split over the processes use torch FSDP2: --set sharding=fsdp (with configs/accelerate/fsdp.yaml, "
            "ddp.yaml or torchrun); for memory also lora_r, gradient_checkpointing and, in PPO, frozen_dtype"
        )
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        version = os.environ.get("FSDP_VERSION", "1")
        if sharding != "fsdp" or version != "2":
            raise UserError(
                f"accelerate launch asked for FSDP (ACCELERATE_USE_FSDP=true, fsdp_version {version}): "
                f"instructrl shards with FSDP2 itself, on CPU as on GPUs, where accelerate would run DDP on "
                f"CPU. Use configs/accelerate/fsdp.yaml (fsdp_version: 2) with --set sharding=fsdp (SFT, the "
                f"reward model, PPO), or configs/accelerate/ddp.yaml for DDP"
            )


TRACKER_DIR = "tensorboard"  # TensorBoard's event files: OUT/tensorboard/instructrl/


def report_trackers(report_to: str) -> list[str]:
    """accelerate's tracker names for report_to; a tracker that is not installed is an error here, where
    accelerate would leave it out without a word."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    wanted = {"none": [], "all": ["tensorboard", "wandb"]}.get(report_to, [report_to])
    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    for name in wanted:
        if not available[name]:
            raise UserError(
                f"report_to={report_to} needs {name}: pip install 'instructrl[{name}]' (or pip install {name}), "
                f"or --set report_to=none"
            )
    return wanted


def keep_freed_memory() -> None:
    """On CPU, let glibc keep freed memory for the next tensors instead of handing it back to the OS.

    By default glibc trims the heap and maps big blocks afresh, so the next activation or logits tensor
    page-faults on every first touch (a 100 MiB tensor: 41 ms to allocate and fill when freshly mapped,
    3 ms when reused); a PPO iteration spent a fifth of its bf16 training time so. The process keeps its
    peak memory instead. No-op off glibc.
    """
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest: bigger blocks still come from mmap
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


def attention_implementation(accelerator: Accelerator) -> str | None:
    """Hugging Face's eager attention for bf16 on CPU; elsewhere the model's default (SDPA).

    torch's CPU flash-attention kernel runs its bf16 backward at half its fp32 speed: at 80-512 tokens a
    bf16 attention forward + backward took 2-4x as long as eager's (bf16 matmuls, fp32 softmax), and as
    long at 1024. In fp32, and on GPUs, SDPA stays the faster one.
    """
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "bf16":
        return "eager"
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def micro_batch_size(config: StageConfig, world_size: int) -> int:
    """Examples per forward pass on one process; checks that the global batch splits evenly."""
    per_process, rest = divmod(config.batch_size, world_size)
    if rest or per_process == 0:
        raise UserError(
            f"batch_size={config.batch_size} does not split over {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    micro = config.micro_batch_size or per_process
    if per_process % micro:
        raise UserError(
            f"micro_batch_size={micro} does not divide the per-process batch {per_process} "
            f"(batch_size {config.batch_size} / {world_size} processes)"
        )
    return micro


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[list[int]]:
    """Global batches of one epoch: a seeded permutation cut into full batches (the remainder is dropped and
    lands in other batches in other epochs)."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def local_micro_batches(
    global_batch: Sequence[int], world_size: int, rank: int, micro: int
) -> list[list[int]]:
    """This process's share of a global batch (every world_size-th example), cut into micro-batches."""
    mine = list(global_batch[rank::world_size])
    return [mine[i : i + micro] for i in range(0, len(mine), micro)]


def shard(items: Sequence[int], world_size: int, rank: int) -> list[int]:
    return list(items[rank::world_size])


def eval_batches(n: int, world_size: int, rank: int, batch_size: int, lockstep: bool) -> list[list[int]]:
    """This process's shard of n evaluation examples in batches. With `lockstep` (a sharded model, whose
    forward passes gather from every process) every process gets as many batches as the largest shard
    needs: a shorter shard's last ones are empty, and the process runs a stand-in forward pass for each,
    counting nothing."""
    mine = shard(range(n), world_size, rank)
    batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    if lockstep:
        largest = -(-n // world_size)  # ceil
        batches += [[] for _ in range(-(-largest // batch_size) - len(batches))]
    return batches


class StopSignal:
    """Ctrl-C / SIGTERM set a flag; the loop checks it between steps, saves a checkpoint and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = True

    def should_stop(self, accelerator: Accelerator) -> bool:
        """True on every process once any process got a signal."""
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        if accelerator.num_processes > 1:
            flag = accelerator.reduce(flag, "max")
        return bool(flag.item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Stopped(Exception):
    """Raised after a checkpoint was saved because of a stop signal; the CLI exits with 130."""


def progress(total: int, initial: int, desc: str, accelerator: Accelerator) -> tqdm:
    """A progress bar on the main process (see `progress_bar`)."""
    return progress_bar(total, desc, initial=initial, show=accelerator.is_main_process)


def progress_bar(total: int, desc: str, *, initial: int = 0, unit: str = "it", show: bool = True) -> tqdm:
    """A progress bar; in a log file (no terminal) it prints every 30 s, not every step.
    TQDM_DISABLE=1 turns it off."""
    tty = sys.stderr.isatty()
    off = not show or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=off,
        mininterval=0.2 if tty else 30.0,
        dynamic_ncols=tty,
    )


def finish(accelerator: Accelerator) -> None:
    """End the run cleanly on every process (an un-destroyed gloo group aborts at interpreter exit), and
    forget accelerate's process-wide state so that a next stage in the same Python process may use other
    settings (accelerate refuses a second mixed_precision otherwise; it offers no public reset)."""
    accelerator.wait_for_everyone()
    accelerator.end_training()
    forget_process_state()


def forget_process_state() -> None:
    """Destroy the process group and reset accelerate's process-wide state (see `finish`)."""
    from accelerate.state import AcceleratorState, GradientState

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


P = ParamSpec("P")
R = TypeVar("R")


def stage(fn: Callable[P, R]) -> Callable[P, R]:
    """A stage's entry point: where it raises, before reaching `finish`, accelerate's process-wide state is
    forgotten too, so that a stage that failed does not make the next one in the same process (a notebook,
    a pipeline, the next test) fail with "AcceleratorState has already been initialized". No barrier: the
    other processes of a distributed run may never reach one."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BaseException:
            forget_process_state()
            raise

    return run
