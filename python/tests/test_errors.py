"""Typed exceptions: each Rust error arrives as its own class, derived from the standard
exception that fits."""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

import pidring


@pytest.fixture(scope="module")
def pool():
    with pidring.Pool(workers=1) as p:
        yield p


def test_missing_program_is_a_file_not_found_error(pool):
    with pytest.raises(pidring.ProgramNotFoundError) as info:
        pool.spawn(["pidring-no-such-program"])
    e = info.value
    assert isinstance(e, FileNotFoundError) and isinstance(e, pidring.SpawnError)
    assert (e.errno, e.filename) == (errno.ENOENT, "pidring-no-such-program")
    with pytest.raises(FileNotFoundError):
        pool.spawn(["/nonexistent/dir/program"])


def test_unexecutable_file_is_a_permission_error(pool, tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(pidring.ProgramPermissionError) as info:
        pool.spawn([str(script)])
    assert isinstance(info.value, PermissionError) and info.value.errno == errno.EACCES
    with pytest.raises(PermissionError):
        pool.spawn([str(tmp_path)])  # a directory


def test_unknown_format_is_not_executable(pool, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF but not really")
    garbage.chmod(0o755)
    with pytest.raises(pidring.NotExecutableError) as info:
        pool.spawn([str(garbage)])
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOEXEC


def test_invalid_task_arguments(pool):
    with pytest.raises(pidring.InvalidSpecError) as info:
        pool.spawn(["true"], extra_env={"BAD=NAME": "x"})
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError):
        pool.spawn(["echo", "nul\0byte"])
    with pytest.raises(TypeError):
        pool.spawn("echo hello")  # a string, not a sequence
    with pytest.raises(ValueError):
        pool.spawn([])
    with pytest.raises(ValueError):
        pool.spawn(["true"], timeout=-1)
    with pytest.raises(ValueError):
        pool.spawn(["true"], grace=float("nan"))
    with pytest.raises(ValueError):
        pool.spawn(["true"], stdout="pipe")
    with pytest.raises(TypeError):
        pool.spawn(["true"], env=["A=B"])
    # Channel counts out of range name the argument and its range.
    for kwargs in [{"channels": -1}, {"channels": 201}, {"channels": 10**6}, {"raw_channels": 254}]:
        with pytest.raises(ValueError) as info:
            pool.spawn(["true"], **kwargs)
        (name,) = kwargs
        assert f"{name} must be from 0 to" in str(info.value), kwargs


def test_invalid_pool_options():
    with pytest.raises(pidring.InvalidOptionError) as info:
        pidring.Pool(workers=0)
    assert isinstance(info.value, ValueError) and isinstance(info.value, pidring.BuildError)
    with pytest.raises(pidring.InvalidOptionError):
        pidring.Pool(containment="docker")
    with pytest.raises(pidring.InvalidOptionError):
        pidring.Pool(backend="kqueue")
    with pytest.raises(pidring.InvalidOptionError) as info:
        pidring.Pool(max_tasks=0)
    assert "max_tasks" in str(info.value)


def test_epoll_backend_is_refused_or_runs():
    try:
        pool = pidring.Pool(workers=1, backend="epoll")
    except pidring.BackendUnavailableError as e:
        assert "epoll" in str(e)
    else:
        with pool:
            assert pool.backend == "epoll"


def test_invalid_signal(pool):
    task = pool.spawn(["true"])
    with pytest.raises(pidring.InvalidSignalError) as info:
        task.signal(0)
    assert isinstance(info.value, ValueError) and isinstance(info.value, pidring.ControlError)
    with pytest.raises(pidring.InvalidSignalError):
        task.signal(65)


def test_closed_pool(tag):
    pool = pidring.Pool(workers=1)
    task = pool.spawn(["sleep", "1000"], extra_env=tag.env)
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(pidring.PoolClosedError) as info:
        pool.spawn(["true"])
    assert isinstance(info.value, pidring.SpawnError)
    with pytest.raises(pidring.ControlError):
        task.terminate()
    with pytest.raises(pidring.PoolClosedError):
        pool.stats()


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # forking on purpose
def test_forked_child_cannot_use_the_parents_pool(tag):
    with pidring.Pool(workers=1) as pool:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its copy of the pool has no worker threads
            try:
                pool.spawn(["true"])
                verdict = b"spawned"
            except pidring.PoolClosedError:
                verdict = b"refused"
            except BaseException:
                verdict = b"other"
            os.write(write_end, verdict)
            pool.close()  # must not wait for the parent's workers
            os._exit(0)
        os.close(write_end)
        pidfd = os.pidfd_open(pid)
        with os.fdopen(read_end, "rb") as r:
            verdict = r.read()
        deadline = time.monotonic() + 30
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung closing its copy of the pool")
            time.sleep(0.01)
        os.close(pidfd)
        assert verdict == b"refused"
        # The parent's pool is unaffected.
        task = pool.spawn(["true"], extra_env=tag.env)
        assert task.pid > 0
    assert pool.closed


def test_exception_hierarchy():
    assert issubclass(pidring.PoolClosedError, pidring.SpawnError)
    assert issubclass(pidring.PoolClosedError, pidring.ControlError)
    assert issubclass(pidring.PoolContainmentError, pidring.ContainmentError)
    assert issubclass(pidring.TaskContainmentError, pidring.SpawnError)
    assert issubclass(pidring.PoolClosedError, pidring.WriteError)
    assert issubclass(pidring.TaskBrokenPipeError, pidring.StreamClosedError)
    assert issubclass(pidring.StreamClosedError, BrokenPipeError)
    for cls in (pidring.StdinNotCapturedError, pidring.NoSuchChannelError, pidring.FrameTooLargeError):
        assert issubclass(cls, ValueError) and issubclass(cls, pidring.WriteError)
    assert issubclass(pidring.WriteOSError, OSError)
    for cls in pidring.errors.__all__:
        assert issubclass(getattr(pidring, cls), pidring.PidringError)
