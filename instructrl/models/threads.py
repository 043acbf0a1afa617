"""Torch's CPU threads, given back when another process competes for the cores.

On 2 cores, two OpenMP threads that spin while they wait for each other lose 60% of their speed as soon as one
other busy process appears (a thread waits for a descheduled sibling; benchmarks/README.md, "Threads under
contention"), and 1 thread is then faster than 2. So once a second, at a forward pass of a model it watches,
`CoreShare` counts the runnable threads of other processes (/proc/loadavg's running count minus this process's
running threads) and lets torch use the cores they leave: max(1, min(threads, cores - others)), on the median
of the last 3 counts (a passing process changes nothing). When they are gone, the threads come back.

Off where the user chose the threads (OMP_NUM_THREADS set), with INSTRUCTRL_THREADS=fixed, and where /proc is
not there (not Linux).
"""

from __future__ import annotations

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


def running_threads_of_others() -> int:
    """Runnable threads on the machine that are not this process's (a snapshot)."""
    running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    own = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        own += stat[stat.rindex(")") + 2] == "R"  # the state follows the parenthesised name
    return max(0, running - own)


class CoreShare:
    """Sets torch's thread count from the other processes' load; `tick()` is cheap, call it often."""

    def __init__(
        self,
        threads: int | None = None,
        cores: int | None = None,
        every_s: float = 1.0,
        sample: Callable[[], int] = running_threads_of_others,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.threads = threads or torch.get_num_threads()  # the most it uses (the count it started with)
        self.cores = cores or len(os.sched_getaffinity(0))
        self.every_s, self.sample, self.clock = every_s, sample, clock
        self.counts: deque[int] = deque(maxlen=3)
        self.last = -float("inf")
        self.changes: list[tuple[float, int]] = []  # (time, threads) of each change, for the log

    def target(self) -> int:
        others = statistics.median_low(self.counts)
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
                f"instructrl: other processes run {statistics.median_low(self.counts)} thread(s) on these "
                f"{self.cores} cores; torch threads {torch.get_num_threads()} -> {n}",
                file=sys.stderr,
            )
            torch.set_num_threads(n)


_SHARE: CoreShare | None = None


def enabled() -> bool:
    return (
        os.environ.get("INSTRUCTRL_THREADS", "auto") != "fixed"
        and "OMP_NUM_THREADS" not in os.environ
        and Path("/proc/loadavg").exists()
        and Path("/proc/self/task").is_dir()
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
