"""The seed scenario end to end (python/examples/airflow_like_worker.py): an execution API
on loopback, a worker on pidring.Pool that heartbeats for every task, an admin call that
fails running tasks mid-run, and the worker ending those tasks' trees on the 409.

CI runs 40 tasks with 4 failed (the example's default is the full 200 with 20 failed)."""

from __future__ import annotations

import importlib.util
import os

import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "airflow_like_worker.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("airflow_like_worker", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("containment", ["auto", "process-group"])
def test_seed_scenario(example, containment):
    report = example.run_scenario(tasks=40, fail=4, task_seconds=10.0, heartbeat=0.5, grace=10.0,
                                  containment=containment)
    print(report.summary())
    assert report.worker_error is None
    assert report.problems() == []
    # Failed tasks were ended by the worker on their 409 (a task may also have finished on
    # its own in the instant between the admin call and its heartbeat; at least one was not).
    assert report.terminated and all(o.reason == "terminated" for _, o in report.terminated.values())
    assert report.api_states == {"queued": 0, "running": 0, "success": 36, "failed": 4}
    assert report.survivors == [] and report.orphans_logged == [] and report.orphans_seen == []


def test_seed_checks_catch_airflow_32s_bug(example):
    # Kill only the task runner, as Airflow 3.2's supervisor did: its child interpreter is
    # orphaned (until pidring's drain period ends the rest of the tree), and the checks
    # that passed above must say so.
    report = example.run_scenario(tasks=10, fail=2, task_seconds=10.0, heartbeat=0.5, grace=10.0,
                                  runner_only=True)
    print(report.summary())
    assert report.worker_error is None
    assert len(report.failed_ids) == 2
    assert len(report.orphans_logged) == 2, "each failed task's child saw its runner die"
    assert any("saw their parent change" in p for p in report.problems())
    assert report.survivors == [], "pidring still ended the orphans' trees after the drain"
