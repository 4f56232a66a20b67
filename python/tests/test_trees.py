"""Whole-tree terminate and kill: a `setsid` grandchild in cgroup mode, a plain grandchild in
process-group mode, and shutdown of a pool with live trees. After each test no process of
it is alive (the ``tag`` fixture checks /proc)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

import pidring
from conftest import cgroup_pool, check_order, collect, wait_output

# The main process starts a plain background grandchild and one that leaves for its own
# session (a group kill does not reach it; the tree signal finds it while its parent
# lives), which says "ready" from there.
SETSID_TREE = "sleep 1000 & setsid sh -c 'echo ready; exec sleep 1000' & wait"
PLAIN_TREE = "sleep 1000 & sleep 1000 & echo ready; wait"


def wait_alive(tag, n, what):
    """Waits until `n` processes of the test are seen (a process in the middle of execve can
    have no readable environment, so no tag, for an instant)."""
    deadline = time.monotonic() + 10
    while len(tag.alive()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(tag.alive()) == n, what


def end_tree(pool, tag, script, how):
    task = pool.spawn(["sh", "-c", script], grace=5, extra_env=tag.env)
    wait_output(pool, task, b"ready")
    # "ready" comes before the last exec: wait for all three to be seen.
    wait_alive(tag, 3, "the tree is the shell and its two sleeping children")
    getattr(task, how)()
    events = collect(pool, [task])[task.id]
    check_order(events)
    return task, events[-1].outcome


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_cgroup_mode_ends_a_tree_with_a_setsid_grandchild(tag, how):
    with cgroup_pool(workers=1) as pool:
        assert pool.containment == "cgroup"
        _, outcome = end_tree(pool, tag, SETSID_TREE, how)
        # Done comes once the cgroup is empty: nothing of the tree is alive at this point.
        assert tag.alive() == []
    assert outcome.reason == "terminated" and outcome.tree_signalled
    assert outcome.returncode == -(signal.SIGTERM if how == "terminate" else signal.SIGKILL)
    assert outcome.descendants_killed == 2


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_process_group_mode_ends_a_tree_with_a_plain_grandchild(tag, how):
    with pidring.Pool(workers=1, containment="process-group") as pool:
        assert pool.containment == "process-group"
        _, outcome = end_tree(pool, tag, PLAIN_TREE, how)
    assert outcome.reason == "terminated" and outcome.tree_signalled
    assert outcome.returncode == -(signal.SIGTERM if how == "terminate" else signal.SIGKILL)


def test_terminate_escalates_to_sigkill_for_a_tree_that_ignores_sigterm(tag):
    script = "trap '' TERM; sleep 1000 & echo ready; wait"
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", script], grace=0.3, extra_env=tag.env)
        wait_output(pool, task, b"ready")
        task.terminate()
        outcome = collect(pool, [task])[task.id][-1].outcome
    assert outcome.reason == "terminated" and outcome.returncode == -signal.SIGKILL


@pytest.mark.parametrize("containment", ["auto", "process-group"])
def test_closing_the_pool_kills_every_tree(tag, containment):
    with pidring.Pool(containment=containment) as pool:
        tasks = [pool.spawn(["sh", "-c", PLAIN_TREE], extra_env=tag.env) for _ in range(20)]
        wait_output(pool, tasks, b"ready")
        assert len(tag.alive()) == 60
    # Leaving the block killed every tree and waited for them...
    assert pool.closed and tag.alive() == []
    # ...and each task's Done can still be read, then iteration ends by itself.
    done = [e for e in pool.events() if isinstance(e, pidring.Done)]
    assert sorted(e.task for e in done) == sorted(t.id for t in tasks)
    assert all(e.outcome.tree_signalled for e in done)


def test_a_pool_dropped_without_close_kills_its_trees(tag):
    pool = pidring.Pool(workers=1)
    task = pool.spawn(["sh", "-c", PLAIN_TREE], extra_env=tag.env)
    wait_output(pool, task, b"ready")
    del pool, task
    assert tag.alive() == []


def test_pids_max_limits_the_tree_in_cgroup_mode(tag):
    script = "for i in 1 2 3 4 5 6; do sleep 1000 & done; echo forked; wait"
    with cgroup_pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", script], pids_max=3, drain=0.2, extra_env=tag.env)
        events = collect(pool, [task])[task.id]
    err = b"".join(e.data for e in events if isinstance(e, pidring.Output) and e.stream == "stderr")
    assert b"fork" in err.lower(), err  # the shell could not start all six


def test_pids_max_needs_cgroup_mode(tag):
    with pidring.Pool(workers=1, containment="process-group") as pool:
        with pytest.raises(pidring.TaskContainmentError) as info:
            pool.spawn(["true"], pids_max=5, extra_env=tag.env)
    assert isinstance(info.value, pidring.SpawnError) and isinstance(info.value, pidring.ContainmentError)


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_process_group_mode_reaches_a_setsid_child_of_a_live_parent(tag, how):
    # `setsid` in the shell's background job (as `start_new_session=True` in a Python task
    # runner) leaves the group while its parent still runs: the tree signal finds it from
    # the main process and ends it too, without a subreaper.
    with pidring.Pool(workers=1, containment="process-group") as pool:
        _, outcome = end_tree(pool, tag, SETSID_TREE, how)
        assert tag.alive() == []
    assert outcome.reason == "terminated" and outcome.tree_signalled


def test_process_group_mode_reaches_a_new_session_started_from_a_worker_thread(tag):
    # A Python task runner whose worker thread starts a subprocess in a new session: the
    # child is that thread's, so the walk must read every thread's children, not the main
    # thread's only.
    runner = (
        "import subprocess, sys, threading, time\n"
        "def work():\n"
        "    subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(1000)\n"
        "threading.Thread(target=work, daemon=True).start()\n"
        "time.sleep(1000)\n"
    )
    with pidring.Pool(workers=1, containment="process-group") as pool:
        task = pool.spawn([sys.executable, "-c", runner], grace=5, extra_env=tag.env)
        wait_output(pool, task, b"ready")
        wait_alive(tag, 2, "the runner and its new-session child")
        task.terminate()
        outcome = collect(pool, [task])[task.id][-1].outcome
        assert tag.alive() == []
    assert outcome.reason == "terminated" and outcome.descendants_killed >= 1


def test_process_group_mode_cannot_reach_a_daemon_orphaned_before_the_kill(tag):
    # The documented limit of process-group mode (README, "Guarantees and limits"): a
    # double-forked daemon was re-parented before the tree was signalled, so nothing ties it
    # to the task; it survives (without `subreaper=True`). Only cgroup mode ends it.
    script = "(setsid sh -c 'echo ready; exec sleep 1000' &); sleep 1000 & wait"
    with pidring.Pool(workers=1, containment="process-group") as pool:
        task = pool.spawn(["sh", "-c", script], grace=5, extra_env=tag.env)
        wait_output(pool, task, b"ready")
        wait_alive(tag, 3, "the shell, its sleep and the daemon")
        task.kill()
        outcome = collect(pool, [task])[task.id][-1].outcome
    assert outcome.reason == "terminated"
    survivors = tag.alive()
    assert len(survivors) == 1
    for pid in survivors:  # clean up after ourselves, through a pidfd
        fd = os.pidfd_open(pid)
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        os.close(fd)
