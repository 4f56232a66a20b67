"""Shared fixtures: every test's processes carry a tag in their environment, and after the
test no live process may carry it (checked in /proc, wherever the process was reparented)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

import pidring

TAG_VAR = "PIDRING_PYTEST_TAG"


def tagged(tag: str):
    """Pids of live (non-zombie) processes whose environment has TAG_VAR=tag."""
    needle = f"{TAG_VAR}={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2:].split()[0] != b"Z":
            pids.append(int(entry))
    return pids


class Tag:
    """A unique tag for the test's processes (``extra_env=tag.env``)."""

    def __init__(self):
        self.value = uuid.uuid4().hex
        self.env = {TAG_VAR: self.value}

    def alive(self):
        return tagged(self.value)


@pytest.fixture
def tag():
    t = Tag()
    yield t
    # A process killed a moment ago may still be on its way out (not yet a zombie): give
    # the kernel a moment before calling it a survivor.
    deadline = time.monotonic() + 5
    while t.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert t.alive() == [], "processes of this test outlived it"


def cgroup_pool(**kwargs):
    """A pool in cgroup mode, or a skip that says why there is none."""
    try:
        return pidring.Pool(containment="cgroup", **kwargs)
    except pidring.PoolContainmentError as e:
        pytest.skip(f"cgroup mode unavailable here (needs a writable cgroup v2 hierarchy, e.g. root): {e}")


def collect(pool, tasks, timeout=60.0):
    """Every event of ``tasks`` (ids or Tasks) until each one's Done: {id: [events]}."""
    ids = {t if isinstance(t, int) else t.id for t in tasks}
    events = {i: [] for i in ids}
    pending = set(ids)
    for event in pool.events(timeout=timeout):
        if event.task in events:
            events[event.task].append(event)
            if isinstance(event, pidring.Done):
                pending.discard(event.task)
                if not pending:
                    break
    assert not pending, f"no Done within {timeout} s of quiet for tasks {sorted(pending)}"
    return events


def wait_output(pool, tasks, needle: bytes, timeout=30.0):
    """Reads events until every task in ``tasks`` (one Task or a list) printed ``needle``.
    Events of other tasks are read and dropped."""
    tasks = tasks if isinstance(tasks, list) else [tasks]
    seen = {t.id: b"" for t in tasks}
    waiting = set(seen)
    for event in pool.events(timeout=timeout):
        if event.task not in seen:
            continue
        assert not isinstance(event, pidring.Done), f"task ended: {event!r}"
        if isinstance(event, pidring.Output) and event.task in waiting:
            seen[event.task] += event.data
            if needle in seen[event.task]:
                waiting.discard(event.task)
                if not waiting:
                    return
    raise AssertionError(f"{needle!r} not printed by tasks {sorted(waiting)} within {timeout} s of quiet")


def check_order(events):
    """Per task: every Output, then one Exited, then one Done, last."""
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "Done" and kinds.count("Done") == 1, kinds
    assert kinds.count("Exited") == 1 and kinds[-2] == "Exited", kinds
    assert set(kinds[:-2]) <= {"Output"}, kinds
