"""CoreShare: torch's threads give way to other processes' runnable threads, and come back."""

import os
import subprocess
import sys
import textwrap

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


WORKER = textwrap.dedent(
    """
    import os, subprocess, sys, time, torch
    from instructrl.models.threads import CoreShare
    cpus = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(2)
    share = CoreShare(threads=2, cores=2, every_s=0.1)
    x = torch.randn(384, 384)

    def run(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            x @ x
            share.tick()
        return torch.get_num_threads()

    before = run(1.5)
    busy = subprocess.Popen(
        [sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.sched_setaffinity(0, cpus)
    )
    during = run(2.5)
    busy.kill()
    busy.wait()
    after = run(2.5)
    print(before, during, after)
    """
)


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or sys.platform != "linux", reason="needs 2 cores, Linux"
)
def test_a_busy_process_on_the_same_two_cores_takes_a_thread_and_gives_it_back():
    """A real competitor: /proc says another process runs, torch drops to 1 thread, then returns to 2."""
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
