"""Torch's CPU threads, given back when another process competes for the cores.

On 2 cores, two OpenMP threads that spin while they wait for each other lose 60% of their speed as soon as one
other busy process appears (a thread waits for a descheduled sibling; benchmarks/README.md, "Threads under
contention"), and 1 thread is then faster than 2. So once a second, at a forward pass of a model it watches,
`CoreShare` measures how many cores' worth of CPU time other processes took on this process's cores since the
last look (/proc/stat's busy time less this process's own) and lets torch use the cores they leave:
max(1, min(threads, cores - others)), others rounded, on the median of the last 3 looks (a passing process
changes nothing). When they are gone, the threads come back.

Off where the user chose the threads (OMP_NUM_THREADS set), with INSTRUCTRL_THREADS=fixed, and where /proc is
not there (not Linux).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from tqdm import tqdm


class OthersLoad:
    """Cores' worth of CPU time that other processes used on this process's cores since the last call:
    /proc/stat's busy time (user, nice, system, irq, softirq) of those cores less this process's own."""

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self.stat = stat
        self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        self.tick_s = 1 / os.sysconf("SC_CLK_TCK")
        self.last = self.read()

    def read(self) -> tuple[float, float, float]:
        busy = 0
        for line in self.stat.read_text().splitlines():
            name, *fields = line.split()
            if name in self.cpus:
                busy += sum(int(fields[i]) for i in (0, 1, 2, 5, 6))
        own = os.times()
        return busy * self.tick_s, own.user + own.system, time.monotonic()

    def __call__(self) -> float:
        now = self.read()
        (busy, own, t), self.last = self.last, now
        return max(0.0, (now[0] - busy) - (now[1] - own)) / max(now[2] - t, 1e-3)


class CoreShare:
    """Sets torch's thread count from the other processes' load; `tick()` is cheap, call it often."""

    def __init__(
        self,
        threads: int | None = None,
        cores: int | None = None,
        every_s: float = 1.0,
        sample: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.threads = threads or torch.get_num_threads()  # the most it uses (the count it started with)
        self.cores = cores or len(os.sched_getaffinity(0))
        self.every_s, self.clock = every_s, clock
        self.sample = sample or OthersLoad()
        self.counts: deque[float] = deque(maxlen=3)  # other processes' load, in cores
        self.last = -float("inf")
        self.changes: list[tuple[float, int]] = []  # (time, threads) of each change, for the log

    def target(self) -> int:
        others = math.floor(statistics.median_low(self.counts) + 0.5)
        return max(1, min(self.threads, self.cores - others))

    def tick(self) -> None:
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        self.counts.append(self.sample())
        if len(self.counts) == self.counts.maxlen and (n := self.target()) != torch.get_num_threads():
            self.changes.append((now, n))
            tqdm.write(
                f"instructrl: other processes use {statistics.median_low(self.counts):.1f} of these "
                f"{self.cores} cores; torch threads {torch.get_num_threads()} -> {n}",
                file=sys.stderr,
            )
            torch.set_num_threads(n)


_SHARE: CoreShare | None = None


def enabled() -> bool:
    return (
        os.environ.get("INSTRUCTRL_THREADS", "auto") != "fixed"
        and "OMP_NUM_THREADS" not in os.environ
        and Path("/proc/stat").exists()
    )


M = TypeVar("M", bound=nn.Module)


def share_cores(model: M) -> M:
    """Watch `model`: each of its forward passes ticks the process's CoreShare (see the module's text)."""
    global _SHARE
    if not enabled():
        return model
    if _SHARE is None:
        _SHARE = CoreShare()
    share = _SHARE
    model.register_forward_pre_hook(lambda module, args: share.tick())
    return model
