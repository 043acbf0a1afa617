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


def test_others_load_is_the_busy_time_of_its_cores_less_its_own(tmp_path, monkeypatch):
    """/proc/stat's busy fields (user, nice, system, irq, softirq; not idle, iowait or steal) of this process's
    cores only, less this process's own CPU time, per second of wall time."""
    from instructrl.models.threads import OthersLoad

    hz = os.sysconf("SC_CLK_TCK")
    cpus = sorted(os.sched_getaffinity(0))
    other_cpu = max(cpus) + 1  # a core this process may not run on: never counted

    def write(busy_per_core: int, idle: int) -> None:
        #        user  nice system idle iowait irq softirq steal
        fields = lambda b: f"{b} 0 0 {idle} {idle} 0 0 {idle}"  # noqa: E731
        lines = [f"cpu {fields(0)}"] + [f"cpu{c} {fields(busy_per_core)}" for c in cpus]
        stat.write_text("\n".join([*lines, f"cpu{other_cpu} {fields(10 * hz)}", "intr 1 2 3"]) + "\n")

    stat, clock, own = tmp_path / "stat", [100.0], [5.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(os, "times", lambda: os.times_result((own[0], 0.0, 0.0, 0.0, 0.0)))
    write(busy_per_core=0, idle=0)
    load = OthersLoad(stat)
    # 2 s later: each core of this process's was busy 1.5 s, 1 s of it this process's own
    write(busy_per_core=int(1.5 * hz), idle=10 * hz)
    clock[0], own[0] = 102.0, 6.0
    assert load() == pytest.approx((1.5 * len(cpus) - 1.0) / 2.0)
    # its own time only: nobody else's
    clock[0], own[0] = 103.0, 6.0 + 1.0
    write(busy_per_core=int(1.5 * hz) + hz // len(cpus), idle=10 * hz)
    assert load() == pytest.approx(0.0, abs=1 / hz)


def test_the_real_proc_stat_reads_as_a_load_within_this_process_s_cores():
    from instructrl.models.threads import OthersLoad

    load = OthersLoad()
    time.sleep(0.2)
    assert 0.0 <= load() <= len(os.sched_getaffinity(0)) + 0.5


# Two competitors, pinned to the worker's two cores: CPU-bound loops, as another training run would be. What
# the worker reads is their CPU time (/proc/PID/stat) and they run at the highest priority (nice -20, where
# allowed), so that whatever else the machine runs (other tests, a build) neither starves them nor is counted:
# the machine-wide reading (/proc/stat) counts everything and is tested on its own above.
SPIN = "while True: pass"

WORKER = textwrap.dedent(
    """
    import os, subprocess, sys, time, torch
    from instructrl.models.threads import CoreShare
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)  # inherited by the competitors
    except PermissionError:
        pass  # then a heavily loaded machine may starve the competitors
    cpus = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(2)
    busy = []

    def competitors_load(last=[0.0, time.monotonic()]):
        # cores' worth of CPU time the competitors took since the last call
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
    """Real competitors: torch drops to 1 thread while they run, then returns to 2."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1", "2"], out.stderr


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
