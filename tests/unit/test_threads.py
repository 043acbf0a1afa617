"""CoreShare: torch's threads give way to other processes' runnable threads, and come back."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from instructrl.models import threads
from instructrl.models.threads import CoreShare


def test_threads_follow_the_median_of_the_last_three_counts(monkeypatch):
    state = {"n": 2}
    monkeypatch.setattr(torch, "get_num_threads", lambda: state["n"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: state.update(n=n))
    counts = iter([0, 0, 0, 1, 1, 0, 1, 0, 0])
    now = [0.0]
    share = CoreShare(threads=2, cores=2, every_s=1.0, sample=lambda: next(counts), clock=lambda: now[0])
    seen = []
    for t in (0, 0.5, 1, 2, 2.5, 3, 4, 5, 6, 7, 8):  # 0.5 and 2.5: within a second of the last sample
        now[0] = t
        share.tick()
        seen.append(state["n"])
    # counts 0 0 0 | 1 (median 0) | 1 -> 1 thread | a passing 0 changes nothing | 1 | 0 0 -> 2 threads
    assert seen == [2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2]
    assert [n for _, n in share.changes] == [1, 2]


def test_only_the_cores_others_leave_are_given_up():
    share = CoreShare(threads=8, cores=16, sample=lambda: 0)
    for others, want in ((0, 8), (8, 8), (12, 4), (15, 1), (40, 1)):
        share.counts.extend([others] * 3)
        assert share.target() == want


def test_off_where_the_user_chose_the_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not threads.enabled()
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("INSTRUCTRL_THREADS", "fixed")
    assert not threads.enabled()


# Two competitors, pinned to this process's two cores: CPU-bound loops, as another training run would be.
SPIN = "while True: pass"

WORKER = textwrap.dedent(
    """
    import os, subprocess, sys, time, torch
    from instructrl.models.threads import CoreShare
    cpus = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(2)
    busy = []

    def competitors_load(last=[0.0, time.monotonic()]):
        # cores' worth of CPU time the competitors took since the last call, from /proc/PID/stat: the test's
        # own competitors only, so that whatever else runs on the machine does not change the answer
        ticks = 0
        for p in busy:
            fields = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        cpu, now = ticks / os.sysconf("SC_CLK_TCK"), time.monotonic()
        (prev, t), last[:] = last, [cpu, now]
        return max(0.0, cpu - prev) / max(now - t, 1e-3)

    share = CoreShare(threads=2, cores=2, every_s=0.1, sample=competitors_load)
    x = torch.randn(384, 384)

    def run(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            x @ x
            share.tick()
        return torch.get_num_threads()

    before = run(1.5)
    busy += [
        subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        for _ in range(2)
    ]
    during = run(2.5)
    competitors_load()  # their CPU time up to now: the next look, after they are gone, sees none
    for p in busy:
        p.kill()
        p.wait()
    busy.clear()
    after = run(2.5)
    print(before, during, after)
    """
).replace("SPIN", repr(SPIN))


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or sys.platform != "linux", reason="needs 2 cores, Linux"
)
def test_busy_processes_on_the_same_two_cores_take_a_thread_and_give_it_back():
    """Real competitors, measured in /proc: torch drops to 1 thread while they run, then returns to 2. The
    load counted is the competitors' own, so the test holds on a machine that is not idle too (the rule
    that turns a load into threads is tested above; the machine-wide reading below)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1", "2"], out.stderr


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or sys.platform != "linux", reason="needs 2 cores, Linux"
)
def test_the_machine_wide_reading_counts_other_processes_on_its_cores():
    """OthersLoad reads /proc/stat: two busy processes on this process's two cores add about a core or more
    to what it read the second before (whatever else runs: a steady load is in both readings), and this
    process's own CPU time is not counted."""
    from instructrl.models.threads import OthersLoad

    cpus = sorted(os.sched_getaffinity(0))[:2]
    load = OthersLoad()
    time.sleep(1.0)
    before = load()
    busy = [
        subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        for _ in range(2)
    ]
    try:
        time.sleep(0.3)  # started
        load()
        time.sleep(1.0)
        during = load()
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert during - before >= 0.7, (before, during)
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # this process busy: not others' load
        pass
    own = load()
    assert own <= before + 0.5 + 0.3, (before, own)


def test_every_forward_pass_of_a_loaded_model_ticks_the_core_share(tiny_model_dir, monkeypatch):
    from instructrl.models.loading import load_causal_lm, load_reward_model

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the tests' conftest fixes the threads
    monkeypatch.delenv("INSTRUCTRL_THREADS", raising=False)
    samples = []
    share = CoreShare(threads=1, cores=1, every_s=0.0, sample=lambda: samples.append(1) or 0)
    monkeypatch.setattr(threads, "_SHARE", share)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        load_causal_lm(tiny_model_dir, dropout=False)(input_ids=ids)
        load_reward_model(tiny_model_dir)(input_ids=ids)
    assert len(samples) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with torch.no_grad():
        load_causal_lm(tiny_model_dir, dropout=False)(input_ids=ids)
    assert len(samples) == 2  # the user's OMP_NUM_THREADS: not watched
