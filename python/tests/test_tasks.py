"""Spawning, output and exit order, requests, timeouts, many tasks: on real processes."""

from __future__ import annotations

import signal
import sys

import pidring
from conftest import check_order, collect, wait_output


def test_output_then_exited_then_done(tag):
    script = "printf 'one\\n'; printf 'err\\n' >&2; printf 'two\\n'; exit 3"
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", script], extra_env=tag.env)
        assert task.id > 0 and task.pid > 0
        events = collect(pool, [task])[task.id]
    check_order(events)
    out = b"".join(e.data for e in events if isinstance(e, pidring.Output) and e.stream == "stdout")
    err = b"".join(e.data for e in events if isinstance(e, pidring.Output) and e.stream == "stderr")
    assert (out, err) == (b"one\ntwo\n", b"err\n")
    exited, done = events[-2], events[-1]
    assert exited.status == 3 and exited.task == task.id
    outcome = done.outcome
    assert (outcome.reason, outcome.returncode, outcome.exit_code, outcome.signal) == ("exited", 3, 3, None)
    assert (outcome.stdout_bytes, outcome.stderr_bytes) == (8, 4)
    assert not outcome.ok and not outcome.tree_signalled and outcome.duration > 0


def test_output_written_just_before_exit_is_not_lost(tag):
    # 1 MiB, then exit at once: Exited waits for EOF, so every byte arrives before it.
    code = "import sys; sys.stdout.buffer.write(b'x' * (1 << 20))"
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn([sys.executable, "-c", code], extra_env=tag.env)
        events = collect(pool, [task])[task.id]
    check_order(events)
    assert sum(len(e.data) for e in events if isinstance(e, pidring.Output)) == 1 << 20
    assert events[-1].outcome.ok


def test_env_cwd_and_argv_types(tag, tmp_path):
    script = 'printf "%s|%s|%s" "$PWD" "$ONLY" "${HOME-unset}"; printf "|%s" "$@"'
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(
            [b"sh", "-c", script, "sh", tmp_path, "é"],
            env={"ONLY": "here", "PATH": "/usr/bin:/bin", **tag.env},
            cwd=tmp_path,
        )
        events = collect(pool, [task])[task.id]
    out = b"".join(e.data for e in events if isinstance(e, pidring.Output)).decode()
    assert out == f"{tmp_path}|here|unset|{tmp_path}|é"


def test_signal_reaches_the_main_process(tag):
    script = 'trap "echo got-usr1; exit 7" USR1; echo ready; while :; do sleep 0.05; done'
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", script], extra_env=tag.env)
        wait_output(pool, task, b"ready")
        task.signal(signal.SIGUSR1)
        events = collect(pool, [task])[task.id]
    assert b"got-usr1" in b"".join(e.data for e in events if isinstance(e, pidring.Output))
    assert events[-1].outcome.reason == "exited" and events[-1].outcome.exit_code == 7


def test_timeout_terminates_the_tree(tag):
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", "sleep 1000 & sleep 1000"], timeout=0.3, grace=5, extra_env=tag.env)
        events = collect(pool, [task])[task.id]
    check_order(events)
    outcome = events[-1].outcome
    assert outcome.reason == "timed_out" and outcome.tree_signalled
    assert outcome.returncode == -signal.SIGTERM


def test_timeout_escalates_to_sigkill_after_grace(tag):
    # The task ignores SIGTERM: the tree gets SIGKILL once the grace ran out.
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
                          timeout=0.3, grace=0.3, extra_env=tag.env)
        events = collect(pool, [task])[task.id]
    assert events[-1].outcome.reason == "timed_out"
    assert events[-1].outcome.returncode == -signal.SIGKILL


def test_drain_kills_what_outlives_the_main_process(tag):
    # The Airflow shape: the main process exits, a background child keeps stdout open.
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", "sleep 1000 & echo main-exits"], drain=0.3, extra_env=tag.env)
        events = collect(pool, [task])[task.id]
    check_order(events)
    outcome = events[-1].outcome
    assert outcome.reason == "drain_expired" and outcome.exit_code == 0 and outcome.tree_signalled


def test_many_tasks_from_python(tag):
    n = 1000
    with pidring.Pool() as pool:
        tasks = [pool.spawn(["echo", f"task-{i}"], extra_env=tag.env) for i in range(n)]
        assert len({t.id for t in tasks}) == n
        events = collect(pool, tasks)
    for i, task in enumerate(tasks):
        mine = events[task.id]
        check_order(mine)
        assert b"".join(e.data for e in mine if isinstance(e, pidring.Output)) == f"task-{i}\n".encode()
        assert mine[-1].outcome.ok


def test_requests_to_a_finished_task_are_ignored(tag):
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["true"], extra_env=tag.env)
        collect(pool, [task])
        task.terminate()
        task.kill()
        task.signal(signal.SIGTERM)
        assert list(pool.events(timeout=0.2)) == []


def test_stdio_null_and_inherit(tag, capfd):
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", "echo to-out; echo to-err >&2"], stdout="null", stderr="inherit",
                          extra_env=tag.env)
        events = collect(pool, [task])[task.id]
    assert not [e for e in events if isinstance(e, pidring.Output)]
    assert "to-err" in capfd.readouterr().err


def test_channel_output(tag):
    # spawn(raw_channels=1): a socketpair at fd 3 in the child, read like stdout.
    with pidring.Pool(workers=1) as pool:
        task = pool.spawn(["sh", "-c", "echo via-channel >&3; echo via-stdout"], raw_channels=1, extra_env=tag.env)
        events = collect(pool, [task])[task.id]
    check_order(events)
    by_stream = {}
    for e in events[:-2]:
        by_stream[e.stream] = by_stream.get(e.stream, b"") + e.data
    assert by_stream == {"channel0": b"via-channel\n", "stdout": b"via-stdout\n"}
